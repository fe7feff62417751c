"""Real deployments for the e2e tests: Airflow components, redis-server and PostgreSQL databases, by PID."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest

from deyel_provider.emulator import run_emulator
from scripts.deployment import ROOT, Deployment
from tests.support.helpers import connection_json
from tests.support.postgres import AIRFLOW_SERVER, airflow_database, own_database

E2E_FOLDER = Path(__file__).resolve().parent
E2E_DAGS = E2E_FOLDER / "dags"
EXAMPLE_DAGS = ROOT / "dags_examples"
ARTIFACTS = ROOT / "artifacts"
RECORDS = 1000

#: Settings of the test deployments that only spare CPU (the suite runs on two cores):
#:
#: - their DAG files never change once parsed: the DAG processor re-parsed each every 30 s (Airflow's
#:   default), 9 CPU seconds in 90 s of an idle deployment against 1.4 with this (new files are still found
#:   every 5 s, scripts/deployment.py);
#: - a running task's supervisor heartbeats through the API server every 5 s by default, each a request and
#:   a database update for the task the scheduler already knows is running; its tasks last seconds, so every
#:   30 s keeps the first heartbeat of each task (at its start) and drops most of the others, far inside
#:   the scheduler's 300 s limit for a task without one;
#: - every component checks a pooled database connection out several times a second (the scheduler's, the
#:   DAG processor's and the triggerer's loops, each API request) and, by default, pings PostgreSQL before
#:   each use to find connections the server dropped: a round trip that was a fifth of the idle DAG
#:   processor's CPU. The test databases are on this host and drop no connection while a deployment lives;
#: - when the environment says ``PYTHONDONTWRITEBYTECODE`` (this machine's does), every process compiled the
#:   provider and the DAG file it imports from source: every task process, every parse. The components
#:   write bytecode as Python does by default (``__pycache__``, git-ignored), so the first process to import
#:   a module compiles it for all the others: a tenth of a task process's CPU was that compiling;
#: - each component, at its start, checks that the database's schema is at Airflow's latest migration: it
#:   imports every one of Airflow's migration scripts (0.8 s of an API server's start on a loaded machine;
#:   ten components start in a run). The fixtures migrate every database a deployment gets, before it starts.
QUIET_DEPLOYMENT = {
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "30",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_PRE_PING": "False",
    "AIRFLOW__DATABASE__CHECK_MIGRATIONS": "False",
    "PYTHONDONTWRITEBYTECODE": "",  # empty is unset for Python
}

#: What a test deployment's components get to shut down before SIGKILL (Deployment.stop_timeout): the tests
#: have read all they check by then, and the executors' workers outwait SIGTERM (20 s each deployment).
STOP_TIMEOUT = 3.0

# The shared token caches that make one token serve every task process (one host) or worker (many).
FILE_CACHE_EXTRAS = {"cache": "file"}


def redis_cache_extras(redis_url: str) -> dict[str, str]:
    return {"cache": "redis", "cache_url": redis_url}


def deyel_connection_env(url: str, **extra: object) -> dict[str, str]:
    return {"AIRFLOW_CONN_DEYEL_DEFAULT": connection_json(url, **extra)}


#: What the e2e files share (the LocalExecutor deployment, its emulator), closed once the last e2e test has
#: run (see pytest_runtest_teardown below), not when the session ends: an Airflow deployment is never idle
#: (its scheduler loops, its DAG processor re-parses every file, unpaused DAGs' triggers poll), and under
#: pytest-xdist the worker that ran the e2e unit goes on with other files for minutes.
_SHARED = ExitStack()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem) -> None:
    """Called for the tests in this folder: after the last e2e test of this process, stop what they share
    (last: once pytest's own teardown has ended that test's fixtures, which may still use the deployment)."""
    if nextitem is None or E2E_FOLDER not in Path(str(nextitem.path)).parents:
        _SHARED.close()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory):
    """A metadata database that ``airflow db migrate`` has migrated, for the deployments' own to copy
    (``CREATE DATABASE ... TEMPLATE``): the migration's CLI process, 5 CPU seconds of Airflow's imports and
    schema, runs once for the LocalExecutor and the Celery deployments instead of once for each."""
    with own_database("deyel_e2e_template") as name:
        Deployment(
            home=tmp_path_factory.mktemp("airflow-template"), sql_alchemy_conn=f"{AIRFLOW_SERVER}/{name}"
        ).airflow("db", "migrate")
        yield name


@pytest.fixture(scope="session")
def local_emulator():
    """The emulator the LocalExecutor deployment's ``deyel_default`` points at (its counters span the run)."""
    with _SHARED:
        yield _SHARED.enter_context(run_emulator(records=RECORDS))


@pytest.fixture(scope="session")
def local_deployment(local_emulator, migrated_template, tmp_path_factory):
    """api-server + scheduler + dag-processor + triggerer, LocalExecutor, example and e2e DAGs.

    On PostgreSQL, as a deployment runs: with every example DAG at once (mapped tasks, a deferred sensor, an
    asset watcher) SQLite's single writer held the API server's connections past its pool's timeout."""
    home = tmp_path_factory.mktemp("airflow-local")
    with _SHARED:
        database = _SHARED.enter_context(airflow_database("deyel_e2e", template=migrated_template))
        warehouse = _SHARED.enter_context(airflow_database("deyel_e2e"))
        deployment = Deployment(
            home=home,
            sql_alchemy_conn=database,
            dags_folders=(EXAMPLE_DAGS, E2E_DAGS),
            migrate=False,
            stop_timeout=STOP_TIMEOUT,
            serve_logs=False,  # the tests read the logs of finished tasks: from their files
            # The approval example's deferred sensor polls every second here (60 s in the example).
            env={
                **QUIET_DEPLOYMENT,
                # The LocalExecutor forks `parallelism` workers at its start (32 by default), and each pays,
                # on its first task, the supervisor's imports and its API client's TLS context (CA bundles
                # loaded for a plain-http API): 8 workers still run eight task processes at once on two
                # cores, and 8 pages of the shared-token example read concurrently with one token.
                "AIRFLOW__CORE__PARALLELISM": "8",
                **deyel_connection_env(local_emulator.url, **FILE_CACHE_EXTRAS),
                "DEYEL_DEMO_POKE_INTERVAL": "1",
                # The mirror example's warehouse: a database of its own, as an ordinary postgres connection.
                "AIRFLOW_CONN_MIRROR_POSTGRES": warehouse.replace("postgresql+psycopg2://", "postgresql://"),
            },
        )
        deployment.warehouse = warehouse.rsplit("/", 1)[1]  # type: ignore[attr-defined]
        yield _SHARED.enter_context(deployment)


@pytest.fixture
def postgres_database(migrated_template):
    """A metadata database of its own, already migrated (its deployment is made with ``migrate=False``)."""
    with airflow_database("deyel_e2e", template=migrated_template) as url:
        yield url


def leaked(values: object, secrets: list[str]) -> list[str]:
    """The secrets (by position, never the value) that appear in clear inside ``values``."""
    text = values if isinstance(values, str) else json.dumps(values, default=str)
    return [f"secret #{index}" for index, secret in enumerate(secrets) if secret and secret in text]
