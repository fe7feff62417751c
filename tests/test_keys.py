"""Every undocumented key a setting, found by the probe (issue 20, findings 6 and 7): the id key of listed
instances (``id_field``), the date literal of ``search`` (``date_literal``), the unit of ``dtLastUpdate``, the
``in`` separator and the clocks. Real HTTP against the emulator's switches and a stand-in server written
differently (ids as JSON numbers under ``id``, no links, its own search parser and paging)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow.parquet as pq
import pytest

from deyel_provider.emulator import run_emulator
from deyel_provider.emulator.forms import TARGET_FORM
from deyel_provider.exceptions import (
    DeyelBadResponseError,
    DeyelConfigError,
    DeyelIncompleteError,
    DeyelRequestError,
)
from deyel_provider.extract.run import extract
from deyel_provider.extract.spec import OutputSpec, ReadSpec
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.load.upsert import load_records as upsert
from deyel_provider.operators.extract import DeyelExtractOperator
from deyel_provider.probe import main
from deyel_provider.wait.instance_state import InstanceQuery, probe
from tests.support.helpers import connection_json, send_json
from tests.support.servers import StandInServer

FORM = "CRM_ACCOUNT"
RECORDS = 60
ALL_IDS = [str(i) for i in range(1, RECORDS + 1)]


@contextlib.contextmanager
def served(deyel_conn, conn_extra=None, **settings):
    """An emulator with ``settings`` and ``deyel_default`` (memory cache, ``conn_extra``) pointing at it."""
    with run_emulator(records=settings.pop("records", RECORDS), **settings) as emulator:
        deyel_conn(url=emulator.url, extra={"cache": "memory", **(conn_extra or {})})
        yield emulator


def full_load(path, fmt="jsonl", form=FORM):
    task = DeyelExtractOperator(
        task_id="extract", form=form, output=str(path), format=fmt, incremental_field=None, page_size=25
    )
    return task.execute({})


def jsonl_ids(path, key: str) -> list[str]:
    return sorted((str(json.loads(line)[key]) for line in path.read_text().splitlines()), key=int)


def parquet_ids(path, key: str) -> list[str]:
    return sorted((str(v) for v in pq.read_table(path).column(key).to_pylist()), key=int)


def probe_json(capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()  # what the test printed before (Airflow 3.0 logs the hook's token line to stdout)
    code = main(["--conn-id", "deyel_default", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def finding(report: dict, topic: str) -> dict:
    (found,) = [f for f in report["findings"] if f["topic"] == topic]
    return found


# -- finding 7: a server keying instances by `id` ------------------------------------------------------------


def test_without_id_field_an_id_keyed_server_fails_typed_naming_the_setting(deyel_conn, tmp_path):
    """What the issue saw: "an instance has no 'idObjectValue'" and no setting to fix it. Now the message
    names the setting, in the extraction (both formats) and the write-back."""
    with served(deyel_conn, id_key="id") as emulator:
        for fmt in ("jsonl", "parquet"):
            with pytest.raises(DeyelIncompleteError, match="'id_field' extra"):
                full_load(tmp_path / f"out.{fmt}", fmt)
            assert not list(tmp_path.iterdir())  # nothing published
        emulator.state.store.create(TARGET_FORM, {"cdCustomer": "C-1", "dsName": "One"})
        # The key search's page walker finds the missing id first (an incomplete listing, typed either way).
        with pytest.raises((DeyelBadResponseError, DeyelIncompleteError), match="'id_field' extra"):
            upsert(DeyelHook(), TARGET_FORM, [{"cdCustomer": "C-1", "dsName": "Uno"}], "cdCustomer")
        assert emulator.methods().get("PATCH", 0) == 0


def test_with_id_field_an_id_keyed_server_is_extracted_and_written_back(deyel_conn, tmp_path):
    with served(deyel_conn, {"id_field": "id"}, id_key="id") as emulator:
        result = full_load(tmp_path / "out.jsonl")
        assert result["records"] == RECORDS
        assert jsonl_ids(tmp_path / "out.jsonl", "id") == ALL_IDS
        assert "idObjectValue" not in (tmp_path / "out.jsonl").read_text()
        full_load(tmp_path / "out.parquet", "parquet")
        assert parquet_ids(tmp_path / "out.parquet", "id") == ALL_IDS

        store = emulator.state.store
        first, _ = store.create(TARGET_FORM, {"cdCustomer": "C-1", "dsName": "One"})
        # A round trip: the record as extracted (its "id" included) written back with a change.
        DeyelExtractOperator(
            task_id="x", form=TARGET_FORM, output=str(tmp_path / "c.jsonl"), incremental_field=None
        ).execute({})
        (row,) = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
        assert row["id"] == str(first)
        loaded = upsert(
            DeyelHook(),
            TARGET_FORM,
            [{**row, "dsName": "Uno"}, {"cdCustomer": "C-2", "dsName": "Two"}],
            "cdCustomer",
        )
        assert (loaded.updated, loaded.created, loaded.unchanged) == (1, 1, 0)
        assert store.get(TARGET_FORM, first)["dsName"] == "Uno"
        assert "id" not in store.get(TARGET_FORM, first)  # the server's key is not sent back as a field


@pytest.mark.parametrize("value", ["", "id,name", "id=1", " "])
def test_an_id_field_that_cannot_name_a_key_is_refused(deyel_conn, value):
    from deyel_provider.exceptions import DeyelConfigError

    deyel_conn(extra={"id_field": value or "a:b"})
    with pytest.raises(DeyelConfigError, match="'id_field' must be the key holding an instance's id"):
        DeyelHook().config  # noqa: B018


@pytest.mark.parametrize("id_field", ["cdCountry", "cdInstanceOwner"])
@pytest.mark.parametrize("page_size", [100, 25])  # the window in one response, or sliced and paged
def test_an_id_field_that_is_not_unique_fails_typed_instead_of_dropping_instances(
    deyel_conn, tmp_path, id_field, page_size
):
    """Review R5: a key many instances share (a country) made distinct instances "repeats": records 10 of
    50 and a success. One response is a consistent snapshot: the same id twice in it means no id."""
    with served(deyel_conn, {"id_field": id_field}):
        with pytest.raises(DeyelConfigError, match=f"'id_field' extra names '{id_field}'"):
            extract(DeyelHook(), ReadSpec(FORM, page_size=page_size), OutputSpec(str(tmp_path / "all.jsonl")))
        with pytest.raises(DeyelConfigError, match=f"'id_field' extra names '{id_field}'"):
            list(DeyelHook().iter_instances(FORM, page_size=page_size))
    assert not list(tmp_path.iterdir())  # nothing published


def test_the_sensors_count_refuses_an_id_field_that_is_not_unique(deyel_conn):
    """The sensor counts matches by id across pages: a shared key would count one per country."""
    with served(deyel_conn, {"id_field": "cdCountry"}):
        with pytest.raises(DeyelConfigError, match="'id_field' extra names 'cdCountry'"):
            # More than there are: the count reads on (and counts ids) after the first page.
            probe(DeyelHook(), InstanceQuery.build(FORM, None, min_count=RECORDS + 1, max_instances=1))


def test_an_id_field_equal_to_the_incremental_field_is_refused(deyel_conn, tmp_path):
    with served(deyel_conn, {"id_field": "dtLastUpdate"}) as emulator:
        with pytest.raises(DeyelConfigError, match=r"'id_field'.*incremental field 'dtLastUpdate'"):
            extract(DeyelHook(), ReadSpec(FORM), OutputSpec(str(tmp_path / "all.jsonl")))
        assert emulator.methods().get("GET", 0) == 0  # refused before any request
    assert not list(tmp_path.iterdir())


def test_the_sensor_reports_ids_under_the_servers_key_and_searches_on_it(deyel_conn):
    with served(deyel_conn, {"id_field": "id"}, id_key="id"):
        found = probe(DeyelHook(), InstanceQuery.build(FORM, "id=in:3;5", min_count=2, max_instances=2))
    assert (found.count, found.instances) == (2, ({"id": "3"}, {"id": "5"}))


def test_the_sensor_reports_the_id_itself_with_id_field_links(deyel_conn):
    """Review: with ``id_field: links`` the sensor's XCom held the raw ``links`` list as the id. Now the id
    taken from the self link, under ``idObjectValue`` (docs/operators.md), as on a server keying it so."""
    with served(deyel_conn, {"id_field": "links"}, id_in_links_only=True):
        listed = next(
            iter(DeyelHook().request("GET", f"/forms/{FORM}/instances", params={"pageSize": 2}).json())
        )
        found = probe(
            DeyelHook(), InstanceQuery.build(FORM, min_count=2, max_instances=2, fields=["dsCompany"])
        )
    first = found.instances[0]
    assert first == {
        "idObjectValue": listed["links"][0]["href"].rsplit("/", 1)[1],
        "dsCompany": listed["dsCompany"],
    }
    assert [set(i) for i in found.instances] == [{"idObjectValue", "dsCompany"}] * 2


def test_the_emulators_own_routes_work_with_another_id_key(deyel_conn):
    with served(deyel_conn, {"id_field": "id"}, id_key="id") as emulator:
        hook = DeyelHook()
        one = hook.get_instance(FORM, 7)
        assert one["id"] == "7" and "idObjectValue" not in one
        hook.update_instance(FORM, 7, {"dsNotes": "patched", "dtLastUpdate": one["dtLastUpdate"]})
        again = hook.get_instance(FORM, 7)
        hook.update_instance(FORM, 7, {**again, "dsNotes": "put"}, partial=False)
        assert hook.get_instance(FORM, 7)["dsNotes"] == "put"
        created = hook.create_instance(FORM, {"dsCompany": "New"})
        assert created["id"] == created["value"] == str(RECORDS + 1)
        assert [i["id"] for i in hook.iter_instances(FORM, search=f"id=eq:{created['id']}")] == [
            created["id"]
        ]
        hook.delete_instance(FORM, created["id"])
        assert str(RECORDS + 1) not in {str(i) for i in emulator.state.store.all_ids(FORM)}


def test_ids_only_in_the_self_link_are_read_with_id_field_links(deyel_conn, tmp_path):
    """A server that keys no id in its listings: ``id_field: links`` takes it from the self link's href."""
    with served(deyel_conn, id_in_links_only=True) as emulator:
        with pytest.raises(DeyelIncompleteError, match="'id_field' extra"):
            full_load(tmp_path / "out.jsonl")
        deyel_conn(url=emulator.url, extra={"cache": "memory", "id_field": "links"})
        assert full_load(tmp_path / "out.jsonl")["records"] == RECORDS
        rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert sorted((r["links"][0]["href"].rsplit("/", 1)[1] for r in rows), key=int) == ALL_IDS
        assert all("idObjectValue" not in r for r in rows)
        first, _ = emulator.state.store.create(TARGET_FORM, {"cdCustomer": "C-1", "dsName": "One"})
        loaded = upsert(DeyelHook(), TARGET_FORM, [{"cdCustomer": "C-1", "dsName": "Uno"}], "cdCustomer")
        assert loaded.updated == 1
        assert emulator.state.store.get(TARGET_FORM, first)["dsName"] == "Uno"


