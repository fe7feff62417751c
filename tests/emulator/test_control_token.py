"""Finding 8(d) of issue 22: the emulator's control routes (``/_emulator/settings`` hands out the client
secret, ``/_emulator/faults`` changes what the server does) are reachable from other machines only when asked
for (``--allow-remote``, loudly), and then only with the control token."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from deyel_provider.emulator import EmulatorSettings, RunningEmulator

EVERYWHERE = "0.0.0.0"  # noqa: S104 (what the tests check is refused, or guarded)
SECRET = "S3cret-of-the-emulator!"
SETTINGS = EmulatorSettings(records=5, client_secret=SECRET)


def local(url: str) -> str:
    """The URL of an emulator listening on every interface, as reached from this machine."""
    return re.sub(r"://[^/]+:(\d+)", r"://127.0.0.1:\1", url)


def test_an_emulator_reachable_from_elsewhere_answers_control_requests_with_its_token_alone():
    with RunningEmulator(SETTINGS, host=EVERYWHERE, allow_remote=True) as emulator:
        url = local(emulator.url)
        token = emulator.control_token
        assert token and len(token) >= 32
        refused = [
            requests.get(url + "/_emulator/settings", timeout=10),
            requests.get(url + "/_emulator/settings", headers={"X-Emulator-Token": "guess"}, timeout=10),
            requests.get(url + "/_emulator/settings", headers={"X-Emulator-Token": ""}, timeout=10),
            requests.post(url + "/_emulator/faults", json={"rules": [{"action": "drop"}]}, timeout=10),
        ]
        assert [r.status_code for r in refused] == [401, 401, 401, 401]
        for response in refused:
            assert SECRET not in response.text and "client_secret" not in response.text
            assert "X-Emulator-Token" in response.json()["errors"][0]["message"]
        assert emulator.state.faults.rules() == []  # the refused POST changed nothing

        granted = requests.get(url + "/_emulator/settings", headers={"X-Emulator-Token": token}, timeout=10)
        assert granted.status_code == 200 and granted.json()["client_secret"] == SECRET
        # The API itself is not behind the control token.
        grant = {"grant_type": "client_credentials"}
        assert requests.post(url + "/oauth/token", data=grant, auth=("DEYELBOT", SECRET), timeout=10).ok


def test_a_host_other_machines_reach_needs_allow_remote():
    with pytest.raises(ValueError, match="allow_remote"):
        RunningEmulator(SETTINGS, host=EVERYWHERE)
    # Loopback, as every fixture, the demo and the benchmarks start it: control routes answer as before.
    with RunningEmulator(SETTINGS, host="localhost") as emulator:
        assert emulator.control_token is None
        assert requests.get(emulator.url + "/_emulator/stats", timeout=10).status_code == 200


def emulator_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "deyel_provider.emulator", "--records", "5", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("host", [EVERYWHERE, "::", "deyel.example"])
def test_the_cli_refuses_a_host_other_machines_reach_without_allow_remote(host):
    with emulator_cli("--host", host) as process:
        try:
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 2 and stdout == ""
    assert f"refusing to listen on {host}" in stderr and "--allow-remote" in stderr


def started(process: subprocess.Popen[str]) -> tuple[str, str]:
    """The warning line on stderr, then the URL on stdout."""
    assert process.stderr is not None and process.stdout is not None
    warning = next(line for line in process.stderr if "WARNING" in line)
    return warning, process.stdout.readline().strip()


def test_the_cli_with_allow_remote_warns_and_writes_its_token_where_the_user_alone_reads_it():
    env = {k: v for k, v in os.environ.items() if k != "DEYEL_EMULATOR_CONTROL_TOKEN"}
    with emulator_cli("--host", EVERYWHERE, "--allow-remote", "--client-secret", SECRET, env=env) as process:
        try:
            warning, url = started(process)
            found = re.search(r"the token is in (\S+) \(readable by you alone\)", warning)
            assert found, warning
            path = Path(found.group(1))
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            token = path.read_text()
            assert token and token not in warning
            assert "reachable from other machines" in warning and "X-Emulator-Token" in warning
            settings = local(url) + "/_emulator/settings"
            assert requests.get(settings, timeout=10).status_code == 401
            answer = requests.get(settings, headers={"X-Emulator-Token": token}, timeout=10)
            assert answer.json()["client_secret"] == SECRET
        finally:
            process.terminate()
            process.communicate(timeout=15)
    assert process.returncode == 0


def test_the_cli_with_allow_remote_takes_the_token_from_the_environment():
    token = "a-token-the-user-chose-0123456789"
    env = {**os.environ, "DEYEL_EMULATOR_CONTROL_TOKEN": token}
    with emulator_cli("--host", EVERYWHERE, "--allow-remote", env=env) as process:
        try:
            warning, url = started(process)
            assert "$DEYEL_EMULATOR_CONTROL_TOKEN" in warning and token not in warning
            stats = local(url) + "/_emulator/stats"
            assert requests.get(stats, timeout=10).status_code == 401
            assert requests.get(stats, headers={"X-Emulator-Token": token}, timeout=10).status_code == 200
        finally:
            process.terminate()
            process.communicate(timeout=15)
    assert process.returncode == 0
