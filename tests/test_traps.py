"""Mistakes caught before they cost data, and errors that say what to do (issue 27): a search joined by ';',
an output folder the worker cannot write, a page_size above the server's cap, a template error naming the
parameter the user wrote; and less noise: progress with total, percentage and ETA, the window in ISO 8601,
the sensor's default_deferrable, deyel_conn_id templated everywhere."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from contextlib import contextmanager
from datetime import UTC, datetime

import pendulum
import pytest
from airflow.sdk import DAG

from deyel_provider.api.search import check_search
from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.progress import Progress
from deyel_provider.extract.run import extract
from deyel_provider.extract.spec import OutputSpec, ReadSpec
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.deyel import DeyelOperator, DeyelTokenOperator
from deyel_provider.operators.extract import DeyelExtractOperator
from deyel_provider.operators.upsert import DeyelUpsertOperator
from deyel_provider.sensors.deyel import DeyelInstanceSensor
from deyel_provider.wait.instance_state import InstanceQuery
from tests.support.helpers import outlet_events


def extract_task(output, **kwargs) -> DeyelExtractOperator:
    kwargs.setdefault("incremental_field", None)
    return DeyelExtractOperator(task_id="extract", form="CRM_ACCOUNT", output=str(output), **kwargs)


# -- search ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "search",
    [
        "cdCountry=eq:AR;qtEmployee=gte:100",
        "cdCountry=eq:AR ; qtEmployee=gte:100",
        "cdCountry=in:AR;UY;qtEmployee=gte:100",  # the in separator, then a clause joined by it
        "cdCountry=eq:AR&qtEmployee=gte:100",
        "cdCountry=eq:AR and qtEmployee=gte:100",
    ],
)
def test_a_clause_joined_by_another_separator_is_a_typed_error_naming_the_fix(search):
    with pytest.raises(DeyelConfigError, match="use , between clauses"):
        check_search(search)


@pytest.mark.parametrize(
    "search, fix",
    [
        ("cdCountry", "is not field=operator:value"),
        ("cdCountry=AR", "is not field=operator:value"),
        ("cdCountry=equals:AR", "unknown operator 'equals'"),
        (",cdCountry=eq:AR", "is not field=operator:value"),
    ],
)
def test_a_malformed_clause_or_an_unknown_operator_is_refused(search, fix):
    with pytest.raises(DeyelConfigError, match=fix):
        check_search(search)


@pytest.mark.parametrize(
    "search",
    [
        None,
        "",
        "cdCountry=eq:AR",
        "cdCountry=EQ:AR",
        "cdCountry=in:AR;UY;BR,qtEmployee=gte:100",  # ';' inside an in value is the in separator
        "cdCountry=nin:AR,UY",  # commas inside a value stay in it (no clause follows them)
        "dsCompany=like:Smith; Jones & Co",  # a value may hold ';' and '&' when no clause follows
        "lsAddress/dsCity=eq:buenos aires,dtLastUpdate=gte:1540782000000",
    ],
)
def test_valid_searches_pass_unchanged(search):
    assert check_search(search) == search


def test_a_search_joined_by_a_semicolon_publishes_nothing_and_asks_nothing(deyel_conn, emulator, tmp_path):
    """Before: success, 0 records, an empty file published and an Asset event, so downstream ran on nothing.
    Now: a typed error before the first request, no file, no event."""
    target = tmp_path / "crm.jsonl"
    events = outlet_events()
    task = extract_task(target, search="{{ params.search }}")
    task.search = "cdCountry=eq:AR;cdCountry=neq:UY"  # as rendered: the check at execute
    with pytest.raises(DeyelConfigError, match="use , between clauses"):
        task.execute({"outlet_events": events})
    assert os.listdir(tmp_path) == []
    assert len(events) == 0
    assert emulator.stats()["api_requests"] == 0
    # The same search with ',' is read (and the emulator agrees that it is the intended filter).
    result = extract_task(target, search="cdCountry=eq:AR,cdCountry=neq:UY").execute({})
    assert result["records"] > 0


def test_a_written_out_search_fails_the_dag_at_parse_time_a_templated_one_at_run_time(tmp_path):
    with pytest.raises(DeyelConfigError, match="use , between clauses"):
        extract_task(tmp_path / "x.jsonl", search="cdCountry=eq:AR;cdStatus=eq:OPEN")
    with pytest.raises(DeyelConfigError, match="use , between clauses"):
        DeyelInstanceSensor(task_id="wait", form="F", search="cdStatus=eq:A;cdCountry=eq:AR")
    extract_task(tmp_path / "x.jsonl", search="cdCountry=eq:{{ params.country }};x")  # checked once rendered
    DeyelInstanceSensor(task_id="wait", form="F", search="{{ params.search }}")


def test_the_hook_the_sensor_and_the_triggers_refuse_it_too(deyel_conn, emulator):
    with pytest.raises(DeyelConfigError, match="use , between clauses"):
        next(DeyelHook().iter_instances("CRM_ACCOUNT", search="cdCountry=eq:AR;qtEmployee=gte:1"))
    sensor = DeyelInstanceSensor(task_id="wait", form="CRM_ACCOUNT", search="{{ params.search }}")
    sensor.search = "cdStatus=eq:A;cdCountry=eq:AR"  # as rendered
    with pytest.raises(DeyelConfigError, match="use , between clauses"):
        sensor.poke({})
    with pytest.raises(DeyelConfigError, match="use , between clauses"):
        InstanceQuery.build("CRM_ACCOUNT", "cdStatus=eq:A;cdCountry=eq:AR")
    assert emulator.stats()["api_requests"] == 0


# -- output folders ---------------------------------------------------------------------------------------


@contextmanager
def unwritable(folder):
    """``folder`` made unwritable for this worker: read-only mode, and immutable when running as root (root
    ignores modes; the issue's user was not root, the test machines may be)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable:
        if shutil.which("chattr") is None:
            pytest.fail("running as root, chattr is needed to make a folder unwritable")
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_an_unwritable_output_folder_is_a_typed_error_naming_it(deyel_conn, emulator, tmp_path):
    """Before: a bare PermissionError naming crm.jsonl.tmp-<uuid>, after the server was read. Now a
    DeyelConfigError naming the parameter, the folder and the fix, before any request."""
    with unwritable(tmp_path / "locked") as folder:
        events = outlet_events()
        with pytest.raises(DeyelConfigError) as raised:
            extract_task(folder / "crm.jsonl").execute({"outlet_events": events})
        message = str(raised.value)
        assert message.startswith("output: ")
        assert repr(str(folder)) in message and "not writable" in message and "write permission" in message
        assert ".tmp-" not in message
        # Missing below it: it cannot be created there.
        with pytest.raises(DeyelConfigError, match=r"does not exist and .* cannot create it"):
            extract_task(folder / "sub" / "crm.jsonl").execute({})
        assert os.listdir(folder) == [] and len(events) == 0
    assert emulator.stats()["api_requests"] == 0


def test_an_output_folder_under_a_file_is_a_typed_error(deyel_conn, emulator, tmp_path):
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(DeyelConfigError, match="is a file, not a folder"):
        extract_task(tmp_path / "data" / "crm.jsonl").execute({})
    assert emulator.stats()["api_requests"] == 0


def test_a_folder_that_does_not_exist_yet_is_made(deyel_conn, emulator, tmp_path):
    result = extract_task(tmp_path / "new" / "deeper" / "crm.jsonl").execute({})
    assert result["records"] == 50 and (tmp_path / "new" / "deeper" / "crm.jsonl").exists()


# -- templates --------------------------------------------------------------------------------------------


def test_a_template_error_in_output_names_output_and_the_fix():
    """Before: Airflow's "'ts_nodash' is undefined" for the field 'output_path', a name the user never
    wrote. Now the message names ``output`` and what to use on runs without a logical date."""
    with DAG("t", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        task = extract_task("/data/deyel/{{ ts_nodash }}.jsonl")
    with pytest.raises(DeyelConfigError) as raised:
        task.render_template_fields({"params": {}})  # a manual run: no logical date, so no ts_nodash
    message = str(raised.value)
    assert message.startswith("output: ") and "output_path" not in message
    assert "'ts_nodash' is undefined" in message and "run_after" in message


def test_deyel_conn_id_is_templated_on_every_operator_and_the_sensor(deyel_conn, emulator, tmp_path):
    for kind in (DeyelOperator, DeyelTokenOperator, DeyelExtractOperator, DeyelUpsertOperator):
        assert "deyel_conn_id" in kind.template_fields, kind
    assert "deyel_conn_id" in DeyelInstanceSensor.template_fields
    deyel_conn("deyel_crm")
    with DAG("t", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), params={"conn": "crm"}):
        call = DeyelOperator(
            task_id="call", endpoint="/forms/CRM_ACCOUNT/instances/5", deyel_conn_id="deyel_{{ params.conn }}"
        )
        sensor = DeyelInstanceSensor(
            task_id="wait", form="CRM_ACCOUNT", deyel_conn_id="deyel_{{ params.conn }}", poke_interval=1
        )
    context = {"params": {"conn": "crm"}}
    call.render_template_fields(context)
    sensor.render_template_fields(context)
    assert call.deyel_conn_id == sensor.deyel_conn_id == "deyel_crm"
    assert call.execute(context)["idObjectValue"] == "5"
    assert call.hook.deyel_conn_id == "deyel_crm"
    assert sensor.poke(context)


# -- the sensor's default_deferrable ----------------------------------------------------------------------


def test_the_sensor_follows_airflows_default_deferrable(monkeypatch):
    """Before: always False unless passed. Now [operators] default_deferrable, as official sensors."""
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "true")
    assert DeyelInstanceSensor(task_id="a", form="F").deferrable is True
    assert DeyelInstanceSensor(task_id="b", form="F", deferrable=False).deferrable is False
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "false")
    assert DeyelInstanceSensor(task_id="c", form="F").deferrable is False
    assert DeyelInstanceSensor(task_id="d", form="F", deferrable=True).deferrable is True