def test_the_write_back_searches_keys_with_the_connections_in_separator(deyel_conn):
    """A server splitting ``in`` values on ',': with the extra set, three existing keys are matched by one
    search and left alone (with ';' none would match, and each would be created a second time)."""
    with served(deyel_conn, {"in_separator": ","}, in_separator=",") as emulator:
        rows = [{"cdCustomer": f"C-{i}", "dsName": f"name {i}"} for i in range(3)]
        for row in rows:
            emulator.state.store.create(TARGET_FORM, dict(row))
        loaded = upsert(DeyelHook(), TARGET_FORM, rows, "cdCustomer")
        assert (loaded.unchanged, loaded.created) == (3, 0)
        # One search, and the page of one that proves the count header counts the search (the page walker).
        assert emulator.methods() == {"GET": 2}


# -- finding 6: date literals and the unit of dtLastUpdate ---------------------------------------------------


def test_an_iso_literal_server_is_read_with_date_literal_iso_and_named_without(deyel_conn, tmp_path):
    """The emulator served ISO literals already; the provider got HTTP 400 there."""
    with served(deyel_conn, date_format="iso") as emulator:
        with pytest.raises(DeyelRequestError, match="date_literal extra"):
            full_load(tmp_path / "out.jsonl")
        deyel_conn(url=emulator.url, extra={"cache": "memory", "date_literal": "iso"})
        result = full_load(tmp_path / "out.jsonl")
        assert result["records"] == RECORDS
        assert jsonl_ids(tmp_path / "out.jsonl", "idObjectValue") == ALL_IDS
        # A window too: its bounds go out as ISO text, and it holds exactly its instances.
        reader = DeyelHook().sliced_reader(FORM, page_size=7)
        start = 1767225600000
        window = [r for piece in reader.read(start, start + 10 * 60_000) for r in piece.records]
        expected = sorted(i for i, v in emulator_updated(emulator).items() if start <= v < start + 600_000)
        assert sorted(r["idObjectValue"] for r in window) == expected and expected


