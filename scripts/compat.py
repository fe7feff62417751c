"""make compat: the unit suite and every example DAG on the latest patch of each supported Airflow minor.

For each minor, a virtualenv (uv) in .compat/ gets the wheel built from this tree, ``apache-airflow==3.N.x``
(the latest 3.N patch, see LATEST) and the ``test`` dependency group, resolved as of that Airflow's release
(constraints.txt pins the newest Airflow's versions only). The suite runs against the installed wheel, not
the source tree; every example DAG runs with ``airflow dags test`` against the emulator installed from the
wheel. Prints a table.

    python scripts/compat.py [--minors 3.0,3.3] [--pytest-args "-x -k token"]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".compat"
MINORS = ("3.0", "3.1", "3.2", "3.3")
#: The latest patch of each minor and the day after its upload to PyPI. Airflow publishes its tested
#: constraints on GitHub only (not reachable here), so each older minor is resolved as of its own release
#: (uv --exclude-newer): today's FastAPI and pydantic break 3.0's execution API. The newest minor uses
#: constraints.txt, the project's pins. Update this table when a patch is released.
LATEST: dict[str, tuple[str, str | None]] = {
    "3.0": ("3.0.6", "2025-08-30"),
    "3.1": ("3.1.8", "2026-03-12"),
    "3.2": ("3.2.2", "2026-05-30"),
    "3.3": ("3.3.2", None),
}
#: Taken as of today whatever the minor: dependencies whose floors (security fixes) are newer than an older
#: minor's release, and pandas, a reader the tests check our CSV with (2.3, of Airflow 3.0's era, reads a
#: column named by a NUL alone as unnamed: its own limit, not the file's).
NEWER_FLOORS = ("urllib3", "filelock", "backports-zstd", "pandas")
UV = [sys.executable, "-m", "uv"]
#: Seconds one example DAG may take under ``airflow dags test`` (a wait that never ends fails the row).
DAG_TIMEOUT = 600
#: Seconds the unit suite may take on one minor (about 8 minutes on a 2-core machine in one process).
SUITE_TIMEOUT = 3600
#: pytest-xdist workers for the unit suite (make test's PYTEST_WORKERS).
SUITE_WORKERS = 4
#: Every example DAG, in an order where a consumer follows its producer; a logical date where a DAG reads
#: its data interval (the run at 2026-01-02 covers 2026-01-01).
DAG_RUNS: tuple[tuple[str, str | None], ...] = (
    ("deyel_api_call", None),
    ("deyel_shared_token", None),
    ("deyel_extract_fan_out", None),
    ("deyel_extract_daily", "2026-01-02T00:00:00+00:00"),
    ("deyel_extract_consumer", None),
    ("deyel_extract_changes", "2026-01-02T00:00:00+00:00"),
    ("deyel_extract_lake", "2026-01-02T00:00:00+00:00"),
    ("deyel_upsert", None),
    ("deyel_approval", None),
    ("deyel_on_change", None),
)
#: Every task instance's state, from the metadata database of the example DAGs' runs (same on 3.0 to 3.3).
TASK_STATES = """
import json
from airflow.models import TaskInstance
from airflow.utils.session import create_session
with create_session() as session:
    rows = session.query(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.state).all()
print("TASK-STATES " + json.dumps([[d, t, getattr(s, "value", s)] for d, t, s in rows]))
"""
#: The person who approves in Deyel, for deyel_approval: run with the minor's own Python and hook, it
#: approves every pending purchase request through the API until it is stopped.
APPROVER = """
import time
from deyel_provider.hooks.deyel import DeyelHook
hook = DeyelHook()
while True:
    for request in hook.iter_instances("PURCHASE_REQUEST", search="cdStatus=eq:PENDING"):
        hook.update_instance(
            "PURCHASE_REQUEST", request["idObjectValue"],
            {"cdStatus": "APPROVED", "dtLastUpdate": request["dtLastUpdate"]},
        )
    time.sleep(0.5)
