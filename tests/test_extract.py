"""DeyelExtractOperator: exact output for every paging strategy and format, incremental windows, atomic
publish (a killed run never shows a partial file under the final name), CSV and JSON Lines round trips."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest
from airflow.sdk import Asset

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelConfigError, DeyelIncompleteError, DeyelServerError
from deyel_provider.extract.formats.text import csv_cell
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.extract import DeyelExtractOperator, default_asset
from tests.support.contract import Before
from tests.support.helpers import ByAsset, outlet_events
from tests.support.killing import sigkilled

RECORDS = 257
# With updated_order="id", the dtLastUpdate of record i (0-based) is 2026-01-01T00:00Z plus i minutes.
UPDATED_START = datetime(2026, 1, 1, tzinfo=UTC)


def in_update_order(emulator) -> list[str]:
    """The ids of the form as an extraction writes them: by (dtLastUpdate, id)."""
    updated = Before.of(emulator).updated
    return sorted(updated, key=lambda i: (updated[i], int(i)))


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def read_csv(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def operator(output, **kwargs) -> DeyelExtractOperator:
    kwargs.setdefault("incremental_field", None)
    return DeyelExtractOperator(task_id="extract", form="CRM_ACCOUNT", output=str(output), **kwargs)


@pytest.mark.parametrize("strategy", ["page", "offset", "link", "none"])
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_output_is_exactly_the_servers_records(deyel_conn, tmp_path, strategy, fmt):
    with run_emulator(records=RECORDS, paging=strategy) as emulator:
        deyel_conn(url=emulator.url, extra={"paging": strategy})
        target = tmp_path / f"out.{fmt}"
        result = operator(target, format=fmt, page_size=40).execute({})
        rows = read_jsonl(target) if fmt == "jsonl" else read_csv(target)
        assert [r["idObjectValue"] for r in rows] == in_update_order(emulator)
        assert result["records"] == RECORDS
        assert result["requests"] == emulator.stats()["api_requests"]
        assert result["mode"] == "full" and result["window_start"] is result["window_end"] is None
        assert result["bytes"] == target.stat().st_size
        assert result["path"] == target.as_uri()
        assert os.listdir(tmp_path) == [target.name]  # no temporary object left beside it


def test_jsonl_and_csv_round_trip(deyel_conn, emulator, tmp_path):
    expected = list(DeyelHook().iter_instances("CRM_ACCOUNT"))
    operator(tmp_path / "a.jsonl").execute({})
    operator(tmp_path / "a.csv", format="csv").execute({})
    assert read_jsonl(tmp_path / "a.jsonl") == expected
    rows = read_csv(tmp_path / "a.csv")
    assert list(rows[0]) == list(expected[0])  # columns in the server's field order
    for row, record in zip(rows, expected, strict=True):
        assert row == {name: str(csv_cell(value)) for name, value in record.items()}
        assert json.loads(row["lsAddress"]) == record["lsAddress"]  # grids are JSON in their cell
    assert any("\n" in r["dsCompany"] or '"' in r["dsCompany"] for r in expected)  # quoting was exercised


def test_csv_declared_fields_and_fields_that_appear_late(deyel_conn, emulator, tmp_path):
    hook = DeyelHook()
    hook.request("POST", "/forms/CRM_ACCOUNT/instances", json={"dsCompany": "Late", "dsNewField": "x,y"})
    operator(tmp_path / "declared.csv", format="csv", fields=["dsCompany", "idObjectValue"]).execute({})
    declared = read_csv(tmp_path / "declared.csv")
    assert list(declared[0]) == ["dsCompany", "idObjectValue"]
    assert declared[-1] == {"dsCompany": "Late", "idObjectValue": "51"}

    operator(tmp_path / "union.csv", format="csv", page_size=10).execute({})
    union = read_csv(tmp_path / "union.csv")
    assert len(union) == 51
    assert list(union[0])[-1] == "dsNewField"  # widened after the header was first written
    assert union[0]["dsNewField"] == ""
    assert union[-1]["dsNewField"] == "x,y"
    assert sorted(os.listdir(tmp_path)) == ["declared.csv", "union.csv"]


def test_incremental_windows_union_to_the_full_set_without_overlap(deyel_conn, tmp_path):
    with run_emulator(records=RECORDS, updated_order="id") as emulator:
        deyel_conn(url=emulator.url)
        # Three consecutive intervals; the first boundary falls exactly on a record's dtLastUpdate.
        bounds = [UPDATED_START - timedelta(hours=1), UPDATED_START + timedelta(minutes=20)]
        bounds += [UPDATED_START + timedelta(minutes=100), UPDATED_START + timedelta(days=1)]
        seen: list[str] = []
        counts = []
        for n, (start, end) in enumerate(itertools.pairwise(bounds)):
            target = tmp_path / f"{n}.jsonl"
            task = DeyelExtractOperator(task_id="x", form="CRM_ACCOUNT", output=str(target), page_size=30)
            result = task.execute({"data_interval_start": start, "data_interval_end": end})
            rows = read_jsonl(target)
            assert all(start <= _updated(r) < end for r in rows)
            assert result["mode"] == "interval"
            assert [result["window_start"], result["window_end"]] == [
                int(start.timestamp() * 1000),
                int(end.timestamp() * 1000),
            ]
            counts.append(result["records"])
            seen += [r["idObjectValue"] for r in rows]
        assert counts == [20, 80, RECORDS - 100]
        assert sorted(seen, key=int) == [str(i) for i in range(1, RECORDS + 1)]  # no gap, no overlap


def _updated(record: dict) -> datetime:
    return datetime.fromtimestamp(int(record["dtLastUpdate"]) / 1000, tz=UTC)


def test_a_full_load_is_asked_for_and_combines_with_search(deyel_conn, emulator, tmp_path):
    task = operator(tmp_path / "ar.jsonl", search="cdCountry=eq:AR")
    result = task.execute({})
    expected = [r for r in DeyelHook().iter_instances("CRM_ACCOUNT") if r["cdCountry"] == "AR"]
    assert expected and result["mode"] == "full"
    assert read_jsonl(tmp_path / "ar.jsonl") == expected


def test_no_data_interval_is_never_a_silent_full_load(deyel_conn, emulator, tmp_path):
    """Airflow 3's "@daily" gives an empty interval (a CronTriggerTimetable): that is a watermark run, and
    its first run needs start_from."""
    task = DeyelExtractOperator(task_id="x", form="CRM_ACCOUNT", output=str(tmp_path / "a.jsonl"))
    moment = UPDATED_START
    for context in ({}, {"data_interval_start": moment, "data_interval_end": moment}):
        with pytest.raises(DeyelConfigError, match="start_from"):
            task.execute(context)
    relative = DeyelExtractOperator(task_id="y", form="CRM_ACCOUNT", output="relative.jsonl")
    with pytest.raises(DeyelConfigError, match="asset"):
        relative.execute({})
    assert emulator.stats()["api_requests"] == 0
    assert os.listdir(tmp_path) == []


def test_a_failed_run_leaves_no_file_and_keeps_the_previous_one(deyel_conn, emulator, tmp_path):
    target = tmp_path / "out.jsonl"
    operator(target, page_size=10).execute({})
    before = target.read_bytes()
    # Page 3 keeps failing: the retry policy gives up and the run fails.
    emulator.set_faults([{"route": "data", "action": "status", "status": 500, "after": 2}])
    with pytest.raises(DeyelServerError):
        operator(target, page_size=10).execute({})
    emulator.set_faults([])
    assert target.read_bytes() == before  # the old file is intact, not half overwritten
    assert os.listdir(tmp_path) == ["out.jsonl"]
    operator(target, page_size=10).execute({})
    assert target.read_bytes() == before  # a rerun of the same interval writes the same content


KILL_SCRIPT = """
import sys
from deyel_provider.operators.extract import DeyelExtractOperator
DeyelExtractOperator(
    task_id="x", form="CRM_ACCOUNT", output=sys.argv[1], incremental_field=None, page_size=20
).execute({})
"""


class FinalNameWatcher:
    """Polls the final name from a thread, as a reader would, and records every content seen there.

    A reader opening the path gets whole inodes: with an atomic rename it sees either nothing, the previous
    file or the complete new one, never a file being written.
    """

    def __init__(self, path) -> None:
        self.path = path
        self.seen: list[tuple[str, bytes]] = []  # (phase, content) each time the content changed
        self.phase = "running"
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="final-name-watcher", daemon=True)

    def __enter__(self) -> FinalNameWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        last: bytes | None = None
        while not self._stop.is_set():
            self.polls += 1
            try:
                with open(self.path, "rb") as fh:
                    content = fh.read()
            except FileNotFoundError:
                content = None
            if content is not None and content != last:
                self.seen.append((self.phase, content))
            last = content
            time.sleep(0.002)

    def contents(self, phase: str) -> list[bytes]:
        return [content for seen_in, content in self.seen if seen_in == phase]


def test_a_killed_run_never_shows_a_partial_file_under_the_final_name(deyel_conn, emulator, tmp_path):
    reference = tmp_path / "reference.jsonl"
    operator(reference, page_size=20).execute({})
    target = tmp_path / "out" / "data.jsonl"
    # The fourth request hangs for a while: once the server has seen it, the process is certainly mid-way,
    # two slices written to the temporary file. (Short, so the emulator's shutdown is quick.)
    emulator.set_faults([{"route": "data", "action": "delay", "delay_ms": 4_000, "after": 3, "count": 1}])
    emulator.reset()
    with FinalNameWatcher(target) as watcher:
        child = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(target)], env=os.environ.copy())
        with sigkilled(child):
            temporary = _wait_for_second_page(emulator, target.parent, child)
        watcher.phase = "killed"
        polls_before_rerun = watcher.polls
        assert not target.exists()
        assert temporary.exists()  # the partial data lives only under the temporary name
        assert temporary.stat().st_size > 0
        emulator.clear_faults()

        watcher.phase = "rerun"
        result = operator(target, page_size=20).execute({})
        watcher.phase = "done"
        _wait_for_polls(watcher, 5)  # the watcher looks at the published file a few times
    assert polls_before_rerun > 10  # the watcher was looking while the killed run wrote its first page
    assert watcher.contents("running") == watcher.contents("killed") == []  # nothing, ever, before the rerun
    # Whenever the final name showed anything, it was the complete extraction.
    assert {content for _, content in watcher.seen} == {reference.read_bytes()}
    # It saw the published file (recorded when it changed: during the rerun's publish, or just after).
    assert watcher.contents("rerun") + watcher.contents("done")
    assert target.read_bytes() == reference.read_bytes()
    assert result["records"] == 50
    assert os.listdir(target.parent) == ["data.jsonl"]  # the rerun removed the killed attempt's leftover


#: The extraction in a child that stops at its publish: ``os.rename`` of the temporary file (the stdlib call,
#: wrapped; the provider's publish code runs unchanged) writes where it is to a marker file and waits there,
#: just before the rename or just after it, for the parent's SIGKILL. Without a stop the kill raced the
#: publish and the test passed when the child had simply finished.
PUBLISH_STOP_SCRIPT = """
import os, sys, time
from deyel_provider.operators.extract import DeyelExtractOperator
output, marker, side = sys.argv[1:4]
real_rename = os.rename

