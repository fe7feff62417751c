"""A retried DeyelExtractOperator continues after the parts an earlier attempt staged (issue 25).

The first attempt is stopped at about 70 % of its requests by the emulator (every data request after that
answers 404), the retry runs with ``try_number`` 2 and the same run: it makes at most 35 % of an
uninterrupted run's requests, counted on the emulator, and the published parts hold every instance once.
Both places the record lives are covered: Airflow 3.3's ``task_state_store`` (a stand-in with its
``get``/``set``/``delete``) and the state object beside the parts (Airflow 3.0 to 3.2).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fsspec
import pytest
from airflow.sdk import Asset, ObjectStoragePath
from airflow.sdk.io import attach

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelError
from deyel_provider.extract.resume import STATE_SUFFIX, ResumeSpec
from deyel_provider.extract.run import extract
from deyel_provider.extract.spec import OutputSpec, ReadSpec, WindowSpec
from deyel_provider.extract.watermark import WatermarkSigner
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.extract import DeyelExtractOperator
from tests.support.helpers import outlet_events

FORM = "CRM_ACCOUNT"
RECORDS = 1400
PAGE_SIZE = 10
MAX_FILE_BYTES = 3000
#: The seeded instances' dtLastUpdate lie in 2026-01-01 (one a minute from midnight): this day holds them.
DAY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
#: Requests of an uninterrupted run of DAY with these options (deterministic: fixed seed, fixed window).
FULL_RUN = 157
#: The first attempt's data requests before the emulator starts refusing them: about 70 % of FULL_RUN.
CUT = 110
LOGGER = "airflow.task.operators.deyel_provider.operators.extract.DeyelExtractOperator"


class TaskStateStore:
    """``context["task_state_store"]`` of Airflow 3.3: JSON values by key, kept across a run's tries."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        #: Every value set, in order (a test checks each record an attempt wrote, not only its last).
        self.history: list[Any] = []

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))
        self.history.append(self.values[key])

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


@pytest.fixture
def emulator():
    # Stamped one a minute in id order, listed in that order: slices fill their responses, so the requests
    # follow the instances read (random stamps cost a slice plan's spread more, on either attempt).
    with run_emulator(records=RECORDS, updated_order="id") as running:
        yield running


@pytest.fixture(params=["task_state_store", "state_object"])
def store(request) -> TaskStateStore | None:
    return TaskStateStore() if request.param == "task_state_store" else None


def operator(folder: Path, name: str = "r.jsonl", **options: Any) -> DeyelExtractOperator:
    return DeyelExtractOperator(
        task_id="x",
        form=FORM,
        output=str(folder / name),
        **{"max_file_bytes": MAX_FILE_BYTES, "page_size": PAGE_SIZE, **options},
    )


