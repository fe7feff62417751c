"""Partitioned runs (issue 27, item 1; issue 25, "Asset partitions"): under Airflow 3.2+ a run of a
``CronPartitionTimetable`` DAG reads the period its partition key names, its Asset event carries the key,
and the watermark is neither used nor moved; a key without a period is a typed error before any request.

``dag.test()`` makes manual runs, which carry no partition key: :func:`partitioned_run` gives the next run
of a DAG the key (and date) the scheduler gives a partitioned run, as the run is inserted. The emulator's
200 instances are stamped one a minute from 2026-01-01T00:00Z (shuffled), so each hour holds exactly 60.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest
from airflow.sdk import Asset

from deyel_provider.compat import AIRFLOW_VERSION
from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelConfigError, DeyelIncompleteError
from deyel_provider.extract.partitions import partition_period, partition_window
from deyel_provider.operators.extract import DeyelExtractOperator
from tests.support.dag_bundles import dag_bundle
from tests.support.helpers import outlet_events, partitioned_run

partitions = pytest.mark.skipif(AIRFLOW_VERSION < (3, 2), reason="asset partitions are Airflow 3.2+")

HOUR_MS = 3_600_000
#: The emulator's first dtLastUpdate (its ``updated_start_ms``): 2026-01-01T00:00:00Z.
DAY_MS = 1_767_225_600_000


@pytest.fixture
def emulator():
    """200 instances over 3 h 20 min from 2026-01-01T00:00Z: some in each of its first four hours."""
    with run_emulator(records=200) as running:
        yield running


def cron_partition(cron: str = "0 * * * *", **kwargs):
    from airflow.sdk import CronPartitionTimetable

    return CronPartitionTimetable(cron, **{"timezone": "UTC", **kwargs})


def context_of(timetable, key: str | None) -> dict:
    return {
        "dag": SimpleNamespace(timetable=timetable),
        "partition_key": key,
        "outlet_events": outlet_events(),
    }


# -- the period of a key -------------------------------------------------------------------------------------


def test_a_run_without_a_partition_key_has_no_partition_window():
    """Airflow 3.0/3.1 contexts (no ``partition_key``, a DAG run without the attribute) and non-partitioned
    runs (a None key) keep today's windows."""
    assert partition_window({}) is None
    assert partition_window({"dag_run": SimpleNamespace(run_id="manual")}) is None
    assert partition_window({"partition_key": None, "dag_run": SimpleNamespace(partition_key=None)}) is None


@partitions
@pytest.mark.parametrize(
    ("cron", "tz", "earliest", "latest"),
    [
        ("0 * * * *", "UTC", (2026, 1, 1, 0), (2026, 1, 1, 5)),
        ("0 * * * *", "Europe/Zurich", (2026, 3, 29, 0), (2026, 3, 29, 5)),  # spring forward: no 02:00
        ("30 0 * * *", "Europe/Zurich", (2026, 3, 27, 0), (2026, 4, 1, 0)),
        ("0 0 * * 1", "America/Sao_Paulo", (2026, 1, 1, 0), (2026, 3, 1, 0)),
        ("*/15 * * * *", "Asia/Kolkata", (2026, 1, 1, 0), (2026, 1, 1, 2)),
    ],
)
def test_each_key_names_the_period_up_to_the_timetables_next_partition(cron, tz, earliest, latest):
    """Checked against Airflow's own timetable: the partitions it makes, one after the other."""
    from airflow.serialization.encoders import coerce_to_core_timetable

    timetable = cron_partition(cron, timezone=tz)
    core = coerce_to_core_timetable(timetable)
    ticks = partition_dates(core, pendulum.datetime(*earliest, tz=tz), pendulum.datetime(*latest, tz=tz))
    assert len(ticks) >= 4
    for start, end in itertools.pairwise(ticks):
        key = core._format_key(start)
        assert partition_period(timetable, key) == (start, end)


def partition_dates(core, earliest, latest) -> list:
    """The partition dates Airflow's timetable makes from ``earliest`` to ``latest``, one after the other:
    ``iter_partition_dagrun_infos`` on 3.3+, the scheduler's ``next_dagrun_info_v2`` loop on 3.2."""
    if hasattr(core, "iter_partition_dagrun_infos"):
        return [
            info.partition_date for info in core.iter_partition_dagrun_infos(earliest=earliest, latest=latest)
        ]
    from airflow.timetables.base import TimeRestriction

    # As its scheduler holds them: in UTC (3.2 writes a key from the moment as held, so in UTC).
    earliest, latest = earliest.in_timezone("UTC"), latest.in_timezone("UTC")
    restriction, dates, last = TimeRestriction(earliest=earliest, latest=latest, catchup=True), [], None
    while (last := core.next_dagrun_info_v2(last_dagrun_info=last, restriction=restriction)) is not None:
        dates.append(last.partition_date)
    return dates


