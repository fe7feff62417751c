"""Packaging and the connection type: provider info, form fields, the three ways to define a connection."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deyel_provider import get_provider_info
from deyel_provider.connection.fields import EXTRA_FIELDS
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.airflow_cli import run_airflow
from tests.support.airflow_db import copy_migrated_db
from tests.support.helpers import airflow_secrets_masker

ROOT = Path(__file__).resolve().parent.parent


def test_provider_info_matches_airflows_schema():
    import jsonschema
    from airflow import settings  # noqa: F401  (the package must be importable first)

    schema_path = Path(sys.modules["airflow"].__file__).parent / "provider_info.schema.json"
    info = get_provider_info()
    jsonschema.validate(info, json.loads(schema_path.read_text()))
    assert info["package-name"] == "airflow-provider-deyel"


def test_connection_form_declares_every_option():
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == "deyel"
    assert conn_type["hook-class-name"] == f"{DeyelHook.__module__}.{DeyelHook.__name__}"
    behaviour = conn_type["ui-field-behaviour"]
    assert behaviour["relabeling"] == {"host": "Base URL", "login": "Client ID", "password": "Client Secret"}
    fields = conn_type["conn-fields"]
    assert set(fields) == {spec.name for spec in EXTRA_FIELDS}
    for name, field in fields.items():
        assert field["label"] and field["description"], name
    # The form saves every field's value: a default in it would be written into every connection. An empty
    # field means the default, which the description names; check boxes keep theirs (unticked reads false).
    assert "default" not in fields["oauth_path"]["schema"]
    assert fields["oauth_path"]["description"].endswith("Empty: /oauth/token.")
    assert fields["verify"]["schema"]["default"] is True


def test_no_plain_option_has_a_name_airflow_hides():
    """Airflow shows and saves "***" for any extra whose name holds a sensitive word ("token", "secret"...).

    The connection form would then store "***" as the option's value: `token_path` did, until the browser
    test of the real UI caught it. Only a secret option may carry such a name.
    """
    redact = airflow_secrets_masker().redact
    for spec in EXTRA_FIELDS:
        hidden = redact("value", name=spec.name) == "***"
        assert hidden == spec.secret, f"extra {spec.name!r}: Airflow would hide its value in the UI"


def test_the_connection_reference_documents_every_option():
    reference = (ROOT / "docs" / "connection.md").read_text()
    for spec in EXTRA_FIELDS:
        assert f"| `{spec.name}` | {spec.label} |" in reference, spec.name


def test_airflow_lists_the_provider_and_its_connection_type():
    providers, hooks = run_airflow(
        ["providers", "list", "--output", "json"], ["providers", "hooks", "--output", "json"]
    )
    assert "airflow-provider-deyel" in {p["package_name"] for p in json.loads(providers)}
    assert "deyel" in {h["connection_type"] for h in json.loads(hooks)}


def test_wheel_builds_with_the_package_and_entry_points(tmp_path):
    subprocess.run(
        # pypa/build, as `make dist` builds (the project's virtualenv has no pip of its own: Makefile).
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("airflow_provider_deyel-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "deyel_provider/hooks/deyel.py" in names
    assert "deyel_provider/py.typed" in names
    assert any(n.startswith("deyel_provider/emulator/") for n in names)
    entry_points = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    )
    assert "provider_info = deyel_provider:get_provider_info" in entry_points
    assert "deyel-emulator = deyel_provider.emulator.__main__:main" in entry_points


@pytest.mark.parametrize("form", ["json", "uri"])
def test_connection_from_env_json_or_uri(emulator, monkeypatch, form):
    host = emulator.url.removeprefix("http://")
    value = (
        json.dumps(
            {
                "conn_type": "deyel",
                "host": emulator.url,
                "login": "DEYELBOT",
                "password": "BOTDEYEL312!",
                "extra": {"timeout": "12.5"},
            }
        )
        if form == "json"
        else f"deyel://http://DEYELBOT:BOTDEYEL312%21@{host}/?timeout=12.5"
    )
    monkeypatch.setenv("AIRFLOW_CONN_DEYEL_ENV", value)
    hook = DeyelHook(deyel_conn_id="deyel_env")
    assert hook.config.base_url == emulator.url
    assert hook.config.timeout == 12.5
    assert hook.test_connection()[0]


def test_connection_added_and_tested_with_the_cli(emulator, monkeypatch, tmp_path, tmp_path_factory):
    """`airflow connections add` stores it in the metadata database; `airflow connections test` uses it."""
    database = copy_migrated_db(tmp_path_factory, tmp_path / "airflow.db")  # as `db migrate` leaves it
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{database}")
    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    _, tested = run_airflow(
        [
            "connections",
            "add",
            "deyel_cli",
            "--conn-type",
            "deyel",
            "--conn-host",
            emulator.url,
            "--conn-login",
            "DEYELBOT",
            "--conn-password",
            "BOTDEYEL312!",
            "--conn-extra",
            '{"timeout": 7}',
        ],
        ["connections", "test", "deyel_cli"],
    )
    assert "Connection success!" in tested, tested
    assert emulator.stats()["token_requests"] == 1


def test_older_extra_names_are_read_with_a_warning(emulator, deyel_conn):
    deyel_conn(extra={"token_cache": "memory", "token_cache_lock_lease": 7, "token_path": "/oauth/token/"})
    with pytest.warns(UserWarning, match=r"read as \['cache', 'cache_lock_lease', 'oauth_path'\]"):
        config = DeyelHook().config
    assert (config.cache, config.cache_lock_lease, config.token_path) == ("memory", 7, "/oauth/token/")


@pytest.mark.parametrize("name", ["cache_lock_wait", "token_cache_lock_wait"])
def test_the_retired_lock_wait_is_ignored_with_a_warning(emulator, deyel_conn, name):
    """Waiting for a live renewal is bounded by the renewal budget now: a lock wait shorter than the
    renewal would bring back the extra token POSTs of a slow token endpoint."""
    deyel_conn(extra={"cache": "memory", name: 1})
    with pytest.warns(
        UserWarning, match=rf"\['{name}'\] are no longer used and are ignored: a process now waits"
    ):
        config = DeyelHook().config
    assert not hasattr(config, "cache_lock_wait")


def test_a_redis_lock_lease_under_one_second_is_refused(emulator, deyel_conn):
    deyel_conn(extra={"cache": "redis", "cache_url": "redis://127.0.0.1:1/0", "cache_lock_lease": 0.5})
    with pytest.raises(DeyelConfigError, match="'cache_lock_lease' must be at least 1 s"):
        DeyelHook().get_token()


def test_provider_info_lists_every_hook_operator_sensor_and_trigger_module():
    """Airflow's providers page and `airflow providers` read these lists: a module left out is invisible."""
    import pkgutil

    import deyel_provider

    info = get_provider_info()
    integrations = {i["integration-name"] for i in info["integrations"]}
    for kind in ("hooks", "operators", "sensors", "triggers"):
        folder = Path(deyel_provider.__file__).parent / kind
        on_disk = {f"deyel_provider.{kind}.{m.name}" for m in pkgutil.iter_modules([str(folder)])}
        listed = {module for entry in info.get(kind, []) for module in entry["python-modules"]}
        assert listed == on_disk, kind
        assert {entry["integration-name"] for entry in info.get(kind, [])} <= integrations
    assert info["versions"] == [deyel_provider.__version__]