def test_the_change_trigger_writes_its_bounds_in_the_connections_date_literal(deyel_conn):
    """The trigger's own searches (``dtLastUpdate=gte:<mark>``) go out as ISO text on such a server."""
    from tests.support.change_trigger import AssetState, next_event, watcher, watching

    with served(
        deyel_conn, {"date_literal": "iso"}, date_format="iso", empty_forms="PURCHASE_REQUEST"
    ) as emu:
        state = AssetState()
        trigger = watcher(state)

        async def scenario() -> dict:
            events = trigger.run()
            waiting = asyncio.ensure_future(next_event(events))
            await watching(trigger, state)
            await asyncio.to_thread(DeyelHook().create_instance, "PURCHASE_REQUEST", {"cdStatus": "PENDING"})
            emu.advance(120)  # past any settle margin
            event = await waiting
            await events.aclose()
            return event

        event = asyncio.run(scenario())
    assert event["count"] == 1


def emulator_updated(emulator) -> dict[str, int]:
    generator = emulator.state.store._generator
    return {str(i + 1): generator.updated_ms(i) for i in range(RECORDS)}


@pytest.mark.parametrize("window", ["full load", "a past data interval"])
def test_an_incremental_field_in_epoch_seconds_is_a_typed_error_not_zero_records(
    deyel_conn, tmp_path, window
):
    """Finding 6: every run succeeded with 0 records. A past interval's window is empty on such a server
    (its bounds compared as seconds lie in the far future): the check samples one older instance."""
    with served(deyel_conn, updated_unit="s"):
        task = DeyelExtractOperator(task_id="x", form=FORM, output=str(tmp_path / "out.jsonl"), page_size=25)
        if window == "full load":
            task.incremental_field = None
            context = {}
        else:
            context = {
                "data_interval_start": datetime(2026, 1, 1, tzinfo=UTC),
                "data_interval_end": datetime(2026, 1, 1, 1, tzinfo=UTC),
            }
        with pytest.raises(DeyelIncompleteError, match=r"epoch seconds.*incremental_field"):
            task.execute(context)
        assert not (tmp_path / "out.jsonl").exists()