def context_of(
    store: TaskStateStore | None,
    *,
    try_number: int = 1,
    max_tries: int = 2,
    interval: tuple[datetime, datetime] | None = DAY,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The context of one try of run ``r``."""
    context: dict[str, Any] = {
        "run_id": "r",
        "dag_run": SimpleNamespace(run_id="r", run_after=datetime(2026, 1, 2, 1, tzinfo=UTC), conf={}),
        "dag": SimpleNamespace(dag_id="d"),
        "ti": SimpleNamespace(dag_id="d", map_index=-1, try_number=try_number, max_tries=max_tries),
        "outlet_events": outlet_events(),
        "task_state_store": store,
        **(extra or {}),
    }
    if interval is not None:
        context["data_interval_start"], context["data_interval_end"] = interval
    return context


def attempt(
    emulator, task: DeyelExtractOperator, store: TaskStateStore | None, **context: Any
) -> tuple[dict[str, Any] | None, int]:
    """Run one try of run ``r``; returns (its XCom, or None when it failed) and the requests it made."""
    before = emulator.stats()["api_requests"]
    try:
        summary = task.execute(context_of(store, **context))
    except DeyelError:
        summary = None
    return summary, emulator.stats()["api_requests"] - before


def cut_at(emulator, requests: int) -> None:
    """Every data request after the first ``requests`` answers 404: the attempt fails there."""
    emulator.set_faults([{"action": "status", "status": 404, "route": "data", "after": requests}])


def published_ids(folder: Any, name: str = "r.jsonl") -> list[str]:
    manifest = json.loads((folder / f"{name}.parts.json").read_text())
    ids = []
    for part in manifest["parts"]:
        for line in (folder / part["name"]).read_text().splitlines():
            ids.append(json.loads(line)["idObjectValue"])
    return ids


def all_ids(emulator) -> list[str]:
    return sorted(str(i) for i in emulator.state.store.all_ids(FORM))


def logged(capsys) -> str:
    """What the task logged (Airflow's task logger writes through structlog to the console)."""
    captured = capsys.readouterr()
    return captured.out + captured.err


def leftovers(folder: Any) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or p.name.endswith(STATE_SUFFIX))


def signer() -> WatermarkSigner:
    config = DeyelHook().config
    return WatermarkSigner.for_connection(config.client_secret, config.token_url, config.client_id)


def recorded(folder: Path, store: TaskStateStore | None) -> dict[str, Any]:
    if store is not None:
        (value,) = store.values.values()
        return value
    (sidecar,) = folder.glob(f"*{STATE_SUFFIX}")
    return json.loads(sidecar.read_text())


def rewrite_record(folder: Path, store: TaskStateStore | None, value: dict[str, Any]) -> None:
    if store is not None:
        (key,) = store.values
        store.values[key] = value
    else:
        (sidecar,) = folder.glob(f"*{STATE_SUFFIX}")
        sidecar.write_text(json.dumps(value))


def failed_first_attempt(emulator, folder: Path, store: TaskStateStore | None) -> dict[str, Any]:
    """The first attempt, stopped after CUT requests; returns the record it left."""
    cut_at(emulator, CUT)
    summary, requests = attempt(emulator, operator(folder), store)
    emulator.clear_faults()
    assert summary is None and requests > CUT
    return recorded(folder, store)


# -- resume ------------------------------------------------------------------------------------------------


def test_an_uninterrupted_run_makes_FULL_RUN_requests(emulator, deyel_conn, tmp_path):
    summary, requests = attempt(emulator, operator(tmp_path), None)
    assert summary is not None and requests == summary["requests"] == FULL_RUN
    assert summary["records"] == RECORDS and len(summary["parts"]) > 40
    assert sorted(published_ids(tmp_path)) == all_ids(emulator)
    assert leftovers(tmp_path) == []  # a successful run leaves no staged part nor record


def test_a_retry_after_70_percent_makes_at_most_35_percent_of_the_requests_again(
    emulator, deyel_conn, tmp_path, store, capsys
):
    record = failed_first_attempt(emulator, tmp_path, store)
    staged = record["parts"]
    assert len(staged) >= 30  # the parts completed before the cut, each with its size, records and hash
    assert sum(part[2] for part in staged) >= RECORDS * 0.6
    assert record["window"] == [int(DAY[0].timestamp() * 1000), int(DAY[1].timestamp() * 1000)]
    capsys.readouterr()  # the first attempt's lines

    summary, requests = attempt(emulator, operator(tmp_path), store, try_number=2)
    text = logged(capsys)

    assert summary is not None
    assert requests == summary["requests"] == 49 <= 0.35 * FULL_RUN
    assert "resuming after an earlier attempt: 108 staged part(s) of 970 records verified" in text
    ids = published_ids(tmp_path)
    assert len(ids) == len(set(ids)) == RECORDS and sorted(ids) == all_ids(emulator)
    assert summary["records"] == RECORDS
    # The requests are this attempt's, and so is what they are compared with: the 430 records it read.
    assert summary["min_requests"] == 43 and summary["requests_ratio"] == round(49 / 43, 3)
    assert [summary["window_start"], summary["window_end"]] == record["window"]
    # The union's parts are numbered in order, the earlier attempt's first.
    names = [Path(part["path"]).name for part in summary["parts"]]
    assert names == [f"r.part-{n:05d}.jsonl" for n in range(len(names))]
    # Published: no staged part and no record left behind.
    assert leftovers(tmp_path) == []
    assert store is None or store.values == {}


def tamper_truncate(folder: Path, store, record) -> str:
    part = folder / record["parts"][3][1]
    part.write_bytes(part.read_bytes()[:-10])
    return "staged part 3 holds"


def tamper_edit(folder: Path, store, record) -> str:
    part = folder / record["parts"][5][1]
    data = part.read_bytes()
    part.write_bytes(data.replace(b'"', b"'", 1))  # same size, other bytes
    return "staged part 5 does not hold the bytes recorded"


def tamper_count(folder: Path, store, record) -> str:
    # Re-signed with the connection's key (who holds it could do this): the records are counted again.
    record["parts"][2][2] += 1
    body = {k: v for k, v in record.items() if k != "mac"}
    rewrite_record(folder, store, {**body, "mac": signer().mac(body)})
    return f"staged part 2 holds {record['parts'][2][2] - 1} records, not the {record['parts'][2][2]}"


def tamper_mac(folder: Path, store, record) -> str:
    record["boundary"] += 60_000  # a minute skipped, were it believed
    rewrite_record(folder, store, record)
    return "fails its MAC"


def tamper_run(folder: Path, store, record) -> str:
    record["run_id"] = "another"
    body = {k: v for k, v in record.items() if k != "mac"}
    rewrite_record(folder, store, {**body, "mac": signer().mac(body)})
    return "of another run ('another')"


@pytest.mark.parametrize("tamper", [tamper_truncate, tamper_edit, tamper_count, tamper_mac, tamper_run])
def test_a_tampered_staged_part_or_record_makes_the_retry_start_over_and_say_why(
    emulator, deyel_conn, tmp_path, store, capsys, tamper
):
    record = failed_first_attempt(emulator, tmp_path, store)
    why = tamper(tmp_path, store, record)
    capsys.readouterr()  # the first attempt's lines

    summary, requests = attempt(emulator, operator(tmp_path), store, try_number=2)
    text = logged(capsys)

    assert summary is not None and requests == FULL_RUN
    assert why in text and "reading the whole window again" in text
    ids = published_ids(tmp_path)
    assert len(ids) == RECORDS and sorted(ids) == all_ids(emulator)
    assert leftovers(tmp_path) == []
    assert store is None or store.values == {}


def test_a_retry_over_another_window_does_not_reuse(emulator, deyel_conn, tmp_path, store, capsys):
    failed_first_attempt(emulator, tmp_path, store)
    capsys.readouterr()  # the first attempt's lines
    wider = (datetime(2025, 12, 31, tzinfo=UTC), DAY[1])

    summary, requests = attempt(emulator, operator(tmp_path), store, try_number=2, interval=wider)
    text = logged(capsys)

    assert summary is not None and requests > 0.9 * FULL_RUN
    assert "its parts hold the window [1767225600000, 1767312000000), not this attempt's" in text
    assert sorted(published_ids(tmp_path)) == all_ids(emulator)
    assert leftovers(tmp_path) == []


def test_a_retry_to_another_output_does_not_reuse(emulator, deyel_conn, tmp_path, store, capsys):
    failed_first_attempt(emulator, tmp_path, store)
    capsys.readouterr()  # the first attempt's lines

    summary, requests = attempt(emulator, operator(tmp_path, "other.jsonl"), store, try_number=2)
    text = logged(capsys)

    assert summary is not None and requests == FULL_RUN
    expected = "staged for another output" if store is not None else "nothing to resume"
    assert expected in text
    assert sorted(published_ids(tmp_path, "other.jsonl")) == all_ids(emulator)
    assert not any(name.startswith("other.") for name in leftovers(tmp_path))


@pytest.mark.parametrize(
    ("retry", "why"),
    [
        # Another index of a mapped task writing the same output (its owner differs).
        ({"map_index": 1}, "its record belongs to another task"),
        # The same task with its output options changed before the retry (a cleared task, a new DAG version).
        ({"max_file_bytes": 4000}, "its parts were written with other output options"),
    ],
)
def test_a_retry_of_another_owner_or_other_options_does_not_reuse(
    emulator, deyel_conn, tmp_path, capsys, retry, why
):
    failed_first_attempt(emulator, tmp_path, None)
    capsys.readouterr()  # the first attempt's lines
    task = operator(tmp_path, max_file_bytes=retry.get("max_file_bytes", MAX_FILE_BYTES))
    ti = SimpleNamespace(dag_id="d", map_index=retry.get("map_index", -1), try_number=2, max_tries=2)

    summary, requests = attempt(emulator, task, None, try_number=2, extra={"ti": ti})

    assert summary is not None and requests == FULL_RUN
    assert why in logged(capsys)
    ids = published_ids(tmp_path)
    assert len(ids) == len(set(ids)) == RECORDS
    assert leftovers(tmp_path) == []


def test_a_staged_part_replaced_by_a_link_to_the_same_bytes_is_not_reused(
    emulator, deyel_conn, tmp_path, capsys
):
    """Size, hash and records all match, but the name is a link (to a copy elsewhere, which its owner could
    change after the publish): it is neither read through nor published; the retry reads the whole window."""
    record = failed_first_attempt(emulator, tmp_path, None)
    staged = tmp_path / record["parts"][0][1]
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.write_bytes(staged.read_bytes())
    staged.unlink()
    staged.symlink_to(elsewhere)
    capsys.readouterr()

    summary, requests = attempt(emulator, operator(tmp_path), None, try_number=2)

    assert summary is not None and requests == FULL_RUN
    assert f"staged part 0 ({staged.name}) is gone, or not a regular file of ours" in logged(capsys)
    manifest = json.loads((tmp_path / "r.jsonl.parts.json").read_text())
    assert not any((tmp_path / part["name"]).is_symlink() for part in manifest["parts"])
    assert sorted(published_ids(tmp_path)) == all_ids(emulator)
    # The link is left where it was planted (only regular files of ours are removed), its target untouched.
    assert [path for path in tmp_path.iterdir() if path.is_symlink()] == [staged]
    assert elsewhere.read_bytes() and leftovers(tmp_path) == [staged.name]


def test_the_last_try_leaves_no_staged_part_when_it_fails(emulator, deyel_conn, tmp_path, store):
    failed_first_attempt(emulator, tmp_path, store)
    assert leftovers(tmp_path) != [] or store is not None
    cut_at(emulator, 3)

    summary, _ = attempt(emulator, operator(tmp_path), store, try_number=3, max_tries=2)

    assert summary is None
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == []
    assert store is None or store.values == {}


def test_a_watermark_retry_reads_the_window_the_first_attempt_chose(emulator, deyel_conn, tmp_path, store):
    """A watermark run's window ends at the server's present: the retry, later, ends where the first did."""
    from tests.test_watermarks import AssetStores

    def watermark_task(name: str = "r.jsonl") -> DeyelExtractOperator:
        return operator(tmp_path, name, start_from="2026-01-01T00:00:00Z", asset=Asset(tmp_path.as_uri()))

    own_state = {"asset_state_store": AssetStores()}
    baseline, full = attempt(emulator, watermark_task("baseline.jsonl"), None, interval=None, extra=own_state)
    assert baseline is not None and baseline["records"] == RECORDS
    extra = {"asset_state_store": AssetStores()}
    cut_at(emulator, round(0.7 * full))
    summary, _ = attempt(emulator, watermark_task(), store, interval=None, extra=extra)
    emulator.clear_faults()
    assert summary is None
    chosen = recorded(tmp_path, store)["window"]
    emulator.advance(120)  # the server's present moves on: a new window would end later

    summary, requests = attempt(emulator, watermark_task(), store, try_number=2, interval=None, extra=extra)

    assert summary is not None and summary["mode"] == "watermark"
    assert [summary["window_start"], summary["window_end"]] == chosen
    assert requests <= 0.35 * full
    ids = published_ids(tmp_path)
    assert len(ids) == RECORDS and sorted(ids) == all_ids(emulator)
    assert leftovers(tmp_path) == []


def test_a_part_ending_inside_a_crowded_millisecond_is_no_boundary(deyel_conn, tmp_path, store, capsys):
    """25 instances share each millisecond, 10 to a response, and parts of about 20 end between the pages of
    one millisecond every other time. Only a part whose last piece ended a millisecond is recorded, so the
    staged parts hold exactly the instances below the boundary, and the union exactly every instance."""
    with run_emulator(records=300, updated_order="id", updated_burst=25) as crowded:
        deyel_conn(url=crowded.url)
        baseline, full = attempt(crowded, operator(tmp_path, "baseline.jsonl", max_file_bytes=6500), None)
        assert baseline is not None and baseline["records"] == 300
        stamps = {}
        for name in [Path(part["path"]).name for part in baseline["parts"]]:
            for line in (tmp_path / name).read_text().splitlines():
                record = json.loads(line)
                stamps[record["idObjectValue"]] = int(record["dtLastUpdate"])
        assert len(set(stamps.values())) == 12  # every millisecond crowded

        cut_at(crowded, round(0.7 * full))
        summary, _ = attempt(crowded, operator(tmp_path, max_file_bytes=6500), store)
        crowded.clear_faults()
        assert summary is None
        # Every record the attempt wrote (the task state store keeps each; the state object only the last):
        # its parts hold exactly the instances below its boundary, none of a millisecond cut by a part.
        records = store.history if store is not None else [recorded(tmp_path, store)]
        assert len(records) >= (4 if store is not None else 1)
        for record in records:
            staged = [
                json.loads(line)["idObjectValue"]
                for part in record["parts"]
                for line in (tmp_path / part[1]).read_text().splitlines()
            ]
            below = sorted(i for i, stamp in stamps.items() if stamp < record["boundary"])
            assert below and sorted(staged) == below

        summary, requests = attempt(crowded, operator(tmp_path, max_file_bytes=6500), store, try_number=2)

        assert summary is not None and requests < full
        ids = published_ids(tmp_path)
        assert len(ids) == len(set(ids)) == 300 and sorted(ids) == sorted(stamps)
        assert leftovers(tmp_path) == []


def test_a_state_object_nested_past_the_parser_depth_is_refused_not_raised(
    emulator, deyel_conn, tmp_path, capsys
):
    """A state object (locally of this user; on an object store, of anyone who may write there) that nests
    deeper than json's recursion limit is an unreadable record: the run reads the whole window."""
    (tmp_path / f"r.jsonl{STATE_SUFFIX}").write_text("[" * 200_000)

    summary, requests = attempt(emulator, operator(tmp_path), None, try_number=2)

    assert summary is not None and requests == FULL_RUN
    assert "its record is not a resume state of this provider" in logged(capsys)
    assert sorted(published_ids(tmp_path)) == all_ids(emulator)
    assert leftovers(tmp_path) == []


def test_lineage_lists_the_keys_only_the_reused_parts_hold(deyel_conn, tmp_path):
    """JSON Lines lists the keys written for lineage: a resumed run's include those of the parts it reuses,
    which it never read itself (here ``early``, a key only the first 30 instances have)."""

    def jsonl(path: Path = tmp_path / "r.jsonl") -> OutputSpec:
        return OutputSpec(str(path), max_file_bytes=1)  # a part per page

    with run_emulator(records=0) as server:
        deyel_conn(url=server.url)
        for n in range(60):
            server.state.store.create(FORM, {"dsName": f"i{n}", **({"early": n} if n < 30 else {})})
            server.advance(60)
        server.advance(3600)
        window = WindowSpec(0, int(server.state.clock.now() * 1000) - 1_800_000)
        baseline = extract(DeyelHook(), ReadSpec(FORM, page_size=10), jsonl(tmp_path / "b.jsonl"), window)
        spec = ResumeSpec(owner="o", run_id="r", signer=signer(), store=TaskStateStore())

        def stop(_: int | None) -> None:
            raise DeyelError("stopped after the read")

        with pytest.raises(DeyelError):
            read = ReadSpec(FORM, page_size=10)
            extract(DeyelHook(), read, jsonl(), window, before_publish=stop, resume=spec)
        (value,) = spec.store.values.values()
        assert sum(part[2] for part in value["parts"]) >= 30  # the early instances are in the reused parts
        resumed = extract(DeyelHook(), ReadSpec(FORM, page_size=10), jsonl(), window, resume=spec)

    assert resumed.records == baseline.records == 60 and resumed.requests < baseline.requests
    assert "early" in [column["name"] for column in resumed.columns]
    assert resumed.columns == baseline.columns


def test_a_csv_cell_longer_than_the_csv_modules_field_limit_is_counted(deyel_conn, tmp_path, caplog):
    """A staged CSV part's rows are counted however long a cell is (Python's csv reader refuses a field over
    131,072 characters): a notes field of 200,000 characters does not stop the retry."""
    fields = ["idObjectValue", "dtLastUpdate", "dsNotes"]
    with run_emulator(records=0) as server:
        deyel_conn(url=server.url)
        for n in range(40):
            notes = "x" * 200_000 if n == 3 else f'line "{n}"\nnext'
            server.state.store.create(FORM, {"dsNotes": notes})
            server.advance(60)
        server.advance(3600)
        window = WindowSpec(0, int(server.state.clock.now() * 1000) - 1_800_000)
        output = OutputSpec(str(tmp_path / "r.csv"), format="csv", fields=fields, max_file_bytes=1)
        spec = ResumeSpec(owner="o", run_id="r", signer=signer(), store=TaskStateStore())

        def stop(_: int | None) -> None:
            raise DeyelError("stopped after the read")

        with pytest.raises(DeyelError):
            extract(
                DeyelHook(), ReadSpec(FORM, page_size=10), output, window, before_publish=stop, resume=spec
            )
        (value,) = spec.store.values.values()
        staged = sum(part[2] for part in value["parts"])
        caplog.set_level("INFO")
        result = extract(DeyelHook(), ReadSpec(FORM, page_size=10), output, window, resume=spec)

    assert staged >= 10 and f"staged part(s) of {staged} records verified" in caplog.text
    assert result.records == 40
    limit = csv.field_size_limit(1 << 20)  # reading it back here needs the larger limit
    try:
        ids = [i for part in result.parts for i in ids_of_part(Path(part["path"].removeprefix("file:")))]
    finally:
        csv.field_size_limit(limit)
    assert len(ids) == len(set(ids)) == 40


def test_a_damaged_compressed_part_makes_the_retry_start_over(emulator, deyel_conn, tmp_path, capsys):
    """A staged gzip part cut short (a damaged disk, a hand's edit) fails to decode: the retry says which
    part and reads the whole window, instead of failing every retry on the decoder's EOFError."""
    cut_at(emulator, CUT)
    summary, _ = attempt(emulator, operator(tmp_path, "r.jsonl.gz", compression="gzip"), None)
    emulator.clear_faults()
    assert summary is None
    record = recorded(tmp_path, None)
    part = tmp_path / record["parts"][0][1]
    part.write_bytes(part.read_bytes()[:-12])  # the gzip trailer and some of the stream
    capsys.readouterr()

    summary, requests = attempt(
        emulator, operator(tmp_path, "r.jsonl.gz", compression="gzip"), None, try_number=2
    )

    assert summary is not None and requests == FULL_RUN
    assert "staged part 0 holds" in logged(capsys)
    manifest = json.loads((tmp_path / "r.jsonl.gz.parts.json").read_text())
    ids = [i for part in manifest["parts"] for i in ids_of_part(tmp_path / part["name"])]
    assert len(ids) == len(set(ids)) == RECORDS
    assert leftovers(tmp_path) == []


class FailingStore(TaskStateStore):
    """A task state store whose writes (``set``) or removals (``delete``) fail, as an API call may."""

    def __init__(self, failing: str) -> None:
        super().__init__()
        self.failing = failing

    def set(self, key: str, value: Any, **_: Any) -> None:
        if self.failing == "set":
            raise RuntimeError("the API server is away")
        super().set(key, value)

    def delete(self, key: str) -> None:
        if self.failing == "delete":
            raise RuntimeError("the API server is away")
        super().delete(key)


def test_a_record_that_cannot_be_written_does_not_fail_the_run(emulator, deyel_conn, tmp_path, capsys):
    summary, requests = attempt(emulator, operator(tmp_path), FailingStore("set"))

    assert summary is not None and requests == FULL_RUN and summary["records"] == RECORDS
    text = logged(capsys)
    assert text.count("could not record the staged parts (RuntimeError)") == 1  # once: no more tries
    assert sorted(published_ids(tmp_path)) == all_ids(emulator)
    assert leftovers(tmp_path) == []


def test_a_record_that_cannot_be_removed_after_the_publish_does_not_fail_the_run(
    emulator, deyel_conn, tmp_path, capsys
):
    store = FailingStore("none")
    failed_first_attempt(emulator, tmp_path, store)
    store.failing = "delete"
    capsys.readouterr()

    summary, requests = attempt(emulator, operator(tmp_path), store, try_number=2)

    assert summary is not None and requests == 49 and summary["records"] == RECORDS
    assert "could not remove the resume record (RuntimeError)" in logged(capsys)
    ids = published_ids(tmp_path)
    assert len(ids) == len(set(ids)) == RECORDS
    assert leftovers(tmp_path) == []
    # Its parts are published: a later attempt of the run that finds the record reads the whole window.
    store.failing = "none"
    capsys.readouterr()
    summary, requests = attempt(emulator, operator(tmp_path), store, try_number=3, max_tries=3)
    assert summary is not None and requests == FULL_RUN and "is gone" in logged(capsys)
    assert store.values == {}


@pytest.fixture
def memory_store():
    """fsspec's in-memory filesystem (no rename: move is copy then delete), attached as a provider's is."""
    memory = fsspec.filesystem("memory")
    attach("memory", fs=memory)
    yield memory
    memory.store.clear()


def test_an_object_store_output_resumes_too(emulator, deyel_conn, store, capsys, memory_store):
    """Staged parts are objects beside the output (and so is the record, without a task state store)."""
    folder = ObjectStoragePath(f"memory://lake/resume-{uuid.uuid4().hex}")
    cut_at(emulator, CUT)
    summary, _ = attempt(emulator, operator(folder), store)
    emulator.clear_faults()
    assert summary is None
    staged = leftovers(folder)
    assert len([name for name in staged if ".tmp-" in name]) == 108
    assert ("r.jsonl.resume.json" in staged) == (store is None)
    capsys.readouterr()

    summary, requests = attempt(emulator, operator(folder), store, try_number=2)

    assert summary is not None and requests == 49
    assert f"resuming after an earlier attempt: {STAGED} staged part(s) of 970 records verified" in logged(
        capsys
    )
    ids = published_ids(folder)
    assert len(ids) == len(set(ids)) == RECORDS and sorted(ids) == all_ids(emulator)
    assert leftovers(folder) == []


def ids_of_part(path: Path) -> list[str]:
    if path.name.endswith(".gz"):
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
        return [json.loads(line)["idObjectValue"] for line in lines]
    with path.open(newline="", encoding="utf-8") as text:
        return [row["idObjectValue"] for row in csv.DictReader(text)]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("r.jsonl.gz", {"compression": "gzip"}),
        # Notes hold line breaks: a CSV part's records are its rows, not its lines.
        ("r.csv", {"format": "csv", "fields": ["idObjectValue", "dtLastUpdate", "dsNotes"]}),
    ],
)
def test_gzip_and_csv_parts_resume_too(emulator, deyel_conn, tmp_path, capsys, name, options):
    cut_at(emulator, CUT)
    summary, _ = attempt(emulator, operator(tmp_path, name, **options), None)
    emulator.clear_faults()
    assert summary is None
    capsys.readouterr()

    summary, requests = attempt(emulator, operator(tmp_path, name, **options), None, try_number=2)

    # Fewer, larger parts here (gzip's size shows as its buffer is flushed; CSV rows are narrower): more of
    # the slices after the last part is read again, but still far from all.
    assert summary is not None and requests < 0.7 * FULL_RUN
    assert "resuming after an earlier attempt" in logged(capsys)
    manifest = json.loads((tmp_path / f"{name}.parts.json").read_text())
    ids = [i for part in manifest["parts"] for i in ids_of_part(tmp_path / part["name"])]
    assert len(ids) == len(set(ids)) == RECORDS and sorted(ids) == all_ids(emulator)
    assert leftovers(tmp_path) == []


