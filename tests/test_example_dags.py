"""Every example DAG imports cleanly and runs end to end against the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import postgres
from tests.support.example_dags import DAGS_FOLDER, consumed_by_the_next_run

EXAMPLES = sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="session")
def dagbag():
    from tests.support.helpers import dagbag_class

    return dagbag_class()(dag_folder=str(DAGS_FOLDER))


def test_every_example_imports_without_errors(dagbag):
    from deyel_provider.compat import AIRFLOW_VERSION

    assert EXAMPLES
    assert dagbag.import_errors == {}
    # Asset partitions are Airflow 3.2+: before, the partitioned example defines no DAG.
    expected = {p for p in EXAMPLES if AIRFLOW_VERSION >= (3, 2) or p.name != "deyel_partitioned_extract.py"}
    assert {Path(dag.fileloc) for dag in dagbag.dags.values()} == expected


@pytest.mark.dag
def test_api_call_dag_runs_end_to_end(emulator, deyel_conn, airflow_db, dagbag):
    dag = dagbag.get_dag("deyel_api_call")
    run = dag.test()
    assert run.state == "success"
    stats = emulator.stats()
    assert stats["token_requests"] == 1
    assert stats["api_requests"] == 2


@pytest.mark.dag
def test_shared_token_dag_makes_one_token_post(emulator, deyel_conn, airflow_db, dagbag):
    dag = dagbag.get_dag("deyel_shared_token")
    assert len(dag.tasks) == 22  # the token task, 20 API calls, the report
    run = dag.test()
    assert run.state == "success"
    stats = emulator.stats()
    assert stats["token_requests"] == 1
    assert stats["api_requests"] == 20


@pytest.mark.dag
def test_extract_dags_run_end_to_end(emulator, deyel_conn, airflow_db, dagbag, capsys):
    """The daily extraction writes its interval's records and emits the Asset; the consumer reads the file."""
    import json

    import pendulum

    # The run at 2026-01-02T00:00 covers the interval [2026-01-01, 2026-01-02).
    run = dagbag.get_dag("deyel_extract_daily").test(logical_date=pendulum.datetime(2026, 1, 2, tz="UTC"))
    assert run.state == "success"
    output = Path(os.environ["DEYEL_DEMO_OUTPUT"]) / "CRM_ACCOUNT" / "2026-01-01.jsonl"
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    # The emulator's 50 instances were all updated on 2026-01-01 (in its first 50 minutes).
    assert sorted(int(r["idObjectValue"]) for r in records) == list(range(1, 51))
    assert sorted(os.listdir(output.parent)) == ["2026-01-01.jsonl"]

    capsys.readouterr()
    consumer = dagbag.get_dag("deyel_extract_consumer").test()
    assert consumer.state == "success"
    printed = capsys.readouterr().out
    assert f"consumer read {output.as_uri()}: 50 records (the extraction reported 50)" in printed


@pytest.mark.dag
def test_the_consumer_reads_every_file_of_a_run_that_batches_several_events(
    emulator, deyel_conn, airflow_db, dagbag, capsys
):
    """Two extractions finish before the consumer runs: its one run reads both files, not just the last."""
    import pendulum
    from airflow import settings
    from airflow.models.asset import AssetEvent
    from sqlalchemy import select

    extract = dagbag.get_dag("deyel_extract_daily")
    output = Path(os.environ["DEYEL_DEMO_OUTPUT"]) / "CRM_ACCOUNT"
    runs = [extract.test(logical_date=pendulum.datetime(2026, 1, day, tz="UTC")) for day in (2, 3)]
    assert [run.state for run in runs] == ["success", "success"]
    with settings.Session() as session:
        events = session.scalars(
            select(AssetEvent.id).where(AssetEvent.source_run_id.in_([run.run_id for run in runs]))
        ).all()
    assert len(events) == 2

    capsys.readouterr()
    with consumed_by_the_next_run("deyel_extract_consumer", events):
        consumer = dagbag.get_dag("deyel_extract_consumer").test()
    assert consumer.state == "success"
    printed = [line for line in capsys.readouterr().out.splitlines() if "consumer read" in line]
    # The emulator's 50 instances were all updated on 2026-01-01: the second day's file is empty.
    assert sorted(line.split("DEYEL-DEMO: ", 1)[1] for line in printed) == [
        f"consumer read {(output / '2026-01-01.jsonl').as_uri()}: 50 records (the extraction reported 50)",
        f"consumer read {(output / '2026-01-02.jsonl').as_uri()}: 0 records (the extraction reported 0)",
    ]
    count = next(ti for ti in consumer.get_task_instances() if ti.task_id == "count_records")
    assert count.xcom_pull(task_ids="count_records") == 50