#: Scales of a dtLastUpdate sent in another unit than epoch ms, and what the error must name.
FINER_UNITS = [(1000, "microseconds"), (1_000_000, "nanoseconds")]


def read_all(reader, start, end=None):
    return [r for piece in reader.read(start, end, end_at_server_time=end is None) for r in piece.records]


@pytest.mark.parametrize("scale, unit", FINER_UNITS)
@pytest.mark.parametrize("window", ["watermark", "past interval"])
def test_an_incremental_field_in_micro_or_nanoseconds_is_a_typed_error_not_zero_records(
    stand_in, scale, unit, window
):
    """Review R2: a stand-in stamping in microseconds (or ns) made every watermark run read 0 instances and
    succeed (the whole-window probe dropped every value at or after the window's end). A value further
    after the server's Date than max_clock_skew_seconds is no moment yet: a typed error naming the unit."""
    server = stand_in({"id_field": "id"})
    for row in server.rows.values():
        row["dtLastUpdate"] = str(int(row["dtLastUpdate"]) * scale)  # the same moments, in a finer unit
    now = int(time.time() * 1000)
    start = now - 2 * 86_400_000  # every instance changed after it
    reader = DeyelHook().sliced_reader(FORM, page_size=10)
    with pytest.raises(DeyelIncompleteError, match=rf"{unit}.*clock.*incremental_field"):
        read_all(reader, start, None if window == "watermark" else now - 3_600_000)


@pytest.mark.parametrize("send_date", [True, False])
def test_instances_stamped_by_a_clock_running_ahead_are_a_typed_error(stand_in, send_date):
    """The same check, a clock (not a unit) an hour ahead of the server's Date (of this worker's clock, on
    a server sending no Date): never a silent drop."""
    server = stand_in({"id_field": "id"}, send_date=send_date)
    for row in server.rows.values():
        row["dtLastUpdate"] = str(int(row["dtLastUpdate"]) + 25 * 3_600_000)  # an hour after the present
    reader = DeyelHook().sliced_reader(FORM, page_size=10)
    said = "the server's Date" if send_date else r"this worker's clock \(no Date header\)"
    with pytest.raises(DeyelIncompleteError, match=rf"after {said}.*clock.*running ahead"):
        read_all(reader, int(time.time() * 1000) - 2 * 86_400_000)


