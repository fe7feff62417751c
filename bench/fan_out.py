"""One extraction over many Celery workers: ``deyel_extract_group`` against one task, and a resumed run.

The first table runs a real deployment (bench/dags/deyel_bench_fan_out.py): CeleryExecutor with two workers
of 4 slots each (each its own AIRFLOW_HOME), a private redis-server as the broker and the token cache, a
PostgreSQL database of its own (127.0.0.1:5432, as ``make e2e``), and the emulator in a process of its own
with 50 ms of latency per request. Each variant triggers its DAG and is timed by its run's start and end
dates in the metadata database (scheduling, task start-up and the commit included: what a user waits for):
one ``DeyelExtractOperator`` with ``max_workers=1`` (the baseline) and ``max_workers=8``, and the group with
``parts=8`` (one worker per part). Every run reads the whole form from a watermark of its own.

The second table counts requests: a single-task extraction in ``max_file_bytes`` parts killed with SIGKILL at
about 70 % of its requests (the emulator holds the next one), then retried (it resumes after the parts the
first try recorded), against an uninterrupted run.

    python -m bench fan_out             # 1M instances, pages of 1000
    python -m bench --quick fan_out     # 10k instances, pages of 100, one round: checks that it runs
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench.extract import CLIENT_ID, CLIENT_SECRET, REQUESTS, ROOT, STEP_MS, emulator
from bench.harness import Column, Measurement, Table, Variant, quick, rate, rounds, run_table, sized
from tests.support.postgres import airflow_database
from tests.support.redis_server import RedisServer

DAGS = Path(__file__).resolve().parent / "dags"
LATENCY_MS = 50
PARTS = 8
WORKERS = ("worker1", "worker2")
SLOTS = 4
#: The bench DAGs and the task whose XCom is the extraction's summary.
DAG_RUNS = {
    "one task, max_workers=1": ("deyel_bench_one_task_1", "extract"),
    "one task, max_workers=8": ("deyel_bench_one_task_8", "extract"),
    f"deyel_extract_group(parts={PARTS})": ("deyel_bench_group", "accounts.commit"),
}
RUN_TIMEOUT = 3600.0
#: Where the first try is killed: this share of an uninterrupted run's requests.
KILL_AT = 0.7


def n_rounds() -> int:
    """One round with --quick unless ``--rounds`` says otherwise (a deployment's run takes tens of seconds
    even when small)."""
    return 1 if quick() and "BENCH_ROUNDS" not in os.environ else rounds()


# -- the Celery deployment -----------------------------------------------------------------------------------


def unavailable() -> str | None:
    """Why the deployment cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "no redis-server"
    try:
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres").close()
    except Exception as error:  # any failure to reach it: the row says so
        return f"no PostgreSQL at 127.0.0.1:5432 ({type(error).__name__})"
    return None


@contextmanager
def celery_deployment(url: str, page_size: int) -> Iterator[Any]:
    from scripts.deployment import Deployment

    connection = {
        "conn_type": "deyel",
        "host": url,
        "login": CLIENT_ID,
        "password": CLIENT_SECRET,
    }
    with (
        RedisServer() as redis,
        airflow_database("deyel_bench") as database,
        tempfile.TemporaryDirectory(prefix="deyel-bench-celery-") as home,
    ):
        extra = {"cache": "redis", "cache_url": f"{redis.address}/1"}  # beside the broker's queues (/0)
        deployment = Deployment(
            home=Path(home),
            dags_folders=(DAGS,),
            executor="CeleryExecutor",
            sql_alchemy_conn=database,
            env={
                "AIRFLOW__CELERY__BROKER_URL": f"{redis.address}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database,
                "AIRFLOW_CONN_DEYEL_DEFAULT": json.dumps({**connection, "extra": extra}),
                "DEYEL_BENCH_PAGE_SIZE": str(page_size),
                "DEYEL_BENCH_PARTS": str(PARTS),
                "PYTHONPATH": os.pathsep.join([str(ROOT / "provider"), str(ROOT)]),
            },
        )
        with deployment:
            for name in WORKERS:
                deployment.start_celery_worker(name, concurrency=SLOTS)
            yield deployment


def dag_run(api: Any, dag_id: str, task_id: str, records: int) -> Measurement:
    """Trigger ``dag_id``, wait for its run; records/s from its start and end dates (metadata database)."""
    run_id = api.trigger(dag_id)
    run = api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    if run["state"] != "success":
        raise RuntimeError(f"run {run_id} of {dag_id} ended {run['state']}")
    started, ended = (datetime.fromisoformat(run[key]) for key in ("start_date", "end_date"))
    seconds = (ended - started).total_seconds()
    summary = next(
        entry["value"]
        for entry in api.xcom_entries(dag_id, run_id, task_id)
        if entry["key"] == "return_value"
    )
    if summary["records"] != records:
        raise RuntimeError(f"{dag_id} wrote {summary['records']} records of {records}")
    pids = {part["pid"] for part in summary.get("part_tasks", [])}
    return rate(records, seconds, requests=summary["requests"], tasks=len(pids) or 1)