def stopping_rename(src, dst, *args, **kwargs):
    if ".tmp-" not in str(src):
        return real_rename(src, dst, *args, **kwargs)
    if side == "after":
        real_rename(src, dst, *args, **kwargs)
    # Written whole, then renamed into place: the test kills this process as soon as the marker exists, so
    # it must never see the name before the text (an empty marker failed a loaded run).
    with open(marker + ".part", "w") as fh:
        fh.write(side + " the rename")
    real_rename(marker + ".part", marker)
    time.sleep(120)  # killed here

os.rename = stopping_rename
DeyelExtractOperator(
    task_id="x", form="CRM_ACCOUNT", output=output, incremental_field=None, page_size=20
).execute({})
"""


@pytest.mark.parametrize("side", ["before", "after"])
def test_a_kill_at_publish_time_leaves_nothing_or_everything(deyel_conn, emulator, tmp_path, side):
    """SIGKILL at the publish, just before the rename or just after it.

    The move is ``os.rename`` of a file beside the target: atomic. Killed before it, the final name holds
    nothing and the complete data waits under the temporary name (the rerun's to clean); killed after it,
    the final name holds the complete file and no temporary one is left. The child's exit status and the
    marker prove the kill landed at that point.
    """
    reference = tmp_path / "reference.jsonl"
    operator(reference, page_size=20).execute({})
    complete = reference.read_bytes()
    target = tmp_path / "out" / "data.jsonl"
    target.parent.mkdir()
    marker = tmp_path / "publish-reached"
    with FinalNameWatcher(target) as watcher:
        child = subprocess.Popen(
            [sys.executable, "-c", PUBLISH_STOP_SCRIPT, str(target), str(marker), side], env=os.environ.copy()
        )
        with sigkilled(child):
            _wait_for_marker(child, marker)
        _wait_for_polls(watcher, 5)  # the watcher looks at the final name a few times after the kill
    assert marker.read_text() == f"{side} the rename"  # where the kill landed
    assert {content for _, content in watcher.seen} <= {complete}
    leftovers = [p for p in target.parent.iterdir() if ".tmp-" in p.name]
    if side == "after":
        assert target.read_bytes() == complete
        assert leftovers == []
    else:
        assert not target.exists()
        (temporary,) = leftovers  # the whole data, under the temporary name only
        assert temporary.read_bytes() == complete


def _wait_for_marker(child, marker) -> None:
    deadline = time.monotonic() + 60  # a guard against a hang, not a speed assertion
    while not marker.exists():
        assert child.poll() is None, f"the extraction ended before its publish (exit {child.returncode})"
        assert time.monotonic() < deadline, "the extraction never reached its publish"
        time.sleep(0.002)


def _wait_for_polls(watcher, count: int) -> None:
    target = watcher.polls + count
    deadline = time.monotonic() + 60  # a guard against a hang, not a speed assertion
    while watcher.polls < target and time.monotonic() < deadline:
        time.sleep(0.002)


def _wait_for_second_page(emulator, folder, child):
    deadline = time.monotonic() + 60  # a guard against a hang, not a speed assertion
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"the extraction ended on its own (exit {child.returncode})")
        if emulator.stats()["api_requests"] >= 4:
            (temporary,) = [entry for entry in folder.iterdir() if ".tmp-" in entry.name]
            return temporary
        time.sleep(0.01)
    raise AssertionError("the extraction never asked for its second page")


def test_templated_output_as_an_object_storage_path_and_its_asset(deyel_conn, emulator, tmp_path):
    from airflow.sdk import ObjectStoragePath

    template = tmp_path.as_uri() + "/{{ params.form }}/{{ ds }}.jsonl"
    task = DeyelExtractOperator(task_id="x", form="CRM_ACCOUNT", output=template, incremental_field=None)
    assert task.asset == Asset(tmp_path.as_uri())
    assert task.outlets == [Asset(tmp_path.as_uri())]
    task.output_path = ObjectStoragePath(tmp_path.as_uri() + "/CRM_ACCOUNT/2026-01-01.jsonl")  # as rendered
    result = task.execute({})
    assert len(read_jsonl(tmp_path / "CRM_ACCOUNT" / "2026-01-01.jsonl")) == result["records"] == 50


def test_default_asset_is_the_static_part_of_the_output():
    assert default_asset("file:///data/deyel/{{ params.form }}/{{ ds }}.jsonl") == Asset("file:///data/deyel")
    assert default_asset("/data/x.csv") == Asset("file:///data/x.csv")
    assert default_asset("s3://bucket/{{ ds }}.jsonl") == Asset("s3://bucket")
    assert default_asset("{{ var.value.out }}") is None
    assert default_asset("relative/out.jsonl") is None


def test_bad_arguments_are_typed_errors(deyel_conn, emulator, tmp_path):
    with pytest.raises(DeyelConfigError, match="format"):
        operator(tmp_path / "x", format="xml")
    for workers in (0, "many"):
        with pytest.raises(DeyelConfigError, match="max_workers"):
            operator(tmp_path / "x", max_workers=workers)
    with pytest.raises(DeyelConfigError, match="start_from"):
        operator(tmp_path / "x", incremental_field="dtLastUpdate", start_from="last tuesday").execute({})
    with pytest.raises(DeyelConfigError, match="folder"):
        operator(str(tmp_path) + "/").execute({})
    task = operator(tmp_path / "x", format="{{ params.fmt }}")
    task.format = "xml"  # as rendered from a param
    with pytest.raises(DeyelConfigError, match="format"):
        task.execute({})
    assert os.listdir(tmp_path) == []


def test_an_extraction_the_server_cannot_prove_complete_publishes_nothing(deyel_conn, tmp_path):
    with run_emulator(records=RECORDS, updated_burst=100, ignore_page_param=True) as emulator:
        deyel_conn(url=emulator.url)
        target = tmp_path / "out.jsonl"
        with pytest.raises(DeyelIncompleteError, match="ignores the 'page' parameter"):
            operator(target, page_size=30).execute({})
        assert os.listdir(tmp_path) == []


def test_the_file_holds_every_instance_once_while_another_user_edits(deyel_conn, tmp_path):
    from tests.support.contract import check_contract

    with run_emulator(
        records=2000, writer_edits=2, writer_inserts=0.5, writer_deletes=0.5, writer_seed=5
    ) as emulator:
        deyel_conn(url=emulator.url)
        before = Before.of(emulator)
        start, end = UPDATED_START, UPDATED_START + timedelta(minutes=2000)
        target = tmp_path / "window.jsonl"
        task = DeyelExtractOperator(
            task_id="x", form="CRM_ACCOUNT", output=str(target), page_size=50, max_workers=3
        )
        result = task.execute({"data_interval_start": start, "data_interval_end": end})
        rows = read_jsonl(target)
        counts = check_contract(
            emulator, before, rows, start=result["window_start"], end=result["window_end"]
        )
        assert counts["mutations"] > 100 and result["records"] == len(rows)


def test_without_an_asset_state_store_the_watermark_is_read_from_the_latest_event():
    """Airflow before 3.3 has no asset state: the watermark travels in the asset event's extra."""
    from types import SimpleNamespace

    from deyel_provider.extract.watermark import (
        Watermark,
        WatermarkSigner,
        Window,
        read_watermark,
        watermark_key,
        write_watermark,
    )

    asset = Asset("file:///data/deyel/CRM_ACCOUNT")
    owner = {"conn_id": "deyel_default", "dag_id": "d", "task_id": "t"}
    key = watermark_key("CRM_ACCOUNT", "dtLastUpdate", "cdCountry=eq:AR", **owner)
    signer = WatermarkSigner("secret", "salt")
    extra: dict = {}
    window = Window("scheduled__2026-01-01", 1767139200000, 1767225600000, 1767225600000)
    mark = Watermark(key, window.start).with_window(window)
    write_watermark({}, asset, mark, signer, extra)
    assert extra["watermark"]["key"] == key and extra["watermark"]["end"] == window.end
    another = Watermark(watermark_key("CRM_ACCOUNT", "dtLastUpdate", None, **owner), 5)
    other = SimpleNamespace(extra={"watermark": another.to_json(signer)})
    events = [SimpleNamespace(extra=extra), other]
    assert read_watermark({"inlet_events": ByAsset([(asset, events)])}, asset, key, signer) == mark
    assert read_watermark({"inlet_events": ByAsset([(asset, [other])])}, asset, key, signer) is None
    assert read_watermark({}, asset, key, signer) is None


def test_a_cleared_or_retried_watermark_run_reads_its_window_again(deyel_conn, emulator, tmp_path):
    """Once a run published, its retry (or a clear) must not read an empty window from the new watermark:
    its changes would then be in no file."""
    from types import SimpleNamespace

    asset = Asset(tmp_path.as_uri())
    task = DeyelExtractOperator(
        task_id="x",
        form="CRM_ACCOUNT",
        output=str(tmp_path / "{{ run_id }}.jsonl"),
        start_from="2026-01-01T00:00:00Z",
        asset=asset,
    )

    def run(run_id: str, events: list) -> dict:
        task.output_path = str(tmp_path / f"{run_id}.jsonl")  # as rendered
        events_out = outlet_events()
        context = {"run_id": run_id, "inlet_events": ByAsset([(asset, events)]), "outlet_events": events_out}
        summary = task.execute(context)
        assert events_out[asset].extra == summary
        return summary

    first = run("r1", [])
    assert first["records"] == 50
    event = SimpleNamespace(extra=first)
    again = run("r1", [event])  # the same run, cleared after it published
    assert (again["window_start"], again["window_end"]) == (first["window_start"], first["window_end"])
    assert again["records"] == 50
    second = run("r2", [event, SimpleNamespace(extra=again)])
    assert second["window_start"] == first["window_end"] and second["records"] == 0


@pytest.mark.parametrize("style", ["absolute", "path", "relative"])
def test_a_next_link_is_resolved_against_the_url_it_answered(deyel_conn, style):
    """RFC 8288: a relative link is relative to the answered URL; joined to the API prefix it doubled it."""
    prefix = "/DeyelWeb/api"
    with run_emulator(
        records=300, paging="link", link_style=style, api_prefix=prefix, updated_burst=150, seed=7
    ) as emulator:
        deyel_conn(url=emulator.url, extra={"paging": "link", "api_prefix": prefix})
        ids = [r["idObjectValue"] for r in DeyelHook().iter_instances("CRM_ACCOUNT", page_size=40)]
        assert sorted(ids, key=int) == [str(i) for i in range(1, 301)]
        # 150 instances share each millisecond: only next links can page through them.
        assert emulator.stats()["api_requests"] >= 150 // 40 * 2


class _HookOfAnOlderRelease(DeyelHook):
    """A user's hook subclass written before ``plain_pages`` existed: its override names the keywords of
    that release and no ``**kwargs``."""

    calls: ClassVar[list[str]] = []

    def sliced_reader(self, form, *, search=None, field="dtLastUpdate", page_size=None, max_workers=1):
        self.calls.append(form)
        return super().sliced_reader(
            form, search=search, field=field, page_size=page_size, max_workers=max_workers
        )


class _OperatorWithItsOwnHook(DeyelExtractOperator):
    @property
    def hook(self) -> DeyelHook:
        return _HookOfAnOlderRelease(deyel_conn_id=self.deyel_conn_id)


def test_a_hook_subclass_overriding_sliced_reader_without_plain_pages_still_extracts(
    deyel_conn, emulator, tmp_path
):
    """Stop 34's review, LOW 3: extract() passed ``plain_pages=`` to every hook's sliced_reader, so a subclass
    overriding it with the signature of an earlier release failed with a TypeError. Now it is passed only to
    a method that takes it: the override runs, and the JSON Lines written are the same bytes."""
    _HookOfAnOlderRelease.calls.clear()
    own, plain = tmp_path / "own.jsonl", tmp_path / "plain.jsonl"
    task = _OperatorWithItsOwnHook(
        task_id="own", form="CRM_ACCOUNT", output=str(own), page_size=20, incremental_field=None
    )
    summary = task.execute({})
    # Its override ran, and read the emulator fixture's 50 instances.
    assert _HookOfAnOlderRelease.calls == ["CRM_ACCOUNT"] and summary["records"] == 50
    operator(plain, page_size=20).execute({})
    assert own.read_bytes() == plain.read_bytes()


def test_the_fan_outs_tail_reader_passes_plain_pages_only_to_a_hook_that_takes_it(deyel_conn, emulator):
    """Review (helper-77, M1): the fan-out's tail wraps the hook in one whose sliced_reader takes
    ``**kwargs``, so it was told plain pages are taken and passed them on to an older subclass's override."""
    from deyel_provider.extract.fan_out import _SkippingHook

    _HookOfAnOlderRelease.calls.clear()
    for hook in (_HookOfAnOlderRelease(), DeyelHook()):
        reader = _SkippingHook(hook, lambda: iter(["1", "2"])).sliced_reader("CRM_ACCOUNT", plain_pages=True)
        assert not reader._seen.add("1") and not reader._seen.add("2")  # the other parts' ids: seen already
    assert _HookOfAnOlderRelease.calls == ["CRM_ACCOUNT"]