@pytest.mark.parametrize("ahead_ms", [25 * 3_600_000, None])
def test_the_fan_out_plan_checks_the_unit_and_the_clock_as_one_read_does(stand_in, tmp_path, ahead_ms):
    """The group's plan asks the watermark window with no upper bound, as one task's read does, but did not
    check what it saw: instances stamped by a clock running ahead fell after the plan's end, in no part, and
    the group published without them (the parts' own checks see only values below their ends; all of them
    in microseconds, the parts' empty first responses tell). Now the plan fails as the read does. (Like one
    task's read, it sees only its first response: such instances listed beyond it go unseen.)"""
    from deyel_provider.extract.fan_out import plan_slices, read_part
    from deyel_provider.extract.spec import OutputSpec, ReadSpec, WindowSpec

    server = stand_in({"id_field": "id"})
    rows = sorted(server.rows.values(), key=lambda row: int(row["id"]))
    for row in rows[:3] if ahead_ms else rows:  # listed first: in the plan's (first) response
        value = int(row["dtLastUpdate"])
        row["dtLastUpdate"] = str(value + ahead_ms if ahead_ms else value * 1000)
    said = r"clock.*running ahead" if ahead_ms else r"microseconds"
    read, output = ReadSpec(FORM, page_size=10), OutputSpec(str(tmp_path / "out.jsonl"))
    start = int(time.time() * 1000) - 2 * 86_400_000
    with pytest.raises(DeyelIncompleteError, match=said):
        planned = plan_slices(DeyelHook(), read, WindowSpec(start, None, end_at_server_time=True), 3)
        for number, bounds in enumerate(planned["slices"]):
            read_part(DeyelHook(), read, output, bounds, number, "dag\nrun\ngroup")


def test_the_future_check_costs_no_request_on_a_millisecond_server(stand_in):
    """The happy path: one response holds the window (its total proven), the check adds no request."""
    server = stand_in({"id_field": "id"})
    reader = DeyelHook().sliced_reader(FORM, page_size=100)
    got = read_all(reader, int(time.time() * 1000) - 2 * 86_400_000)
    assert (len(got), reader.stats.requests, server.gets) == (30, 2, 2)  # the probe and its proof


@pytest.mark.parametrize("unit", ["us", "ns"])
@pytest.mark.parametrize("window", ["watermark", "past interval"])
def test_the_emulator_in_micro_or_nanoseconds_fails_a_window_typed(deyel_conn, unit, window):
    """The emulator's switch: a past interval reads empty there (its bounds read as micro- or nanoseconds
    lie in 1970), and so does everything before it: one future instance is sampled, and refused."""
    with served(deyel_conn, updated_unit=unit) as emulator:
        reader = DeyelHook().sliced_reader(FORM, page_size=25)
        start = 1767225600000  # the emulator's first stamp
        with pytest.raises(DeyelIncompleteError, match=r"(micro|nano)seconds.*incremental_field"):
            read_all(reader, start, None if window == "watermark" else start + 3_600_000)
        assert emulator.methods() == {"GET": 1 if window == "watermark" else 3}


@pytest.mark.parametrize("unit", ["s", "iso"])
def test_the_emulator_sends_dtlastupdate_in_its_unit_and_locks_on_it(deyel_conn, unit):
    from deyel_provider.exceptions import DeyelConflictError

    with served(deyel_conn, updated_unit=unit, updated_order="id"):
        hook = DeyelHook()
        one = hook.get_instance(FORM, 1)
        assert one["dtLastUpdate"] == ("1767225600" if unit == "s" else "2026-01-01T00:00:00.000Z")
        listed = next(iter(hook.request("GET", f"/forms/{FORM}/instances", params={"pageSize": 1}).json()))
        assert listed["dtLastUpdate"] == one["dtLastUpdate"]
        hook.update_instance(FORM, 1, {"dsNotes": "once", "dtLastUpdate": one["dtLastUpdate"]})
        with pytest.raises(DeyelConflictError):
            hook.update_instance(FORM, 1, {"dsNotes": "twice", "dtLastUpdate": one["dtLastUpdate"]})
        assert hook.get_instance(FORM, 1)["dsNotes"] == "once"


def test_an_incremental_field_in_iso_text_is_a_typed_error(deyel_conn, tmp_path):
    with served(deyel_conn, updated_unit="iso"):
        with pytest.raises(DeyelIncompleteError, match=r"ISO 8601 text.*incremental_field"):
            full_load(tmp_path / "out.jsonl")


# -- the probe -----------------------------------------------------------------------------------------------


def test_the_probe_says_which_key_holds_the_id_and_prints_it_among_the_extras(deyel_conn, capsys):
    """What the issue saw: every check ok and "nothing to change" against a server keyed by `id`."""
    with served(deyel_conn, id_key="id"):
        assert main(["--conn-id", "deyel_default"]) == 0
        out = capsys.readouterr().out
        assert "ok    id key      id: the instance id (its self link ends with it)" in out
        assert '"id_field": "id"' in out.split("Differs from the connection now:")[1]
        assert "nothing to change" not in out