@partitions
@pytest.mark.skipif(AIRFLOW_VERSION < (3, 3), reason="Airflow 3.2 writes keys in UTC, where no hour repeats")
def test_the_hour_that_occurs_twice_when_dst_ends_is_refused_not_guessed():
    """The default key has no UTC offset: on 2026-10-25 in Zurich, ``02:00:00`` names two hours."""
    timetable = cron_partition(timezone="Europe/Zurich")
    with pytest.raises(DeyelConfigError, match="share the key '2026-10-25T02:00:00'"):
        partition_period(timetable, "2026-10-25T02:00:00")
    start, end = partition_period(timetable, "2026-10-25T03:00:00")
    assert (end - start).in_seconds() == 3600
    # A key with its UTC offset names each of the two.
    with_offset = cron_partition(timezone="Europe/Zurich", key_format="%Y-%m-%dT%H:%M:%S%z")
    first, second = (partition_period(with_offset, f"2026-10-25T02:00:00{z}") for z in ("+0200", "+0100"))
    assert first[1] == second[0] and (second[1] - first[0]).in_seconds() == 7200


@partitions
@pytest.mark.parametrize(
    ("timetable", "key", "message"),
    [
        (lambda: cron_partition(), "yesterday", "does not match the timetable's key_format"),
        (lambda: cron_partition(), "2026-01-01T05:30:00", "is not a tick of the timetable's cron"),
        (lambda: cron_partition(key_format="%Y-%m-%d"), "2026-01-01", "is coarser than its cron"),
        (lambda: None, "2026-01-01T05:00:00", r"timetable \(NoneType\) does not say which period"),
        (lambda: _asset_partitioned(), "2026-01-01T05:00:00", "PartitionedAssetTimetable"),
    ],
)
def test_a_key_without_a_period_is_a_config_error_before_any_request(
    timetable, key, message, deyel_conn, emulator, tmp_path
):
    operator = DeyelExtractOperator(
        task_id="extract", form="CRM_ACCOUNT", output=str(tmp_path / "out.jsonl"), asset=Asset("s3://a/b")
    )
    events = outlet_events()
    with pytest.raises(DeyelConfigError, match=message):
        operator.execute({**context_of(timetable(), key), "outlet_events": events})
    assert emulator.stats()["token_requests"] == emulator.stats()["api_requests"] == 0
    assert list(tmp_path.iterdir()) == []
    assert not events._by_key  # no event touched


def _asset_partitioned():
    from airflow.sdk import PartitionedAssetTimetable

    return PartitionedAssetTimetable(assets=Asset("s3://upstream/hourly"))


@partitions
def test_a_partition_ending_in_the_servers_future_is_refused_as_an_explicit_end_is(
    deyel_conn, emulator, tmp_path
):
    """The window still ends at the server's settled present at the latest: a partition not over yet fails
    (``run_offset=0`` on an hourly cron starts the run as its hour begins) and publishes nothing."""
    tomorrow = pendulum.from_timestamp(emulator.state.clock.now()).add(days=1).start_of("hour")
    operator = DeyelExtractOperator(task_id="extract", form="CRM_ACCOUNT", output=str(tmp_path / "o.jsonl"))
    with pytest.raises(DeyelIncompleteError, match="after the server's present"):
        operator.execute(context_of(cron_partition(), tomorrow.strftime("%Y-%m-%dT%H:%M:%S")))
    assert list(tmp_path.iterdir()) == []


# -- through dag.test() ----------------------------------------------------------------------------------


DAG_SOURCE = """
    import os

    import pendulum
    from airflow.sdk import DAG, Asset, CronPartitionTimetable

    from deyel_provider.operators.extract import DeyelExtractOperator

    with DAG(
        "hourly_partitions",
        schedule=CronPartitionTimetable("0 * * * *", timezone="UTC", run_offset=-1),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
    ):
        DeyelExtractOperator(
            task_id="extract",
            form="CRM_ACCOUNT",
            output=os.environ["DEYEL_PARTITION_OUTPUT"]
            + "/{{ (dag_run.partition_key or run_id) | replace(':', '') }}.jsonl",
            start_from="2026-01-01T00:00:00Z",
            asset=Asset(os.environ["DEYEL_PARTITION_ASSET"]),
        )
"""