@pytest.mark.dag
def test_extract_fan_out_dag_publishes_every_instance_in_parts_with_one_token(
    emulator, deyel_conn, airflow_db, dagbag, capsys
):
    import json

    from dags_examples.deyel_extract_fan_out import FOLDER, PARTS

    run = dagbag.get_dag("deyel_extract_fan_out").test()
    assert run.state == "success"
    summary = next(ti for ti in run.get_task_instances() if ti.task_id == "accounts.commit").xcom_pull(
        task_ids="accounts.commit"
    )
    manifest = json.loads(Path(summary["manifest"].removeprefix("file://")).read_text(encoding="utf-8"))
    records = [
        json.loads(line)
        for part in manifest["parts"]
        for line in (FOLDER / part["name"]).read_text(encoding="utf-8").splitlines()
    ]
    # The emulator fixture's 50 instances, each once, in the parts the plan cut (50 fill one response of
    # 100: one part; PARTS bounds them).
    assert sorted(int(r["idObjectValue"]) for r in records) == list(range(1, 51))
    assert 1 <= len(manifest["parts"]) <= PARTS and manifest["records"] == summary["records"] == 50
    assert sorted(os.listdir(FOLDER)) == sorted(
        [*(p["name"] for p in manifest["parts"]), Path(summary["manifest"]).name]
    )
    assert emulator.stats()["token_requests"] == 1
    assert (
        f"DEYEL-DEMO: CRM_ACCOUNT: 50 instances in {len(manifest['parts'])} parts" in capsys.readouterr().out
    )


@pytest.mark.dag
def test_a_daily_cron_extracts_exactly_the_changes_and_a_manual_run_nothing_new(
    deyel_conn, airflow_db, dagbag
):
    """``schedule="@daily"`` gives no data interval: each run reads from the last run's watermark, never a
    full load. The emulator's clock is moved a minute forward after each edit, so the edit is in the next
    run's past, as it is when runs are a day apart (no waiting on the clock in the test)."""
    import json

    import pendulum

    from deyel_provider.emulator import run_emulator
    from deyel_provider.hooks.deyel import DeyelHook

    with run_emulator(records=50) as emulator:
        deyel_conn(url=emulator.url)
        dag = dagbag.get_dag("deyel_extract_changes")
        folder = Path(os.environ["DEYEL_DEMO_OUTPUT"]) / "CRM_ACCOUNT" / "changes"

        def run(day: int) -> tuple[dict, list[str]]:
            emulator.advance(60)
            emulator.reset()
            dag_run = dag.test(logical_date=pendulum.datetime(2026, 1, day, tz="UTC"))
            assert dag_run.state == "success"
            (ti,) = dag_run.get_task_instances()
            summary = ti.xcom_pull(task_ids="extract_changes")
            path = Path(summary["path"].removeprefix("file://"))
            assert path.parent == folder
            lines = path.read_text(encoding="utf-8").splitlines()
            return summary, sorted(json.loads(line)["idObjectValue"] for line in lines)

        hook = DeyelHook()

        def edit(instance_id: str) -> None:
            current = hook.request("GET", f"/forms/CRM_ACCOUNT/instances/{instance_id}").json()
            hook.request(
                "PATCH",
                f"/forms/CRM_ACCOUNT/instances/{instance_id}",
                json={"dsNotes": "changed", "dtLastUpdate": current["dtLastUpdate"]},
            )

        first, ids = run(2)
        assert first["mode"] == "watermark" and len(ids) == 50  # from start_from: the whole seeded form
        assert first["window_start"] == pendulum.datetime(2026, 1, 1, tz="UTC").int_timestamp * 1000

        for instance_id in ("7", "21", "33"):
            edit(instance_id)
        second, ids = run(3)
        assert ids == ["21", "33", "7"]  # exactly the changes
        assert second["window_start"] == first["window_end"] < second["window_end"]
        assert emulator.stats()["api_requests"] <= 3  # a window of three changes, not a full load

        edit("7")
        edit("50")
        created = hook.request("POST", "/forms/CRM_ACCOUNT/instances", json={"dsCompany": "New"}).json()
        third, ids = run(4)
        assert ids == sorted(["50", "7", created["idObjectValue"]])
        assert third["window_start"] == second["window_end"]

        manual, ids = run(5)  # nothing changed since the third run
        assert ids == [] and manual["records"] == 0
        assert manual["window_start"] == third["window_end"]


