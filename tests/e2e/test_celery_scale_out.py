"""Scale out: CeleryExecutor, a Redis broker, PostgreSQL, and two workers that share nothing but the wires.

Each worker has its own AIRFLOW_HOME (its own logs folder, as on its own host); they meet only through the
broker, the metadata database, the API server and, for the token, the provider's Redis token cache. The
fan-out example DAG runs 20 Deyel tasks in parallel across them.
"""

from __future__ import annotations

import pytest

from dags_examples.deyel_fan_out import PAGE_SIZE, PAGES
from deyel_provider.emulator import run_emulator
from scripts.deployment import Deployment
from tests.e2e.conftest import (
    EXAMPLE_DAGS,
    deyel_connection_env,
    redis_cache_extras,
)

pytestmark = pytest.mark.e2e

DAG_ID = "deyel_fan_out"
WORKERS = ("worker1", "worker2")
RECORDS = PAGES * PAGE_SIZE  # every page full: each of the 20 tasks reads records


@pytest.fixture
def celery_deployment(tmp_path, redis_server, postgres_database):
    with run_emulator(records=RECORDS) as emulator:
        deployment = Deployment(
            home=tmp_path / "airflow-celery",
            dags_folders=(EXAMPLE_DAGS,),
            executor="CeleryExecutor",
            sql_alchemy_conn=postgres_database,
            env={
                "AIRFLOW__CELERY__BROKER_URL": f"{redis_server}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres_database,
                # The token cache lives in another Redis database than the broker's queues.
                **deyel_connection_env(emulator.url, **redis_cache_extras(f"{redis_server}/1")),
            },
        )
        with deployment:
            for name in WORKERS:
                deployment.start_celery_worker(name, concurrency=3)
            yield deployment, emulator


def test_twenty_parallel_tasks_on_two_workers_share_one_token(celery_deployment):
    deployment, emulator = celery_deployment
    api = deployment.api()
    api.wait_for_dag(DAG_ID)
    run_id = api.trigger(DAG_ID)
    run = api.wait_for_run(DAG_ID, run_id, timeout=480)

    task_instances = api.task_instances(DAG_ID, run_id)
    assert len(task_instances) == PAGES + 1
    assert {ti["state"] for ti in task_instances} == {"success"}, task_instances
    assert run["state"] == "success"
    (total,) = api.xcom_entries(DAG_ID, run_id, "total")
    assert total["value"] == RECORDS

    # Both workers did part of the run: each wrote task logs into its own home, and together all of them.
    logs = {
        name: list((deployment.home / "workers" / name / "logs").glob(f"dag_id={DAG_ID}/**/attempt=*.log"))
        for name in WORKERS
    }
    assert all(logs.values()), {name: len(files) for name, files in logs.items()}
    assert sum(len(files) for files in logs.values()) == PAGES + 1

    stats = emulator.stats()
    print(f"emulator counters: {stats}")  # shown by `make e2e PYTEST_ARGS=-rP`
    assert stats["api_requests"] == PAGES
    assert stats["token_failures"] == 0
    # `cache: redis`: one token for the whole run, whichever worker asked first.
    assert stats["token_requests"] == 1
