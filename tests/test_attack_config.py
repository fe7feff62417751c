"""Hostile or careless connection values: no secret echoed in a config error, no silent TLS downgrade."""

from __future__ import annotations

import json
import math

import pytest
from airflow.sdk import Connection
from hypothesis import given, settings
from hypothesis import strategies as st

from deyel_provider.connection.fields import DEFAULTS, EXTRA_FIELDS
from deyel_provider.connection.settings import DEADLINE_PER_TIMEOUT, DeyelConfig
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.branches import Branches


def test_a_numeric_password_extra_is_not_printed_in_the_error(deyel_conn):
    deyel_conn(extra={"grant_type": "password", "username": "JPerez", "password": 31415926})
    with pytest.raises(DeyelConfigError, match="'password' must be a string") as caught:
        DeyelHook().config  # noqa: B018
    assert "31415926" not in str(caught.value)


def test_verify_false_with_a_ca_bundle_is_a_config_error(deyel_conn, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    deyel_conn(extra={"verify": False, "ca_bundle": str(bundle)})
    with pytest.raises(DeyelConfigError, match="'verify' is false but 'ca_bundle' is set"):
        DeyelHook().config  # noqa: B018


# -- numbers: every bad value is a typed error naming field, type and fix; a good one is kept exactly ------

#: Extras whose empty value takes a default computed from another's.
DERIVED_DEFAULTS = {"request_deadline": DEADLINE_PER_TIMEOUT * DEFAULTS["timeout"]}
NUMERIC = [spec for spec in EXTRA_FIELDS if spec.type in ("integer", "number")]


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("timeout", 0, "int"),
        ("timeout", "0", "str"),
        ("timeout", "nan", "str"),
        ("timeout", float("nan"), "float"),
        ("timeout", "inf", "str"),
        ("timeout", -1, "int"),
        ("timeout", True, "bool"),
        ("retry_attempts", 2.7, "float"),
        ("retry_attempts", "2.7", "str"),
        ("retry_attempts", 0, "int"),
        ("retry_attempts", 10**400, "int"),
        ("page_size", 0, "int"),
        ("max_response_bytes", "1e400", "str"),
        ("cache_lock_lease", 0, "int"),
        ("retry_backoff", [1], "list"),
        ("timeout", 1e11, "float"),  # accepted, it overflowed the socket's timeout at the first request
        ("retry_attempts", 10**9, "int"),  # accepted, its renewal budget took minutes to compute
        ("cache_lock_lease", "1e12", "str"),
    ],
)
def test_a_bad_number_is_a_config_error_naming_field_type_and_fix(deyel_conn, name, value, kind):
    deyel_conn(extra={name: value})
    with pytest.raises(DeyelConfigError) as caught:
        DeyelHook().config  # noqa: B018
    message = str(caught.value)
    assert f"extra field {name!r} must be a" in message
    assert f"({kind})" in message
    assert "remove it to use the default" in message


ANY_VALUE = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=8),
    st.floats(allow_nan=True).map(str),
    st.integers().map(str),
)


def values_for(spec) -> st.SearchStrategy:
    """Half in the field's range (as a number or its text), half anything: both branches run often."""
    low = spec.minimum
    if spec.type == "integer":
        valid = st.integers(int(low) + 1 if spec.above else int(low), int(spec.maximum))
    else:
        valid = st.floats(low, spec.maximum, exclude_min=spec.above, allow_nan=False)
    return st.one_of(valid, valid.map(str), ANY_VALUE)


def test_a_number_extra_is_kept_exactly_or_refused_with_a_typed_error():
    """No input turns into a raw ValueError later, and nothing is rounded or cut silently."""
    branches = Branches()

    @settings(max_examples=150, deadline=None)
    @given(case=st.sampled_from(NUMERIC).flatmap(lambda spec: st.tuples(st.just(spec), values_for(spec))))
    def example(case):
        spec, value = case
        connection = Connection(
            conn_id="deyel_default",
            conn_type="deyel",
            host="http://127.0.0.1:8080",
            login="client",
            password="secret",
            extra=json.dumps({spec.name: value}),
        )
        try:
            got = getattr(DeyelConfig.from_connection(connection), spec.name)
        except DeyelConfigError as exc:
            assert f"extra field {spec.name!r} must be a" in str(exc)
            branches.took("refused")
            return
        if isinstance(value, str):
            text = value.strip()
            default = DERIVED_DEFAULTS.get(spec.name, spec.default)
            value = default if not text else int(text) if text.lstrip("+-").isdigit() else float(text)
        assert not isinstance(value, bool)
        assert math.isfinite(got) and got == value and got <= spec.maximum
        assert got > spec.minimum if spec.above else got >= spec.minimum
        if spec.type == "integer":
            assert isinstance(got, int)
        branches.took("kept")

    example()
    branches.assert_share("kept", at_least=0.3)


def test_the_form_states_every_bound_and_clamps_none():
    """Airflow's number input clamps a value outside the schema's minimum/maximum when it loses focus (a 0
    typed into Page size was saved as 1): the form declares no bound it would clamp to, its description
    states them, and the parser refuses what is out of bounds, naming the field."""
    for spec in NUMERIC:
        field = spec.conn_field()
        assert not {"minimum", "maximum", "exclusiveMinimum"} & set(field["schema"]), spec.name
        assert f"at most {spec.maximum:,.0f}." in field["description"], spec.name