@pytest.mark.dag
def test_upsert_dag_loads_the_accounts_and_a_rerun_writes_nothing(emulator, deyel_conn, airflow_db, dagbag):
    """extract CRM_ACCOUNT, reshape in a @task, upsert into ERP_CUSTOMER: 50 created; then nothing written."""
    from deyel_provider.emulator.forms import TARGET_FORM

    dag = dagbag.get_dag("deyel_upsert")

    def run() -> dict:
        emulator.reset()
        dag_run = dag.test()
        assert dag_run.state == "success"
        load = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "load_customers")
        return load.xcom_pull(task_ids="load_customers")

    first = run()
    assert (first["created"], first["updated"], first["unchanged"], first["rejected"]) == (50, 0, 0, 0)
    store = emulator.state.store
    customers = [store.get(TARGET_FORM, i) for i in store.all_ids(TARGET_FORM)]
    assert sorted(c["cdCustomer"] for c in customers) == sorted(f"CRM-{i}" for i in range(1, 51))
    account = store.get("CRM_ACCOUNT", 7)
    customer = next(c for c in customers if c["cdCustomer"] == "CRM-7")
    assert customer["dsName"] == account["dsCompany"].splitlines()[0]
    assert (customer["qtEmployee"], customer["dtOpening"]) == (account["qtEmployee"], account["dtOpening"])
    assert emulator.methods()["POST"] == 50

    second = run()
    assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 50)
    assert set(emulator.methods()) == {"GET"}  # reads only: the extraction and one search
    rejects = Path(os.environ["DEYEL_DEMO_OUTPUT"]) / "upsert" / "rejects.jsonl"
    assert rejects.read_text() == ""