def test_the_extras_the_probe_prints_make_an_unlike_server_work(deyel_conn, capsys, tmp_path):
    """Ids under ``id``, ISO literals, ',' between in values: set what the probe printed, and the probe has
    nothing left to change while extraction and write-back work."""
    unlike = {"id_key": "id", "date_format": "iso", "in_separator": ","}
    with served(deyel_conn, **unlike) as emulator:
        _, first = probe_json(capsys)
        extras = first["extras"]
        assert {k: extras[k] for k in ("id_field", "date_literal", "in_separator")} == {
            "id_field": "id",
            "date_literal": "iso",
            "in_separator": ",",
        }
        deyel_conn(url=emulator.url, extra={"cache": "memory", **extras})
        main(["--conn-id", "deyel_default"])
        assert "The connection already says so: nothing to change." in capsys.readouterr().out
        assert full_load(tmp_path / "out.jsonl")["records"] == RECORDS
        rows = [{"cdCustomer": f"C-{i}", "dsName": f"name {i}"} for i in range(3)]
        for row in rows:
            emulator.state.store.create(TARGET_FORM, dict(row))
        loaded = upsert(DeyelHook(), TARGET_FORM, [*rows[:2], {**rows[2], "dsName": "new"}], "cdCustomer")
        assert (loaded.unchanged, loaded.updated, loaded.created) == (2, 1, 0)


def test_the_probe_finds_ids_given_only_in_links(deyel_conn, capsys):
    with served(deyel_conn, id_in_links_only=True):
        code, report = probe_json(capsys)
    assert (code, report["extras"]["id_field"]) == (0, "links")


def test_the_probe_finds_the_date_literal_search_accepts(deyel_conn, capsys):
    with served(deyel_conn, date_format="iso"):
        code, report = probe_json(capsys)
    assert (code, report["extras"]["date_literal"]) == (0, "iso")
    assert "epoch_ms refused (400" in finding(report, "date")["text"]


@pytest.mark.parametrize(
    "unit, said",
    [
        ("s", "epoch seconds"),
        ("iso", "ISO 8601 text"),
        ("us", "epoch microseconds"),  # review R2b: the probe crashed (exit 3) building a date of year 58897
        ("ns", "epoch nanoseconds"),
    ],
)
def test_the_probe_fails_a_dtlastupdate_not_in_milliseconds(deyel_conn, capsys, unit, said):
    with served(deyel_conn, updated_unit=unit):
        code, report = probe_json(capsys)
    assert code == 1
    updated = finding(report, "updated")
    assert updated["level"] == "FAIL" and said in updated["text"] and "incremental_field" in updated["text"]


def test_the_probe_reports_a_wrong_in_separator_and_the_one_that_works(deyel_conn, capsys):
    """The connection says '|', the server splits on ',': a search for two ids finds neither with '|'."""
    with served(deyel_conn, {"in_separator": "|"}, in_separator=","):
        code, report = probe_json(capsys)
    assert (code, report["extras"]["in_separator"]) == (0, ",")
    said = finding(report, "in")
    assert said["level"] == "warn"
    assert "idObjectValue=in:1,2 answers both" in said["text"] and "'|' found 0 of the 2" in said["text"]


def test_the_probe_reports_a_separator_that_works(deyel_conn, capsys):
    with served(deyel_conn):
        code, report = probe_json(capsys)
    assert (code, report["extras"]["in_separator"], finding(report, "in")["level"]) == (0, ";", "ok")


def test_the_probe_reports_a_date_header_ahead_and_suggests_a_settle_margin(deyel_conn, capsys):
    with served(deyel_conn, date_offset_ms=90_000):
        code, report = probe_json(capsys)
    clock = finding(report, "clock")
    assert code == 0 and clock["level"] == "warn"
    skew = float(re.search(r"Date ([0-9.]+) s ahead of this machine's clock", clock["text"])[1])
    assert 88 <= skew <= 90
    assert report["extras"]["settle_seconds"] == 92  # the whole seconds of the skew, plus 2 s


def test_the_probe_reports_stamps_after_the_servers_date(deyel_conn, capsys):
    """A Date header 30 s behind the clock that stamps instances: the newest stamp lies after Date."""
    with served(deyel_conn, date_offset_ms=-30_000) as emulator:
        created = DeyelHook().create_instance(FORM, {"dsCompany": "Just now"})
        emulator.reset()
        code, report = probe_json(capsys)
    clock = finding(report, "clock")
    assert code == 0 and clock["level"] == "warn"
    stamp = datetime.fromtimestamp(int(created["dtLastUpdate"]) / 1000, UTC)
    assert (
        f"newest dtLastUpdate {stamp.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}"
        in clock["text"]
    )
    assert "after Date" in clock["text"] and "behind this machine's clock" in clock["text"]


