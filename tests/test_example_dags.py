"""Every example DAG imports cleanly and runs end to end against the emulator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DAGS_FOLDER = Path(__file__).resolve().parent.parent / "dags_examples"
EXAMPLES = sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_every_example_imports_without_errors(dagbag):
    assert EXAMPLES
    assert dagbag.import_errors == {}
    assert {Path(dag.fileloc) for dag in dagbag.dags.values()} == set(EXAMPLES)


@pytest.fixture(scope="session")
def airflow_db():
    """Running a whole DAG needs the metadata database: a migrated SQLite in the test AIRFLOW_HOME."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


@pytest.mark.dag
def test_api_call_dag_runs_end_to_end(emulator, deyel_conn, airflow_db, dagbag):
    dag = dagbag.get_dag("deyel_api_call")
    run = dag.test()
    assert run.state == "success"
    stats = emulator.stats()
    assert stats["token_requests"] == 1
    assert stats["api_requests"] == 2


@pytest.mark.dag
def test_fan_out_dag_reads_every_page_with_one_token(emulator, deyel_conn, airflow_db, dagbag):
    from dags_examples.deyel_fan_out import PAGE_SIZE, PAGES

    run = dagbag.get_dag("deyel_fan_out").test()
    assert run.state == "success"
    stats = emulator.stats()
    assert stats["api_requests"] == PAGES
    # One process (dag.test): the process cache shares the token between all 20 tasks.
    assert stats["token_requests"] == 1
    total = next(ti for ti in run.get_task_instances() if ti.task_id == "total")
    # The emulator fixture holds 50 records: all on the first page, the 19 others empty.
    assert PAGE_SIZE >= 50
    assert total.xcom_pull(task_ids="total") == 50
