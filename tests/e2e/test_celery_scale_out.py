"""Scale out: CeleryExecutor, a Redis broker, PostgreSQL, and two workers that share nothing but the wires.

Each worker has its own AIRFLOW_HOME (its own logs folder, as on its own host); they meet only through the
broker, the metadata database, the API server, the output folder and, for the token, the provider's Redis
token cache. The fan-out example DAG (``deyel_extract_group``) cuts one extraction into 8 parts, and its
mapped reads spread over both workers.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from deyel_provider.emulator import run_emulator
from scripts.deployment import Deployment
from tests.e2e.conftest import (
    EXAMPLE_DAGS,
    QUIET_DEPLOYMENT,
    STOP_TIMEOUT,
    deyel_connection_env,
    redis_cache_extras,
)

pytestmark = pytest.mark.e2e

DAG_ID = "deyel_extract_fan_out"
GROUP = "accounts"
WORKERS = ("worker1", "worker2")
#: Slots per worker: both workers' slots together hold every part at once. Airflow's Celery settings
#: (late acks, a prefetch multiplier of 1) let a worker hold at most this many unfinished parts, so the
#: other parts can only go to the other worker: no timing decides that both take part.
SLOTS = 4
#: Enough instances for PARTS full responses of the example's page_size (100) in every part.
RECORDS = 1000
#: Each request takes a little while, so a part's read outlasts the queueing of the others (a margin on top
#: of the rule above, never a wait in the test).
LATENCY_MS = 50


@pytest.fixture
def celery_deployment(tmp_path, redis_server, postgres_database):
    # The one example this deployment runs, alone in its DAG folder: the scheduler and the DAG processor do
    # not load and keep the other examples, which stay paused here (test_local_deployment.py runs them). Its
    # tasks neither defer nor watch an asset, so there is no triggerer either.
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy2(EXAMPLE_DAGS / f"{DAG_ID}.py", dags)
    with run_emulator(records=RECORDS, latency_ms=LATENCY_MS) as emulator:
        deployment = Deployment(
            home=tmp_path / "airflow-celery",
            dags_folders=(dags,),
            executor="CeleryExecutor",
            sql_alchemy_conn=postgres_database,
            migrate=False,
            stop_timeout=STOP_TIMEOUT,
            triggerer=False,
            serve_logs=False,  # the workers skip theirs too; the test reads each worker's log files
            env={
                **QUIET_DEPLOYMENT,
                "AIRFLOW__CELERY__BROKER_URL": f"{redis_server.address}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres_database,
                # The token cache lives in another Redis database than the broker's queues.
                **deyel_connection_env(emulator.url, **redis_cache_extras(f"{redis_server.address}/1")),
            },
        )
        with deployment:
            for name in WORKERS:
                deployment.start_celery_worker(name, concurrency=SLOTS)
            yield deployment, emulator


def test_one_extraction_in_parts_on_two_workers_shares_one_token(celery_deployment):
    # The example's own numbers, imported here: importing the DAG file builds its DAG and imports the fan-out
    # modules, which every xdist worker would otherwise do just to collect this module.
    from dags_examples.deyel_extract_fan_out import FORM, PARTS

    deployment, emulator = celery_deployment
    assert PARTS <= SLOTS * len(WORKERS)
    api = deployment.api()
    api.wait_for_dag(DAG_ID)
    # The example is @daily from a start_date with catchup=False: unpausing it makes one scheduled run, the
    # latest one due. That run is the one measured (a manual run beside it would share its watermark: the
    # first of the two would read every instance, the other nothing).
    api.unpause(DAG_ID)
    run_id = api.wait_for_any_run(DAG_ID)
    run = api.wait_for_run(DAG_ID, run_id, timeout=600)
    runs = api.call("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
    assert [r["dag_run_id"] for r in runs] == [run_id]

    task_instances = api.task_instances(DAG_ID, run_id)
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in task_instances}
    assert set(states.values()) == {"success"}, states
    assert run["state"] == "success"
    reads = {ti["map_index"]: ti for ti in task_instances if ti["task_id"] == f"{GROUP}.read"}
    assert sorted(reads) == list(range(PARTS)), states
    assert len(task_instances) == PARTS + 3  # plan, the reads, commit, report

    summary = next(
        entry["value"]
        for entry in api.xcom_entries(DAG_ID, run_id, f"{GROUP}.commit")
        if entry["key"] == "return_value"
    )
    part_tasks = {part["number"]: part for part in summary["part_tasks"]}
    assert sorted(part_tasks) == list(range(PARTS))

    # Which worker ran each read: its task log is in that worker's own home, and in no other.
    ran_by: dict[int, list[str]] = {}
    for name in WORKERS:
        logs = deployment.home / "workers" / name / "logs"
        for path in logs.glob(f"dag_id={DAG_ID}/**/task_id={GROUP}.read/map_index=*/attempt=*.log"):
            number = int(re.fullmatch(r"map_index=(\d+)", path.parent.name).group(1))  # type: ignore[union-attr]
            ran_by.setdefault(number, []).append(name)
    assert {number: len(names) for number, names in ran_by.items()} == dict.fromkeys(range(PARTS), 1)
    # Each part's XCom names the process that wrote it: the process of the read task instance that ran on
    # that worker (the task instance's pid, as the worker's supervisor reported it).
    assert {number: part["pid"] for number, part in part_tasks.items()} == {
        number: ti["pid"] for number, ti in reads.items()
    }
    assert len({part["pid"] for part in part_tasks.values()}) == PARTS
    writers = {number: names[0] for number, names in ran_by.items()}
    print(f"parts by worker: {writers}; pids: { {n: p['pid'] for n, p in part_tasks.items()} }")
    assert set(writers.values()) == set(WORKERS), writers

    # The published parts and manifest hold each of the emulator's instances once, and nothing else is left.
    folder = deployment.output_dir / FORM / "fan_out"
    manifest_path = folder / summary["manifest"].rsplit("/", 1)[1]
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert len(manifest["parts"]) == PARTS
    ids = [
        int(json.loads(line)["idObjectValue"])
        for part in manifest["parts"]
        for line in (folder / part["name"]).read_text(encoding="utf-8").splitlines()
    ]
    assert sorted(ids) == list(range(1, RECORDS + 1))
    assert manifest["records"] == summary["records"] == RECORDS
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*(part["name"] for part in manifest["parts"]), manifest_path.name]
    )

    stats = emulator.stats()
    print(f"emulator counters: {stats}")  # shown by `make e2e PYTEST_ARGS=-rP`
    assert stats["token_failures"] == 0
    # Every data request is the plan's or a part's, as the group's summary counts them.
    assert stats["api_requests"] == summary["requests"]
    # `cache: redis`: one token for the whole run (plan, 8 reads on two workers, commit, report).
    assert stats["token_requests"] == 1