def test_the_probe_says_the_clocks_agree_on_the_default_emulator(deyel_conn, capsys):
    with served(deyel_conn, updated_order="id"):
        code, report = probe_json(capsys)
    clock = finding(report, "clock")
    newest = datetime.fromtimestamp((1767225600000 + (RECORDS - 1) * 60_000) / 1000, UTC)
    assert (code, clock["level"]) == (0, "ok")
    assert clock["text"] == (
        "Date agrees with this machine's clock (within its 1 s resolution); newest dtLastUpdate "
        f"{newest.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}, not after Date"
    )
    assert "settle_seconds" not in report["extras"]


# -- a stand-in server written differently ---------------------------------------------------------------


class IdServer(StandInServer):
    """Not the emulator: ids are JSON numbers under ``id``, instances carry no links, search is parsed by a
    regular expression of its own (``eq``, ``in`` with ``;``, ``gte``/``lt`` on dtLastUpdate written as
    ``literal`` says: epoch ms or ISO), pages by ``page``/``pageSize``, PATCH with an optimistic lock."""

    def __init__(
        self, records: int = 30, literal: str = "epoch_ms", search_ids: bool = True, send_date: bool = True
    ) -> None:
        super().__init__(("127.0.0.1", 0), _IdHandler)
        base = int(time.time() * 1000) - 86_400_000
        self.rows = {
            n: {"id": n, "cdCustomer": f"K{n}", "dsName": f"name {n}", "dtLastUpdate": str(base + n * 1000)}
            for n in range(1, records + 1)
        }
        self.literal = literal
        self.search_ids = search_ids
        self.send_date = send_date
        self.lock = threading.Lock()
        self.patches = 0
        self.gets = 0  # listings and reads served (the happy path's cost is asserted)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


_CLAUSE = re.compile(r"(\w+)=(eq|in|gte|lt):([^,]*)")