# -- the XCom window, progress, the page cap --------------------------------------------------------------


def test_the_xcom_window_is_in_iso_8601_beside_epoch_ms(deyel_conn, emulator, tmp_path):
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, 6, 30, tzinfo=UTC)
    context = {"data_interval_start": start, "data_interval_end": end}
    result = extract_task(tmp_path / "day.jsonl", incremental_field="dtLastUpdate").execute(context)
    assert result["mode"] == "interval"
    assert (result["window_start"], result["window_end"]) == (1767225600000, 1767335400000)
    assert result["window_start_iso"] == "2026-01-01T00:00:00.000Z"
    assert result["window_end_iso"] == "2026-01-02T06:30:00.000Z"
    full = extract_task(tmp_path / "all.jsonl").execute({})
    assert full["window_start"] is full["window_start_iso"] is None
    assert full["window_end"] is full["window_end_iso"] is None


class Lines:
    """A logger that keeps the lines it is given."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args) -> None:
        self.lines.append(message % args)

    warning = info


def test_a_progress_line_has_total_percentage_and_eta():
    now = [100.0]
    lines = Lines()
    progress = Progress(10, lines, clock=lambda: now[0])
    progress.expect(1000)
    now[0] += 10
    progress.add(250)  # 250 in 10 s: 25/s, 750 left, 30 s
    assert lines.lines == [
        "progress: 1 slices, 250 of 1000 records (25%), 25 records/s, 10.0 s elapsed, ETA 30 s"
    ]
    # A count that the read passes (one counting the page) shows no percentage rather than a wrong one.
    progress.expect(100)
    now[0] += 10
    progress.add(250)
    assert lines.lines[-1] == "progress: 2 slices, 500 records, 25 records/s, 20.0 s elapsed"


def test_the_extraction_reads_the_total_from_the_servers_count(deyel_conn, tmp_path):
    """Before: "progress: 3 slices, 120 records, ..." with no total although the server sends a count."""
    with run_emulator(records=300, page_size_max=40) as emulator:
        deyel_conn(url=emulator.url)
        lines = Lines()
        result = extract(
            DeyelHook(),
            ReadSpec("CRM_ACCOUNT", page_size=40),
            OutputSpec(str(tmp_path / "out.jsonl")),
            progress=Progress(1e-9, lines),
        )
    assert result.records == 300
    progress = [line for line in lines.lines if line.startswith("progress: ")]
    assert progress and all(" of 300 records (" in line and ", ETA " in line for line in progress)
    published = [line for line in lines.lines if line.startswith("published out.jsonl: ")]
    assert len(published) == 1 and "300 of 300 records (100%)" in published[0]


def test_a_page_size_above_the_servers_cap_is_one_warning_and_read_at_the_cap(deyel_conn, tmp_path, caplog):
    """Before: silently capped. Now one warning naming page_size and the cap; the read is still complete."""
    with run_emulator(records=400, page_size_max=50, send_total=False) as emulator:
        deyel_conn(url=emulator.url)
        with caplog.at_level(logging.WARNING, logger="deyel_provider"):
            summary = extract_task(tmp_path / "out.jsonl", page_size=200).execute({})
    assert summary["records"] == 400
    warnings = [r.getMessage() for r in caplog.records if "page_size=" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("page_size=200 is above what the server sends per response, 50")
    # At or below the cap: no warning.
    caplog.clear()
    with run_emulator(records=400, page_size_max=50, send_total=False) as emulator:
        deyel_conn(url=emulator.url)
        with caplog.at_level(logging.WARNING, logger="deyel_provider"):
            extract_task(tmp_path / "out.jsonl", page_size=50).execute({})
    assert not [r for r in caplog.records if "page_size=" in r.getMessage()]


# -- make airflow -----------------------------------------------------------------------------------------


def test_make_airflow_takes_a_dags_folder_and_a_fixed_emulator_port(tmp_path, capsys):
    """Before: only dags_examples/, and the emulator on a random port (a connection typed into the UI broke
    at every restart). Now DAGS=... and EMULATOR_PORT=... (8765 by default)."""
    import socket

    from scripts import airflow_local

    makefile = (airflow_local.ROOT / "Makefile").read_text()
    assert "--emulator-port $(EMULATOR_PORT) $(if $(DAGS),--dags $(DAGS))" in makefile
    assert airflow_local.EMULATOR_PORT == 8765 and "EMULATOR_PORT ?= 8765" in makefile
    default = airflow_local.options(["--emulator-port", "0"])  # 8765 may be in use on a test machine
    assert default.dags == [airflow_local.ROOT / "dags_examples"]
    mine = tmp_path / "my_dags"
    mine.mkdir()
    chosen = airflow_local.options(["--dags", str(mine), "dags_examples", "--emulator-port", "0"])
    assert chosen.dags == [mine, airflow_local.Path("dags_examples")] and chosen.emulator_port == 0
    with pytest.raises(SystemExit):
        airflow_local.options(["--dags", str(tmp_path / "missing")])
    assert "no such folder" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit):
            airflow_local.options(["--emulator-port", str(taken.getsockname()[1])])
    assert "is taken" in capsys.readouterr().err