def test_the_connection_form_this_airflow_renders():
    """3.2+ renders the declared form (extras as fields); 3.0/3.1 take the hook's form, with the Extra box
    left visible and a JSON example of the options, and only when wtforms is installed (FAB provider)."""
    import importlib.util

    from airflow.providers_manager import ProvidersManager

    from deyel_provider.compat import HAS_CONN_FIELDS

    behaviour = ProvidersManager().field_behaviours.get("deyel")
    relabeling = {"host": "Base URL", "login": "Client ID", "password": "Client Secret"}
    if HAS_CONN_FIELDS:
        assert behaviour["hidden_fields"] == ["schema", "extra"]
        assert "extra__deyel__api_prefix" in ProvidersManager().connection_form_widgets
    elif importlib.util.find_spec("wtforms"):
        assert behaviour["hidden_fields"] == ["schema"]
        hint = json.loads(behaviour["placeholders"]["extra"])
        assert set(hint) <= {spec.name for spec in EXTRA_FIELDS}
    else:
        assert behaviour is None
        return
    assert behaviour["relabeling"] == relabeling


def test_the_older_form_hints_every_option_it_shows():
    behaviour = DeyelHook.get_ui_field_behaviour()
    hint = json.loads(behaviour["placeholders"]["extra"])
    assert "extra" not in behaviour["hidden_fields"]
    assert set(hint) <= {spec.name for spec in EXTRA_FIELDS} and "api_prefix" in hint