class _IdHandler(BaseHTTPRequestHandler):
    server: IdServer

    def log_message(self, *args):
        pass

    def _send(self, body, status=200, headers=()):
        send_json(self, body, status=status, headers=headers, date=self.server.send_date)

    def _date(self, raw: str) -> int:
        if self.server.literal == "iso":
            return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000)
        return int(raw)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send({"access_token": "stand-in-token-0123456789", "token_type": "Bearer", "expires_in": 3600})

    def do_GET(self):
        self.server.gets += 1
        parts = urlsplit(self.path)
        tail = parts.path.rstrip("/").rsplit("/", 1)[-1]
        with self.server.lock:
            rows = [dict(r) for _, r in sorted(self.server.rows.items())]
        if tail.isdigit():
            match = [r for r in rows if r["id"] == int(tail)]
            self._send(
                match[0] if match else {"errors": [{"message": "no such instance"}]}, 200 if match else 404
            )
            return
        query = dict(parse_qsl(parts.query))
        if not self.server.search_ids and re.search(r"(^|,)id=", query.get("search", "")):
            self._send({"errors": [{"message": "id is not a field", "attribute-name": "search"}]}, 400)
            return
        try:
            for name, op, raw in _CLAUSE.findall(query.get("search", "")):
                raw = unquote(raw)
                if op == "eq":
                    rows = [r for r in rows if str(r.get(name)) == raw]
                elif op == "in":
                    rows = [r for r in rows if str(r.get(name)) in raw.split(";")]
                elif op == "gte":
                    rows = [r for r in rows if int(r[name]) >= self._date(raw)]
                else:
                    rows = [r for r in rows if int(r[name]) < self._date(raw)]
        except ValueError:
            self._send({"errors": [{"message": "bad date", "attribute-name": "search"}]}, 400)
            return
        size = min(int(query.get("pageSize", 100)), 100)
        start = (int(query.get("page", 1)) - 1) * size
        self._send(rows[start : start + size], headers=[("X-Total-Count", str(len(rows)))])

    def do_PATCH(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        ident = int(urlsplit(self.path).path.rsplit("/", 1)[-1])
        with self.server.lock:
            row = self.server.rows[ident]
            if body.pop("dtLastUpdate", None) != row["dtLastUpdate"]:
                self._send({"errors": [{"message": "stale", "attribute-name": "dtLastUpdate"}]}, 409)
                return
            row.update(body)
            row["dtLastUpdate"] = str(int(row["dtLastUpdate"]) + 1)
            self.server.patches += 1
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def stand_in(monkeypatch):
    started: list[IdServer] = []

    def start(extra: dict | None = None, **settings) -> IdServer:
        server = IdServer(**settings)
        started.append(server)
        body = json.loads(connection_json(server.url, cache="memory", **(extra or {})))
        monkeypatch.setenv("AIRFLOW_CONN_DEYEL_DEFAULT", json.dumps(body))
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_a_stand_in_keyed_by_id_is_probed_extracted_and_written_back(stand_in, capsys, tmp_path):
    server = stand_in()
    code, report = probe_json(capsys)
    assert code == 0, report["findings"]
    assert report["extras"]["id_field"] == "id"
    assert finding(report, "id key")["text"].startswith("id: the instance id (GET .../instances/1 answers")
    assert report["extras"]["in_separator"] == ";"

    with pytest.raises(DeyelIncompleteError, match="'id_field' extra"):
        full_load(tmp_path / "out.jsonl", form="ANY_FORM")

    stand_in({"id_field": "id"}, records=30)  # a fresh server, the connection set as the probe said
    full_load(tmp_path / "out.jsonl", form="ANY_FORM")
    assert jsonl_ids(tmp_path / "out.jsonl", "id") == [str(i) for i in range(1, 31)]
    full_load(tmp_path / "out.parquet", "parquet", form="ANY_FORM")
    assert parquet_ids(tmp_path / "out.parquet", "id") == [str(i) for i in range(1, 31)]
    assert server.patches == 0

    fresh = stand_in({"id_field": "id"}, records=30)
    loaded = upsert(
        DeyelHook(), "ANY_FORM", [{"cdCustomer": "K3", "dsName": "three"}, {"cdCustomer": "K4"}], "cdCustomer"
    )
    assert (loaded.updated, loaded.unchanged, fresh.patches) == (1, 1, 1)
    assert fresh.rows[3]["dsName"] == "three"


def test_the_separator_is_checked_on_another_field_where_the_id_cannot_be_searched(stand_in, capsys):
    stand_in(search_ids=False)
    code, report = probe_json(capsys)
    assert (code, report["extras"]["id_field"], report["extras"]["in_separator"]) == (0, "id", ";")
    assert finding(report, "in") == {"level": "ok", "topic": "in", "text": (
        "search=cdCustomer=in:K1;K2 answers both instances"
    )}  # fmt: skip


@pytest.mark.parametrize("scale, unit", FINER_UNITS)
def test_the_probe_fails_a_stand_in_stamping_in_micro_or_nanoseconds(stand_in, capsys, scale, unit):
    """Review R2b: ``deyel-probe`` ended with "internal error: ValueError: year 58897 is out of range"."""
    server = stand_in({"id_field": "id"})
    for row in server.rows.values():
        row["dtLastUpdate"] = str(int(row["dtLastUpdate"]) * scale)
    code, report = probe_json(capsys, "--form", FORM)
    assert code == 1, report["findings"]
    updated = finding(report, "updated")
    assert updated["level"] == "FAIL" and f"epoch {unit}" in updated["text"]
    assert "incremental_field" in updated["text"]


# A moment of 2026 in microseconds (a fixed value: pytest-xdist needs the same test ids in every worker).
NOW_IN_MICROSECONDS = 1_780_000_000_000_000


@pytest.mark.parametrize("moment", [NOW_IN_MICROSECONDS, -62_135_596_800_001, 253_402_300_800_000])
def test_a_date_literal_of_a_moment_out_of_range_is_a_typed_error(moment):
    from deyel_provider.api.dates import search_literal
    from deyel_provider.exceptions import DeyelConfigError

    for kind in ("iso", "epoch_ms"):
        with pytest.raises(DeyelConfigError, match=r"no epoch-millisecond date \(years 1 to 9999\)"):
            search_literal(moment, kind)


def test_a_stand_in_with_iso_literals_is_read_with_date_literal_iso(stand_in, capsys, tmp_path):
    stand_in({"id_field": "id"}, literal="iso")
    with pytest.raises(DeyelRequestError, match="date_literal extra"):
        full_load(tmp_path / "out.jsonl", form="ANY_FORM")
    capsys.readouterr()  # the operator's log lines
    code, report = probe_json(capsys)
    assert (code, report["extras"]["date_literal"]) == (0, "iso"), report["findings"]

    stand_in({"id_field": "id", "date_literal": "iso"}, literal="iso")
    assert full_load(tmp_path / "out.jsonl", form="ANY_FORM")["records"] == 30