#: The first try, run by a child process (Airflow's task runner is one): killed with SIGKILL, it runs no
#: ``except`` nor ``finally``, so only what it recorded as it went is there for the retry.
CHILD = """
import sys
from pathlib import Path
from tests.test_resume import context_of, operator
operator(Path(sys.argv[1])).execute(context_of(None))
"""


#: The parts the killed child recorded as staged: all it wrote before the held request.
STAGED = 108


def staged_parts(folder: Path) -> int | None:
    """The parts the resume record in ``folder`` lists (None before the first is written)."""
    records = [p for p in folder.iterdir() if p.name.endswith(STATE_SUFFIX)] if folder.exists() else []
    try:
        return len(json.loads(records[0].read_text())["parts"]) if records else None
    except (OSError, ValueError):  # replaced between the listing and the read: asked again
        return None


def test_a_retry_after_a_sigkill_at_70_percent_resumes(emulator, deyel_conn, tmp_path, capsys):
    # Request CUT + 1 is held by the emulator: the child is killed while it waits for it, at 70 %.
    emulator.set_faults([{"action": "delay", "delay_ms": 120_000, "route": "data", "after": CUT, "count": 1}])
    before = emulator.stats()["api_requests"]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "provider"), str(root)])}
    with (tmp_path / "child.log").open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / "out")], cwd=root, env=env, stdout=log, stderr=log
        )
        try:
            # Waits for events, bounded; no assertion depends on the time: the held request arriving, then
            # the child's record of the parts it staged before it (its slices' responses are all in: the
            # request of the next slice goes out before the last one is written, so the record comes later).
            for _ in range(2400):
                held = emulator.stats()["api_requests"] - before > CUT
                if (held and staged_parts(tmp_path / "out") == STAGED) or child.poll() is not None:
                    break
                time.sleep(0.05)
            assert child.poll() is None, (tmp_path / "child.log").read_text()
            assert emulator.stats()["api_requests"] - before == CUT + 1
            assert staged_parts(tmp_path / "out") == STAGED
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL
    emulator.clear_faults()
    folder = tmp_path / "out"
    assert len([name for name in leftovers(folder) if ".tmp-" in name]) >= 108  # the open part's too
    capsys.readouterr()

    summary, requests = attempt(emulator, operator(folder), None, try_number=2)

    assert summary is not None and requests == 49 <= 0.35 * FULL_RUN
    assert f"resuming after an earlier attempt: {STAGED} staged part(s) of 970 records verified" in logged(
        capsys
    )
    ids = published_ids(folder)
    assert len(ids) == len(set(ids)) == RECORDS and sorted(ids) == all_ids(emulator)
    assert leftovers(folder) == []  # the killed try's unrecorded part is removed as a leftover
