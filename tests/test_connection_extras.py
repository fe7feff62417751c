"""The connection's extras as users write them (issue 27): typos named, 0 kept or refused, never changed,
defaults not written by the form, rare options under "Advanced"."""

from __future__ import annotations

import pytest

from deyel_provider import get_provider_info
from deyel_provider.connection.fields import ADVANCED_SECTION, EXTRA_FIELDS
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.hooks.deyel import DeyelHook

FIELDS = {spec.name: spec for spec in EXTRA_FIELDS}


def conn_fields() -> dict:
    (conn_type,) = get_provider_info()["connection-types"]
    return conn_type["conn-fields"]


def test_a_typo_warns_with_the_closest_known_key(emulator, deyel_conn):
    deyel_conn(extra={"page_sise": 50, "Timeout": 10, "zzz": 1})
    with pytest.warns(UserWarning) as caught:
        config = DeyelHook().config
    (message,) = [str(w.message) for w in caught if "unknown extra" in str(w.message)]
    assert "'page_sise' (did you mean 'page_size'?)" in message
    assert "'Timeout' (did you mean 'timeout'?)" in message
    assert "'zzz' (no known field is close)" in message
    assert "set strict_extras to true" in message
    assert config.page_size == 100  # ignored, as before: only a warning


def test_the_test_button_shows_the_typo_warning(emulator, deyel_conn):
    deyel_conn(extra={"page_sise": 50})
    ok, message = DeyelHook().test_connection()
    assert ok, message
    assert "(warning: connection 'deyel_default': unknown extra field(s) 'page_sise' (did you mean" in message


def test_a_typo_fails_under_strict_extras(emulator, deyel_conn):
    deyel_conn(extra={"page_sise": 50, "strict_extras": True})
    with pytest.raises(DeyelConfigError, match=r"'page_sise' \(did you mean 'page_size'\?\).*strict_extras"):
        _ = DeyelHook().config
    ok, message = DeyelHook().test_connection()
    assert not ok and "did you mean 'page_size'?" in message
    assert emulator.stats()["token_requests"] == 0


def test_strict_extras_passes_a_clean_connection(emulator, deyel_conn):
    deyel_conn(extra={"page_size": 50, "strict_extras": "true"})
    assert DeyelHook().config.page_size == 50


@pytest.mark.parametrize("value", [0, "0"])
def test_a_zero_page_size_is_refused_saying_why(emulator, deyel_conn, value):
    deyel_conn(extra={"page_size": value})
    with pytest.raises(DeyelConfigError) as raised:
        _ = DeyelHook().config
    message = str(raised.value)
    assert "'page_size' must be a whole number at least 1 (a page of 0 instances reads nothing)" in message
    assert "remove it to use the default, 100" in message
    ok, shown = DeyelHook().test_connection()
    assert not ok and "a page of 0 instances reads nothing" in shown


def test_a_meaningful_zero_is_kept(emulator, deyel_conn):
    deyel_conn(extra={"auth_failure_ttl": 0, "settle_seconds": "0", "retry_backoff": 0})
    config = DeyelHook().config
    assert (config.auth_failure_ttl, config.settle_seconds, config.retry_backoff) == (0, 0, 0)


def test_the_form_cannot_turn_zero_into_one():
    """Airflow's number input clamps to the schema's minimum on blur (0 was saved as 1): no bound declared."""
    schema = conn_fields()["page_size"]["schema"]
    assert "minimum" not in schema and "maximum" not in schema
    assert "Allowed: at least 1, at most 1,000,000." in conn_fields()["page_size"]["description"]


def test_the_form_writes_no_default_but_names_it():
    for name, field in conn_fields().items():
        spec = FIELDS[name]
        if spec.type == "boolean":
            assert field["schema"]["default"] is spec.default, name
            continue
        assert "default" not in field["schema"], name
        if spec.default not in (None, ""):
            assert f"Empty: {spec.default}." in field["description"], name


def test_rare_options_sit_under_advanced():
    sections = {name: field["schema"].get("section") for name, field in conn_fields().items()}
    common = {"oauth_path", "api_prefix", "timeout", "verify", "ca_bundle", "cache", "grant_type"}
    common |= {"username", "password", "paging", "page_size", "id_field", "test_form"}
    assert all(sections[name] is None for name in common)
    advanced = {name for name, section in sections.items() if section == ADVANCED_SECTION}
    assert {"retry_attempts", "request_deadline", "page_size_param", "strict_extras"} <= advanced
    assert set(sections.values()) == {None, ADVANCED_SECTION}
    assert len(advanced) > len(sections) // 2  # the flat list of 28 is now a short one and a folded one


def test_test_form_and_strict_extras_are_declared():
    assert FIELDS["test_form"].type == "string" and FIELDS["test_form"].default is None
    assert FIELDS["strict_extras"].type == "boolean" and FIELDS["strict_extras"].default is False
