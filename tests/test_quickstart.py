"""docs/quickstart.md, run as a newcomer would: every command of its bash blocks in order, in a fresh
virtualenv made by the page's own commands from the wheel ``make dist`` builds, and its DAG saved where the
page says. Each command must exit 0, and the extracted file must hold every record the emulator serves.

The page's first block sets the three variables that differ between machines (``export NAME=value``); the
test gives them its own values (a temporary folder, a free port, its wheel folder) and runs the rest as
written. Each command runs in its own ``bash -e -o pipefail``, fed the variables and folder the previous
ones left, in a process group of its own, so the emulator the page starts in the background is stopped
even when a command fails. About a minute: uv installs Airflow from its cache, then a migration and one run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.wheel import ROOT

pytestmark = pytest.mark.packaging

PAGE = ROOT / "docs" / "quickstart.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
EXPORT = re.compile(r"^export (\w+)=(\S+)")
#: What the page lets a reader change, and so what the test sets.
PLACEHOLDERS = {"QUICKSTART", "DEYEL_PORT", "DEYEL_DIST"}
RECORDS = re.compile(r"--records (\d+)")


def steps(page: str) -> list[tuple[str, str]]:
    """("bash", command) for each command (comment lines and blank lines dropped, continuations joined),
    ("python", source) for each DAG file, in the page's order."""
    found: list[tuple[str, str]] = []
    for kind, body in BLOCK.findall(page):
        if kind == "python":
            found.append(("python", body.rstrip("\n")))
            continue
        command = ""
        for line in body.splitlines():
            if not command and (not line.strip() or line.lstrip().startswith("#")):
                continue
            command += line
            if command.endswith("\\"):
                command = command[:-1] + "\n"
                continue
            found.append(("bash", command))
            command = ""
    return found


def test_steps_split_commands_and_keep_the_dag():
    page = (
        "x\n```bash\n# a comment\nexport A=1  # why\n\nls \\\n  -l\n```\n\n"
        "```python\n# f.py\nimport os\n```\n"
    )
    assert steps(page) == [
        ("bash", "export A=1  # why"),
        ("bash", "ls \n  -l"),
        ("python", "# f.py\nimport os"),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def uv_only_path(tmp_path: Path) -> str:
    """The caller's PATH with uv added but without the test's own virtualenv: a command the page's install
    did not provide (airflow, deyel-probe) must fail, not come from the editable install running this."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "uv").symlink_to(Path(sys.executable).parent / "uv")
    own = str(Path(sys.executable).parent)
    kept = [entry for entry in os.environ["PATH"].split(os.pathsep) if entry and entry != own]
    return os.pathsep.join([str(tools), *kept])


def test_the_quickstart_runs_command_by_command_in_a_fresh_virtualenv(wheel_dist, venv_place, tmp_path):
    page = PAGE.read_text(encoding="utf-8")
    plan = steps(page)
    home = tmp_path / "home"
    home.mkdir()
    # Emptied: the page makes everything there. Where test_packaging made its virtualenv, so that Python
    # finds the bytecode of the same files there (tests/support/wheel.py, VenvPlace).
    quickstart = venv_place.fresh()
    values = {"QUICKSTART": str(quickstart), "DEYEL_PORT": str(free_port()), "DEYEL_DIST": str(wheel_dist)}
    first = [command for kind, command in plan[:3] if kind == "bash"]
    assert {EXPORT.match(c).group(1) for c in first if EXPORT.match(c)} == PLACEHOLDERS, first
    plan = plan[3:]

    env = {"PATH": uv_only_path(tmp_path), "HOME": str(home), "LANG": "C.UTF-8", **values}
    # uv's cache (Airflow's wheels: the install takes seconds) and how this machine reaches the package index
    # (its certificates, proxies, index settings), as a reader's shell would have them.
    cache = subprocess.run(
        [sys.executable, "-m", "uv", "cache", "dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env["UV_CACHE_DIR"] = cache
    env.update(venv_place.env)  # where Python keeps bytecode: outside the virtualenv, nothing else
    network = ("UV_", "PIP_", "SSL_CERT_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    proxies = {"http_proxy", "https_proxy", "no_proxy", "all_proxy"}
    env.update({k: v for k, v in os.environ.items() if k.startswith(network) or k.lower() in proxies})
    state, cwd = tmp_path / "state.sh", ROOT
    state.write_text("")
    groups: list[int] = []
    log = tmp_path / "log"
    try:
        for number, (kind, command) in enumerate(plan, start=4):
            if kind == "python":
                target, _, _ = command.partition("\n")
                assert target.startswith("# $AIRFLOW_HOME/dags/"), "the DAG names its file first"
                folder = subprocess.run(
                    ["bash", "-c", f'source {state}; echo "$AIRFLOW_HOME"'], capture_output=True, text=True
                ).stdout.strip()
                Path(folder, "dags", Path(target).name).write_text(command + "\n", encoding="utf-8")
                continue
            script = (
                f"source {state}\ncd {cwd}\n"
                f"trap 'export -p > {state}.new; pwd > {state}.cwd' EXIT\n"
                f"set -e -o pipefail\n{command}\n"
            )
            with log.open("w") as out:
                process = subprocess.Popen(
                    ["bash", "-c", script],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
                groups.append(process.pid)
                code = process.wait(timeout=300)
            output = log.read_text(errors="replace")
            assert code == 0, f"step {number}: {command!r} exited {code}:\n{output[-4000:]}"
            os.replace(f"{state}.new", state)
            cwd = Path(Path(f"{state}.cwd").read_text().strip())
    finally:
        for group in groups:
            try:
                os.killpg(group, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # Every airflow command used the page's Airflow home: none made one in the reader's home folder.
    assert not (home / "airflow").exists(), "an airflow command ran before AIRFLOW_HOME was set"
    # The install came from the wheel into the page's virtualenv, not from anything of the test's.
    site = list((quickstart / "venv").glob("lib/python*/site-packages/deyel_provider"))
    assert site, "the provider is not in the quickstart's virtualenv"
    (extract,) = (quickstart / "airflow" / "extracts" / "CRM_ACCOUNT").glob("*.jsonl")
    records = [json.loads(line) for line in extract.read_text(encoding="utf-8").splitlines()]
    (served,) = {int(n) for n in RECORDS.findall(page)}
    assert len(records) == served
    assert len({r["idObjectValue"] for r in records}) == served
