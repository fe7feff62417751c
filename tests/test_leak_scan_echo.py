"""The leak scan against a server whose error pages echo the request: exception texts, the Test message, the
refusal file, the process's logs and stdout, and the output of ``airflow dags test`` (where no task-log
masker stands between a message and the terminal) hold no credential: not the secret, not its Basic value,
not a token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from deyel_provider.compat import AIRFLOW_VERSION
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.redact import basic_value
from tests.support.helpers import CLIENT_ID, CLIENT_SECRET
from tests.support.leaks import LeakScanner, all_issued

BASIC = basic_value(CLIENT_ID, CLIENT_SECRET)
SECRETS = [CLIENT_SECRET, BASIC, quote_plus(CLIENT_SECRET)]
#: Another credential (the same one would be served from the cache without any request to echo).
ECHOED_SECRET = "echoed+Secret/42!"
ECHOED = [ECHOED_SECRET, basic_value(CLIENT_ID, ECHOED_SECRET), quote_plus(ECHOED_SECRET)]


def test_echoed_requests_leak_nothing_in_errors_logs_test_message_or_refusal_file(
    emulator, deyel_conn, caplog, capsys
):
    scan = LeakScanner(caplog, capsys)
    hook = DeyelHook()
    hook.get_token()
    for shape in (None, "json"):
        emulator.set_faults([{"route": "data", "action": "echo", "status": 500, "body": shape}])
        scan.failing(lambda: hook.request("GET", "/forms/CRM_ACCOUNT/instances", params={"search": "x=eq:1"}))
        emulator.set_faults([{"route": "data", "action": "echo", "status": 400, "body": shape}])
        scan.failing(lambda: hook.request("POST", "/forms/CRM_ACCOUNT/instances", json={"dsCompany": "x"}))
    emulator.set_faults([{"route": "token", "action": "echo", "status": 401}])
    deyel_conn("deyel_echo", password=ECHOED_SECRET)
    for _ in range(2):  # refused, then refused again from the remembered refusal file
        scan.failing(lambda: DeyelHook("deyel_echo").get_token())
    scan.keep(DeyelHook("deyel_echo").test_connection())
    refusals = [p.read_text() for p in Path(os.environ["DEYEL_PROVIDER_STATE_DIR"]).rglob("*") if p.is_file()]
    assert refusals, "the refusal file was written"
    scan.keep(*refusals)
    haystack = scan.assert_no_leak([*SECRETS, *ECHOED, *all_issued(emulator)])
    assert haystack.count("***") >= 6  # the echoes were there, redacted


@pytest.mark.dag
def test_airflow_dags_test_output_leaks_nothing_from_an_echoing_server(emulator, deyel_conn, airflow_db):
    # The token POST is echoed: its Basic value was never registered with Airflow's masker before.
    emulator.set_faults([{"route": "token", "action": "echo", "status": 500, "count": 6}])
    run = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "deyel_api_call", "2026-01-02"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    # Airflow 3.0's `dags test` prints, at debug level, every value a task sends to the masker: its own
    # connection's password first (docs/security.md). Those lines are Airflow's; all the others are checked.
    from_airflow_30 = AIRFLOW_VERSION < (3, 1)
    lines = (run.stdout + run.stderr).splitlines()
    output = "\n".join(line for line in lines if not (from_airflow_30 and "msg=MaskSecret(" in line))
    leaked = [n for n, secret in enumerate(SECRETS) if secret in output]
    assert leaked == []
    assert "server error" in output and "***" in output  # the echo reached the output, redacted