@pytest.fixture
def hourly_dag(tmp_path, monkeypatch, airflow_db):
    """The DAG above, in a DAG bundle of its own (as test_watermarks does)."""
    load = dag_bundle(tmp_path / "dags", "partition-tests", monkeypatch)
    monkeypatch.setenv("DEYEL_PARTITION_OUTPUT", str(tmp_path / "lake"))
    monkeypatch.setenv("DEYEL_PARTITION_ASSET", (tmp_path / "lake").as_uri())
    return load("hourly_partitions", DAG_SOURCE)


def run_partition(dag, key: str) -> tuple[str, dict | None, list]:
    """Run partition ``key`` (an hourly ``run_offset=-1`` run starts as the next hour begins): the run's
    state, the task's XCom and the Asset events it emitted as ``(partition_key, extra)``.

    Read at once: ``dag.test()`` replaces the last run of the same logical date (None, for partitions)."""
    from airflow import settings
    from airflow.models.asset import AssetEvent
    from sqlalchemy import select

    date = pendulum.parse(key, tz="UTC") if key[:1].isdigit() else pendulum.datetime(2026, 1, 1, 5, tz="UTC")
    with partitioned_run(dag.dag_id, key, date):
        run = dag.test(run_after=date.add(hours=1), logical_date=None)
    summaries = [ti.xcom_pull(task_ids="extract") for ti in run.get_task_instances()]
    with settings.Session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run.run_id)).all()
        emitted = [(event.partition_key, event.extra) for event in events]
    return run.state, (summaries or [None])[0], emitted


def watermark_state() -> list[tuple]:
    """Every stored watermark (Airflow 3.3+ keeps them in the asset and task state stores)."""
    from airflow import settings
    from sqlalchemy import select

    from deyel_provider.extract.watermark import has_asset_state

    if not has_asset_state():
        return []
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.models.task_state_store import TaskStateStoreModel

    with settings.Session() as session:
        return sorted(
            repr(tuple(row))
            for model in (AssetStateStoreModel, TaskStateStoreModel)
            for row in session.execute(select(*model.__table__.columns))
        )


def stamps(path: Path) -> dict[str, int]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {(r := json.loads(line))["idObjectValue"]: int(r["dtLastUpdate"]) for line in lines}


@partitions
@pytest.mark.dag
def test_three_partitions_get_their_three_hours_the_key_on_the_event_and_the_watermark_stays(
    emulator, deyel_conn, hourly_dag, tmp_path
):
    # A manual run first: a watermark run (to the server's present), which the partitions must not use.
    manual = hourly_dag.test()
    assert manual.state == "success"
    before = watermark_state()
    assert before or AIRFLOW_VERSION < (3, 3)

    # What the server holds: the manual run read every instance (the emulator's writer is off).
    (full,) = (tmp_path / "lake").iterdir()
    held = stamps(full)
    assert len(held) == 200
    keys = ["2026-01-01T00:00:00", "2026-01-01T01:00:00", "2026-01-01T02:00:00"]
    seen: dict[str, int] = {}
    for hour, key in enumerate(keys):
        state, summary, events = run_partition(hourly_dag, key)
        assert state == "success"
        start, end = DAY_MS + hour * HOUR_MS, DAY_MS + (hour + 1) * HOUR_MS
        assert (summary["mode"], summary["partition_key"]) == ("partition", key)
        assert (summary["window_start"], summary["window_end"]) == (start, end)
        got = stamps(tmp_path / "lake" / f"{key.replace(':', '')}.jsonl")
        assert got == {i: ms for i, ms in held.items() if start <= ms < end} and len(got) > 30
        seen.update(got)
        # One event, for this partition, naming its window.
        assert [(pk, extra["partition_key"], extra["window_start"]) for pk, extra in events] == [
            (key, key, start)
        ]
    # The three hours hold every instance stamped before 03:00, and the fourth's are in none.
    assert seen == {i: ms for i, ms in held.items() if ms < DAY_MS + 3 * HOUR_MS} != held
    assert watermark_state() == before


@partitions
@pytest.mark.dag
def test_an_unparsable_key_fails_the_run_and_publishes_nothing(emulator, deyel_conn, hourly_dag, tmp_path):
    state, summary, events = run_partition(hourly_dag, "last hour")
    assert (state, summary, events) == ("failed", None, [])
    assert emulator.stats()["api_requests"] == emulator.stats()["token_requests"] == 0
    assert not (tmp_path / "lake").exists() or list((tmp_path / "lake").iterdir()) == []