def celery_table() -> None:
    records, page_size = sized(1_000_000, 10_000), sized(1000, 100)
    title = (
        f"One extraction on Celery (2 workers x {SLOTS} slots), {records:,} instances, pages of {page_size}, "
        f"{LATENCY_MS} ms latency per request, JSON Lines to a local folder; timed by the DAG run's start "
        f"and end dates"
    )
    table = Table(
        title,
        metric="records_per_s",
        unit="records/s",
        baseline="one task, max_workers=1",
        columns=[REQUESTS, Column("tasks", "read tasks", "exact"), Column("seconds", "seconds")],
        note=(
            "A run's dates include what a user waits for: scheduling, each task's start-up on a worker,\n"
            "the group's plan and commit. The group's requests include its plan's counts (a few per cut)."
        ),
    )
    reason = unavailable()
    if reason is not None:
        run_table(table, [Variant(label, skip=reason) for label in DAG_RUNS], n_rounds())
        return
    with (
        emulator(records, latency_ms=LATENCY_MS, updated_step_ms=STEP_MS) as url,
        celery_deployment(url, page_size) as deployment,
    ):
        api = deployment.api()
        for dag_id, _ in DAG_RUNS.values():
            api.wait_for_dag(dag_id)

        def variant(dag_id: str, task_id: str) -> Any:
            return lambda: dag_run(api, dag_id, task_id, records)

        run_table(table, [Variant(label, variant(*dag)) for label, dag in DAG_RUNS.items()], n_rounds())


# -- a resumed run -------------------------------------------------------------------------------------------


def resume_child(url: str, folder: str, try_number: int, **options: Any) -> subprocess.Popen[str]:
    connection = {"conn_type": "deyel", "host": url, "login": CLIENT_ID, "password": CLIENT_SECRET}
    env = {
        **os.environ,
        "AIRFLOW_HOME": folder,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_DEYEL_DEFAULT": json.dumps({**connection, "extra": {"cache": "memory"}}),
    }
    args = json.dumps({"folder": str(Path(folder) / "out"), "try_number": try_number, **options})
    return subprocess.Popen(
        [sys.executable, "-m", "bench._resume_child", args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(child: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = child.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"exit {child.returncode}: {' | '.join(err.strip().splitlines()[-2:])}")
    return dict(json.loads(lines[-1]))


def api_requests(url: str) -> int:
    return int(requests.get(url + "/_emulator/stats", timeout=30).json()["api_requests"])


def killed_try(url: str, folder: str, cut: int, **options: Any) -> int:
    """A first try whose data request ``cut + 1`` the emulator holds, killed there with SIGKILL; returns the
    requests it made (the held one included)."""
    rules = [{"action": "delay", "delay_ms": 600_000, "route": "data", "after": cut, "count": 1}]
    requests.post(url + "/_emulator/faults", json={"rules": rules}, timeout=30).raise_for_status()
    before = api_requests(url)
    child = resume_child(url, folder, 1, **options)
    try:
        while api_requests(url) - before <= cut:
            if child.poll() is not None:
                raise RuntimeError(f"the first try ended (exit {child.returncode}) before request {cut + 1}")
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
        requests.delete(url + "/_emulator/faults", timeout=30).raise_for_status()
    return api_requests(url) - before


def resume_table() -> None:
    records, page_size = sized(1_000_000, 5_000), sized(1000, 100)
    options = {"page_size": page_size, "max_file_bytes": sized(8_000_000, 100_000)}
    with emulator(records, updated_step_ms=STEP_MS) as url:
        with tempfile.TemporaryDirectory(prefix="deyel-bench-resume-") as folder:
            full = finished(resume_child(url, folder, 1, **options))["requests"]  # not timed: the count
        cut = int(full * KILL_AT)

        def uninterrupted() -> Measurement:
            with tempfile.TemporaryDirectory(prefix="deyel-bench-resume-") as folder:
                m = finished(resume_child(url, folder, 1, **options))
            return {"requests": m["requests"], "records": m["records"]}

        def resumed() -> Measurement:
            with tempfile.TemporaryDirectory(prefix="deyel-bench-resume-") as folder:
                first = killed_try(url, folder, cut, **options)
                retry = finished(resume_child(url, folder, 2, **options))
            if retry["records"] != records:
                raise RuntimeError(f"the retry wrote {retry['records']} records of {records}")
            extra = first + retry["requests"] - full
            return {
                "requests": retry["requests"],
                "records": retry["records"],
                "first": first,
                "extra": extra,
                "extra_of_first": 100 * extra / first,
                "retry_of_full": 100 * retry["requests"] / full,
            }

        run_table(
            Table(
                f"A resumed run: one DeyelExtractOperator, {records:,} instances in max_file_bytes parts, "
                f"pages of {page_size}, killed with SIGKILL at {KILL_AT:.0%} of its {full:,} requests, "
                "then retried",
                metric="requests",
                unit="requests of the try",
                baseline="uninterrupted run",
                columns=[
                    Column("first", "first try (killed)", "exact"),
                    Column("extra", "extra requests", "exact"),
                    Column("extra_of_first", "extra / first try (%)"),
                    Column("retry_of_full", "retry / uninterrupted (%)"),
                ],
                note=(
                    "extra requests: the first try's and the retry's together, less an uninterrupted run's "
                    "(what\nresuming reads twice). The parts are recorded beside them (Airflow 3.3 keeps the "
                    "record in\ntask_state_store: the same requests)."
                ),
            ),
            [
                Variant("uninterrupted run", uninterrupted),
                Variant(f"killed at {KILL_AT:.0%}, retried", resumed),
            ],
            n_rounds(),
        )


def run() -> None:
    celery_table()
    resume_table()