@pytest.mark.dag
def test_the_example_extraction_emits_openlineage_start_and_complete_events(
    emulator, deyel_conn, airflow_db, tmp_path
):
    """A DAG run with the OpenLineage provider's file transport: the listener asks the operator for its
    facets when the task starts and when it succeeds. Run in a fresh interpreter: the provider reads its
    configuration once per process."""
    import json
    from urllib.parse import urlsplit

    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "deyel-tests",
        # Emission in a thread of the task process instead of a fork of it (same events, no fork in tests).
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }
    script = (
        "import sys, pendulum\n"
        "try:\n"
        "    from airflow.dag_processing.dagbag import DagBag\n"
        "except ImportError:\n"  # Airflow 3.0
        "    from airflow.models.dagbag import DagBag\n"
        "dag = DagBag(dag_folder=sys.argv[1]).get_dag('deyel_extract_daily')\n"
        "run = dag.test(logical_date=pendulum.datetime(2026, 1, 2, tz='UTC'))\n"
        # To a file: on stdout, the emitting thread's log lines could land between print()'s pieces (a CI
        # run saw "RUN-STATE" and "success" apart).
        "open(sys.argv[2], 'w').write(str(run.state))\n"
    )
    state = tmp_path / "run-state"
    # Only the DAG's own file: the interpreter parses (and dag.test() stores) nothing else.
    done = subprocess.run(
        [sys.executable, "-c", script, str(DAGS_FOLDER / "deyel_extract.py"), str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert state.exists() and state.read_text() == "success", (done.stdout + done.stderr)[-3000:]

    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    task_events = [e for e in events if e["job"]["name"] == "deyel_extract_daily.extract_accounts"]
    assert [e["eventType"] for e in task_events] == ["START", "COMPLETE"]
    start, complete = task_events
    assert start["run"]["runId"] == complete["run"]["runId"]
    assert complete["job"]["namespace"] == "deyel-tests"

    deyel = f"deyel://127.0.0.1:{urlsplit(emulator.url).port}"
    output = Path(os.environ["DEYEL_DEMO_OUTPUT"]) / "CRM_ACCOUNT" / "2026-01-01.jsonl"
    for event in (start, complete):
        assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [(deyel, "forms/CRM_ACCOUNT")]
        assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [("file", str(output))]

    window = complete["inputs"][0]["inputFacets"]["deyelWindow"]
    assert (window["mode"], window["field"]) == ("interval", "dtLastUpdate")
    assert (window["windowStart"], window["windowEnd"]) == (
        "2026-01-01T00:00:00.000+00:00",
        "2026-01-02T00:00:00.000+00:00",
    )
    (written,) = complete["outputs"]
    stats = written["outputFacets"]["outputStatistics"]
    assert (stats["rowCount"], stats["size"], stats["fileCount"]) == (50, output.stat().st_size, 1)
    first = json.loads(output.read_text(encoding="utf-8").splitlines()[0])
    assert [f["name"] for f in written["facets"]["schema"]["fields"]] == list(first)
    assert "outputStatistics" not in start["outputs"][0].get("outputFacets", {})


@pytest.mark.dag
def test_the_lake_extraction_writes_typed_parts_and_skips_empty_days(
    emulator, deyel_conn, airflow_db, dagbag
):
    """Through Airflow's task runner: a day with changes gives a Parquet part and one Asset event listing it;
    an empty day (on_empty="skip") succeeds with no file and no event, so nothing downstream runs."""
    import json

    import duckdb
    import pendulum
    from airflow import settings
    from airflow.models.asset import AssetEvent
    from sqlalchemy import select

    dag = dagbag.get_dag("deyel_extract_lake")
    folder = Path(os.environ["DEYEL_DEMO_OUTPUT"]) / "lake" / "CRM_ACCOUNT"

    def run(day: pendulum.DateTime) -> tuple[dict, list]:
        dag_run = dag.test(logical_date=day)
        assert dag_run.state == "success"
        (ti,) = dag_run.get_task_instances()
        with settings.Session() as session:
            events = session.scalars(
                select(AssetEvent).where(AssetEvent.source_run_id == dag_run.run_id)
            ).all()
            extras = [event.extra for event in events]
        return ti.xcom_pull(task_ids="extract_accounts_parquet"), extras

    # The emulator's instances were all updated on 2026-01-01: the day before holds none.
    summary, events = run(pendulum.datetime(2026, 1, 1, tz="UTC"))
    assert (summary["skipped"], summary["records"], summary["parts"], events) == (True, 0, [], [])
    assert not folder.exists() or os.listdir(folder) == []

    summary, events = run(pendulum.datetime(2026, 1, 2, tz="UTC"))
    part = folder / "2026-01-01.part-00000.parquet"
    assert summary["parts"] == [{"path": part.as_uri(), "records": 50, "bytes": part.stat().st_size}]
    assert [extra["parts"] for extra in events] == [summary["parts"]]
    assert sorted(os.listdir(folder)) == ["2026-01-01.parquet.parts.json", "2026-01-01.part-00000.parquet"]
    # The manifest, published last: the commit point.
    manifest = json.loads((folder / "2026-01-01.parquet.parts.json").read_text())
    assert manifest["records"] == 50 and [p["records"] for p in manifest["parts"]] == [50]
    described = duckdb.sql(f"DESCRIBE SELECT * FROM '{part}'").fetchall()  # noqa: S608
    types = {name: kind for name, kind, *_ in described}
    assert (types["dtLastUpdate"], types["qtEmployee"], types["lsAddress"]) == (
        "TIMESTAMP WITH TIME ZONE",
        "BIGINT",
        "JSON",
    )


@pytest.fixture
def mirror_database(monkeypatch):
    """A database of its own on the PostgreSQL at 127.0.0.1:5432 (user postgres), dropped afterwards; the
    example's ``mirror_postgres`` connection points at it."""
    yield from postgres.mirror_database(monkeypatch, "deyel_mirror")


@pytest.mark.dag
def test_mirror_dag_keeps_postgres_equal_to_the_form(
    emulator, deyel_conn, airflow_db, dagbag, mirror_database
):
    """Cycles of the hourly mirror (dag.test(): extract, COPY + MERGE, deletes, DELETE) against the emulator
    and a real PostgreSQL: after each, the table holds exactly the form's instances as the API lists them;
    edits, inserts, deletes and a move between cycles all arrive; the SQL steps run again change nothing."""
    import importlib.util
    import json
    import shutil

    import psycopg2

    from deyel_provider.hooks.deyel import DeyelHook

    folder = Path(os.environ["DEYEL_DEMO_OUTPUT"]) / "CRM_ACCOUNT" / "mirror"
    shutil.rmtree(folder, ignore_errors=True)
    dag = dagbag.get_dag("deyel_mirror_postgres")
    store = emulator.state.store
    hook = DeyelHook()

    def table() -> dict[str, dict]:
        with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=mirror_database) as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT id, dt_last_update, doc FROM deyel_crm_account")
                rows = cursor.fetchall()
        conn.close()
        assert all(
            int(doc["dtLastUpdate"]) == stamp and doc["idObjectValue"] == key for key, stamp, doc in rows
        )
        return {key: doc for key, _, doc in rows}

    def form() -> dict[str, dict]:
        return {record["idObjectValue"]: record for record in hook.iter_instances("CRM_ACCOUNT")}

    def cycle(hour: int) -> dict[str, dict]:
        emulator.advance(60)
        run = dag.test(logical_date=pendulum.datetime(2026, 12, 1, hour, tz="UTC"))
        assert run.state == "success"
        mirrored = table()
        assert mirrored == form()
        return mirrored

    import pendulum

    assert len(cycle(1)) == 50
    for instance_id in (4, 17):
        current = store.get("CRM_ACCOUNT", instance_id)
        store.update(
            "CRM_ACCOUNT",
            instance_id,
            {"dsNotes": "edited", "dtLastUpdate": current["dtLastUpdate"]},
            partial=True,
        )
    store.create("CRM_ACCOUNT", {"dsCompany": "New", "cdCountry": "AR"})
    for instance_id in (9, 30):
        store.delete("CRM_ACCOUNT", instance_id)
    second = cycle(2)
    assert len(second) == 49 and "9" not in second and second["4"]["dsNotes"] == "edited"
    created = store.create("CRM_ACCOUNT", {"dsCompany": "Short-lived"})[0]
    emulator.advance(60)
    cycle(3)
    store.delete("CRM_ACCOUNT", created)  # created and deleted between snapshots that both saw it
    third = cycle(4)
    assert str(created) not in third

    # Rerunning any run's SQL steps again, the oldest first (a full load holding rows deleted since): the
    # table does not move.
    spec = importlib.util.spec_from_file_location("mirror_example", DAGS_FOLDER / "deyel_mirror_postgres.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    changes = sorted((folder / "changes").iterdir(), key=lambda p: p.stat().st_mtime)
    gone = sorted((folder / "gone").iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(changes) == len(gone) == 4
    for path in changes:
        module.copy_then(path.as_uri(), "staging_changes", module.MERGE)
        assert table() == third
    for path in gone:
        module.copy_then(path.as_uri(), "staging_gone", module.REMEMBER_GONE, module.DELETE_GONE)
        assert table() == third
    lines = [json.loads(line) for path in gone for line in path.read_text().splitlines()]
    assert sorted(line["idObjectValue"] for line in lines) == sorted(["9", "30", str(created)])


@pytest.mark.dag
def test_the_partitioned_example_reads_each_hour_and_its_consumer_exactly_that_hours_file(
    deyel_conn, airflow_db, dagbag, capsys
):
    """``deyel_partitioned_extract`` under three partitions writes three files, each holding only the
    instances stamped in its hour; ``deyel_partitioned_consumer``, run for each partition with that
    partition's event (as its ``PartitionedAssetTimetable`` would), reads that hour's file only."""
    from deyel_provider.compat import AIRFLOW_VERSION

    if AIRFLOW_VERSION < (3, 2):
        pytest.skip("asset partitions are Airflow 3.2+")
    import json

    import pendulum
    from airflow import settings
    from airflow.models.asset import AssetEvent
    from sqlalchemy import select

    from deyel_provider.emulator import run_emulator
    from tests.support.helpers import partitioned_run

    producer = dagbag.get_dag("deyel_partitioned_extract")
    consumer = dagbag.get_dag("deyel_partitioned_consumer")
    folder = Path(os.environ["DEYEL_DEMO_OUTPUT"]) / "CRM_ACCOUNT" / "hourly"
    # 200 instances stamped over 3 h 20 min from 2026-01-01T00:00Z (the default emulator's 50 fill one hour).
    with run_emulator(records=200) as spread:
        deyel_conn(url=spread.url)
        for hour in range(3):
            start = pendulum.datetime(2026, 1, 1, hour, tz="UTC")
            key = start.strftime("%Y-%m-%dT%H")
            with partitioned_run(producer.dag_id, key, start):
                run = producer.test(run_after=start.add(hours=1), logical_date=None)
            assert run.state == "success"
            path = folder / f"{key}.jsonl"
            stamps = [int(json.loads(line)["dtLastUpdate"]) for line in path.read_text().splitlines()]
            low, high = start.int_timestamp * 1000, start.add(hours=1).int_timestamp * 1000
            assert stamps and all(low <= ms < high for ms in stamps)
            with settings.Session() as session:
                events = session.scalars(
                    select(AssetEvent).where(AssetEvent.source_run_id == run.run_id)
                ).all()
                assert [(e.partition_key, e.extra["path"]) for e in events] == [(key, path.as_uri())]
                event_ids = [e.id for e in events]

            capsys.readouterr()
            with (
                partitioned_run(consumer.dag_id, key, start),
                consumed_by_the_next_run(consumer.dag_id, event_ids),
            ):
                read = consumer.test(logical_date=None)
            assert read.state == "success"
            printed = [
                line for line in capsys.readouterr().out.splitlines() if "DEYEL-DEMO: partition" in line
            ]
            assert [line.split("DEYEL-DEMO: ", 1)[1] for line in printed] == [
                f"partition {key}: read {path.as_uri()}: {len(stamps)} records"
            ]