"""


def sh(
    *args: str | Path,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float | None = None,
) -> int:
    """Run a command into the log; its exit code (124 when it ran past ``timeout`` seconds and was killed)."""
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(str(a) for a in args)}\n")
        out.flush()
        try:
            return subprocess.run(
                [str(a) for a in args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False,
                timeout=timeout,
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            out.write(f"\n(killed after {timeout:.0f} s)\n")
            return 124


def build_wheel() -> Path:
    dist = WORK / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("*.whl")
    return wheel


def install(minor: str, wheel: Path, log: Path) -> Path | None:
    venv = WORK / f"airflow-{minor}"
    shutil.rmtree(venv, ignore_errors=True)
    # --seed: pip too, as a user's virtualenv has it.
    if sh(*UV, "venv", "-q", "--seed", "--python", sys.executable, venv, log=log):
        return None
    python = venv / "bin" / "python"
    version, released = LATEST[minor]
    if released is None:
        pins = ["-c", str(ROOT / "constraints.txt")]
    else:
        today = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
        pins = ["--exclude-newer", released]
        for name in NEWER_FLOORS:
            pins += ["--exclude-newer-package", f"{name}={today}"]
    code = sh(
        *UV, "pip", "install", "-q", "--python", python, wheel, f"apache-airflow=={version}",
        "--group", "test", *pins, log=log,
    )  # fmt: skip
    return None if code else venv


def clean_env(home: Path, **more: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "CI")}
    keep.pop("VIRTUAL_ENV", None)
    return {**keep, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", **more}


def run_suite(venv: Path, log: Path, pytest_args: list[str]) -> tuple[bool, str]:
    """The unit suite on the installed wheel: (passed, the table's cell). It passed only when pytest exited
    0 and its report counts at least one test: a suite that did not run, hung or collected nothing fails."""
    home = WORK / f"home-{venv.name}-suite"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    report = home / "report.txt"
    args = [
        venv / "bin" / "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not e2e and not packaging and not docs",
        # Worker processes as in make test (pytest-xdist comes with the test group); --pytest-args "-n 0"
        # runs the suite in one process.
        "-n",
        str(SUITE_WORKERS),
        "--dist",
        "loadgroup",
    ]
    code = sh(*args, *pytest_args, "-o", "console_output_style=classic", f"--junitxml={report}", log=log,
              env=clean_env(home), timeout=SUITE_TIMEOUT)  # fmt: skip
    found = re.search(
        r'errors="(\d+)" failures="(\d+)" skipped="(\d+)" tests="(\d+)"', report.read_text()
    ) if report.exists() else None  # fmt: skip
    if not found:
        return False, f"no report (pytest exit {code})"
    errors, failures, skipped, tests = map(int, found.groups())
    passed = tests - errors - failures - skipped
    cell = f"{passed} passed, {failures + errors} failed" + (f", {skipped} skipped" if skipped else "")
    if code != 0 and failures + errors == 0:
        cell += f" (pytest exit {code})"
    return code == 0 and passed > 0, cell


def run_dags(venv: Path, log: Path) -> tuple[int, list[str]]:
    home = WORK / f"home-{venv.name}-dags"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = clean_env(
        home,
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags_examples"),
        DEYEL_DEMO_OUTPUT=str(home / "extract-output"),
        DEYEL_DEMO_POKE_INTERVAL="1",
    )
    airflow = venv / "bin" / "airflow"
    with subprocess.Popen(
        [str(venv / "bin" / "deyel-emulator"), "--port", "0", "--records", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as emulator:
        try:
            assert emulator.stdout is not None
            started = emulator.stdout.readline().split()
            if not started:
                return 0, ["the emulator did not start"]
            url = started[0]
            conn = {"conn_type": "deyel", "host": url, "login": "DEYELBOT", "password": "BOTDEYEL312!"}
            env["AIRFLOW_CONN_DEYEL_DEFAULT"] = json.dumps(conn)
            # reserialize: registers the DAGs' assets, which `dags test` on 3.0 does not (an outlet would be
            # refused as an inactive asset); a deployment's DAG processor does the same.
            for step in (["db", "migrate"], ["dags", "reserialize"]):
                if sh(airflow, *step, log=log, env=env):
                    return 0, [" ".join(step)]
            failed = []
            with subprocess.Popen(
                [str(venv / "bin" / "python"), "-c", APPROVER],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            ) as approver:  # fmt: skip
                try:
                    for dag_id, logical_date in DAG_RUNS:
                        when = [logical_date] if logical_date else []
                        if sh(airflow, "dags", "test", dag_id, *when, log=log, env=env, timeout=DAG_TIMEOUT):
                            failed.append(dag_id)
                finally:
                    approver.terminate()
            # `dags test` exits 0 unless the run failed: a run of skipped tasks would pass. Every task of an
            # example DAG must have succeeded.
            unfinished = not_succeeded(venv, env)
            failed += [f"{dag_id} ({unfinished[dag_id]})" for dag_id, _ in DAG_RUNS if dag_id in unfinished]
            failed = list(dict.fromkeys(failed))
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
    failed_dags = {name.split(" ")[0] for name in failed}
    return len(DAG_RUNS) - len(failed_dags), failed


def not_succeeded(venv: Path, env: dict[str, str]) -> dict[str, str]:
    """The example DAGs with a task instance in another state than success: ``{dag_id: "task=state, ..."}``
    (every DAG, when the metadata database cannot be read)."""
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", TASK_STATES],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("TASK-STATES ")]
    if done.returncode or not lines:
        return {dag_id: "task states unreadable" for dag_id, _ in DAG_RUNS}
    out: dict[str, list[str]] = {}
    for dag_id, task_id, state in json.loads(lines[-1].removeprefix("TASK-STATES ")):
        if state != "success":
            out.setdefault(dag_id, []).append(f"{task_id}={state}")
    return {dag_id: ", ".join(tasks) for dag_id, tasks in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minors", default=",".join(MINORS))
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments (e.g. -x, -k ...)")
    parser.add_argument("--no-suite", action="store_true", help="only the example DAGs")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    wheel = build_wheel()
    rows = []
    all_ok = True
    for minor in args.minors.split(","):
        log = WORK / f"airflow-{minor}.log"
        log.write_text("")
        started = time.monotonic()
        venv = install(minor, wheel, log)
        if venv is None:
            rows.append((minor, "?", "install failed", "-", f"see {log.relative_to(ROOT)}"))
            all_ok = False
            continue
        version = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import airflow; print(airflow.__version__)"],
            capture_output=True, text=True, check=False, env=clean_env(WORK),
        ).stdout.strip()  # fmt: skip
        suite_ok, suite = (
            (True, "not run") if args.no_suite else run_suite(venv, log, shlex.split(args.pytest_args))
        )
        passed, failed = run_dags(venv, log)
        all_ok = all_ok and suite_ok and not failed
        dags = f"{passed}/{len(DAG_RUNS)} passed" + (f" (failed: {', '.join(failed)})" if failed else "")
        rows.append((minor, version, suite, dags, f"{time.monotonic() - started:.0f} s"))
        print(f"Airflow {version}: suite {suite}; example DAGs {dags}", flush=True)
    print("\n| Airflow | version | unit suite | example DAGs (airflow dags test) | time |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
