"""Review of issue 26 (DeyelDeletedInstancesOperator and the mirror): each test is one finding and failed on
1ed844f (F4's now holds the one bound the docs state for every kind of id, since the comparison streams).
Real emulator, real files; only the worker's clock is moved, as tests/conftest.py already does."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from deyel_provider.emulator import run_emulator
from deyel_provider.emulator.clock import Clock
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.deletes import DeyelDeletedInstancesOperator
from tests.support import postgres
from tests.support.helpers import outlet_events
from tests.support.memory import COMPARE_BOUND_MB, compare_in_child

FORM = "CRM_ACCOUNT"
AR = "cdCountry=eq:AR"


def operator(folder: Path, output: str = "gone.jsonl", search: str | None = None, **kwargs):
    return DeyelDeletedInstancesOperator(
        task_id="deletes",
        form=FORM,
        output=str(folder / output),
        snapshot=str(folder / "ids.snapshot"),
        search=search,
        **kwargs,
    )


def run(op: DeyelDeletedInstancesOperator, run_id: str) -> dict:
    return op.execute({"run_id": run_id, "outlet_events": outlet_events()})  # type: ignore[arg-type]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- F1: clearing an older run overwrites the deletes it published -------------------------------------------


def test_clearing_an_older_run_keeps_the_deletes_it_reported(emulator, deyel_conn, tmp_path):
    """The example names one output per run ({{ run_id }}). Run 2 reports id 3; its apply_deletes fails (the
    warehouse was down); run 3 proceeds and reports id 5. Clearing run 2 (to redo its apply) re-executes
    find_deletes: it must give run 2's consumer id 3 again. On 1ed844f it compares the form with run 3's
    snapshot, overwrites run 2's file with nothing, and id 3 is never reported again: the mirror keeps a
    deleted row for ever. It also relabels the snapshot, so clearing run 3 afterwards loses id 5 too."""
    run(operator(tmp_path, "gone-run-1.jsonl"), "run-1")
    emulator.state.store.delete(FORM, 3)
    emulator.advance(30)
    assert run(operator(tmp_path, "gone-run-2.jsonl"), "run-2")["gone"] == 1
    emulator.state.store.delete(FORM, 5)
    emulator.advance(30)
    assert run(operator(tmp_path, "gone-run-3.jsonl"), "run-3")["gone"] == 1
    # The user clears run 2 (its apply_deletes had failed), then run 3.
    run(operator(tmp_path, "gone-run-2.jsonl"), "run-2")
    run(operator(tmp_path, "gone-run-3.jsonl"), "run-3")
    reported = {line["idObjectValue"] for name in ("gone-run-2.jsonl", "gone-run-3.jsonl")
                for line in lines(tmp_path / name)}  # fmt: skip
    assert reported >= {"3", "5"}, f"deletes lost by clearing older runs: only {sorted(reported)} reported"


# -- F2: gone_by is the worker's end-of-read time, not a bound the server's stamps respect ------------------


def edit(emulator, instance_id: int, **values) -> int:
    """Another user's save through the emulator's store; returns its dtLastUpdate stamp."""
    store = emulator.state.store
    current = store.get(FORM, instance_id)
    assert current is not None
    result, stamp = store.update(
        FORM, instance_id, {**values, "dtLastUpdate": current["dtLastUpdate"]}, partial=True
    )
    assert stamp, result
    return int(stamp)


def an_ar_instance(emulator) -> int:
    store = emulator.state.store
    return next(i for i in store.all_ids(FORM) if (store.get(FORM, i) or {}).get("cdCountry") == "AR")


def test_a_version_saved_before_gone_by_but_committed_after_the_read_is_not_behind_gone_by(
    deyel_conn, tmp_path
):
    """docs/extraction.md: "A row whose dtLastUpdate is at or after gone_by is a newer version (the instance
    came back into search) and should be kept"; the example's MERGE refuses, and its DELETE removes, any
    version older than gone_by. A save stamped during the read but visible only when it commits (commit lag
    below settle_seconds, which the reader tolerates) brings the instance back into ``search`` with a
    dtLastUpdate BEFORE gone_by: the mirror deletes a live row and refuses to bring it back until the next
    edit. gone_by must not exceed what the read had settled (the server's Date less settle_seconds)."""
    with run_emulator(records=50, commit_lag_ms=5_000) as emulator:
        deyel_conn(url=emulator.url)
        x = an_ar_instance(emulator)
        op = operator(tmp_path, search=AR)
        run(op, "run-1")
        edit(emulator, x, cdCountry="BR")  # out of search ...
        emulator.advance(30)
        back = edit(emulator, x, cdCountry="AR")  # ... and back in, saved but not committed yet
        emulator.advance(1)
        run(op, "run-2")
        emulator.advance(30)  # committed: x matches search, with dtLastUpdate == back
        live = emulator.state.store.get(FORM, x)
        assert live is not None and live["cdCountry"] == "AR" and int(live["dtLastUpdate"]) == back
        (line,) = [line for line in lines(tmp_path / "gone.jsonl") if line["idObjectValue"] == str(x)]
        assert back >= line["gone_by"], (
            f"live version {back} is older than gone_by {line['gone_by']}: the documented consumer rule "
            f"deletes a live instance from the mirror"
        )


@pytest.mark.parametrize("skew_s", [-60, 60])
def test_gone_by_agrees_with_the_servers_stamps_under_a_tolerated_clock_skew(
    emulator, deyel_conn, tmp_path, monkeypatch, skew_s
):
    """gone_by is the WORKER's clock (deletes.py ``_now_ms(hook)``) but consumers compare it with
    dtLastUpdate, the SERVER's stamps; the reader tolerates max_clock_skew_seconds (300 s) between them.
    Worker 60 s behind: an instance edited then deleted gets a gone_by before its last version, so the
    example's ``DELETE ... WHERE t.dt_last_update < g.gone_by`` keeps the deleted row for ever. Worker 60 s
    ahead: an instance that returns into ``search`` seconds after the read has a version older than gone_by,
    which the MERGE refuses and the DELETE removes: a live instance missing from the mirror."""
    monkeypatch.setattr(DeyelHook, "clock", staticmethod(lambda: Clock.latest() + skew_s))
    x = an_ar_instance(emulator)
    search = None if skew_s < 0 else AR
    op = operator(tmp_path, search=search)
    run(op, "run-1")
    if skew_s < 0:
        last = edit(emulator, x, dsNotes="edited, then deleted")
        assert emulator.state.store.delete(FORM, x)
        emulator.advance(30)
        run(op, "run-2")
        (line,) = lines(tmp_path / "gone.jsonl")
        assert line["gone_by"] > last, "the deleted instance's last version is not older than gone_by"
    else:
        edit(emulator, x, cdCountry="BR")
        emulator.advance(30)
        run(op, "run-2")
        (line,) = lines(tmp_path / "gone.jsonl")
        emulator.advance(1)
        back = edit(emulator, x, cdCountry="AR")  # back into search after the read
        assert back >= line["gone_by"], "a version saved after the read is older than gone_by"


# -- F3: two runs at once: the older listing overwrites the newer snapshot ----------------------------------


def test_a_slower_concurrent_run_does_not_replace_a_newer_snapshot(
    emulator, deyel_conn, tmp_path, monkeypatch
):
    """Two attempts at once (a zombie attempt and its retry, two DAGs or runs without max_active_runs=1):
    the one that listed first but published last puts its OLDER ids back as the snapshot. An instance that
    the newer run listed (and the extraction copied) and that is deleted before the next run is then in no
    snapshot's previous ids: never reported, the mirror keeps it for ever. Nothing locks the snapshot or
    refuses to replace a newer one."""
    run(operator(tmp_path, "gone-0.jsonl"), "run-0")
    paused, released = threading.Event(), threading.Event()
    latest = Clock.latest

    def clock() -> float:
        # The older attempt stops once it has its listing (after its first data request).
        if threading.current_thread().name == "older" and not released.is_set():
            if emulator.stats()["api_requests"] >= 1:
                paused.set()
                # No timeout: one that expired on a loaded machine (load 33) let the older attempt publish
                # at the same moment as the newer one, the rename window the module documents.
                released.wait()
        return latest()

    monkeypatch.setattr(DeyelHook, "clock", staticmethod(clock))
    emulator.reset()
    errors: list[BaseException] = []

    def older() -> None:
        try:
            run(operator(tmp_path, "gone-x.jsonl"), "run-x")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=older, name="older")
    thread.start()
    try:
        assert paused.wait(60)
        new_id, _ = emulator.state.store.create(FORM, {"dsCompany": "New", "cdCountry": "AR"})
        emulator.advance(30)
        assert run(operator(tmp_path, "gone-y.jsonl"), "run-y")["listed"] == 51  # lists the new instance
        # The older attempt's proof request (its listing is in) is answered after this: a second later on
        # the server's clock, as a stalled worker's would be. Counting that request's Date in the horizon
        # ranked the older snapshot newer (helper-78; before, only a wall-clock second boundary did it).
        emulator.advance(2)
    finally:
        released.set()  # whatever happened above: the older attempt never waits for ever
    thread.join(600)  # only stops a hang (a read stuck elsewhere): nothing here depends on the time
    assert not thread.is_alive(), "the older attempt never ended"
    assert not errors, errors
    assert emulator.state.store.delete(FORM, new_id)
    emulator.advance(30)
    run(operator(tmp_path, "gone-z.jsonl"), "run-z")
    reported = [line["idObjectValue"] for line in lines(tmp_path / "gone-z.jsonl")]
    assert str(new_id) in reported, "a delete of an instance the newer snapshot listed was never reported"


# -- F4: memory is bounded only for small decimal ids ------------------------------------------------------


@pytest.mark.parametrize("kind", ["uuid", "ten-digit"])
def test_a_million_non_bitmap_ids_stay_within_the_bound_the_docs_state(kind, tmp_path):
    """Review F4: the docs claimed a 16 MB bound for a 10M-id comparison without saying it held only for
    canonical decimals below 2**28; other ids (UUIDs, a Deyel sequence past 268,435,455) went to a Python set
    (about 160 MB per million ten-digit ids, 210 MB per million UUIDs). Since issue 26's streaming
    comparison they are spilled to sorted runs and merge-joined with the snapshot: one bound for every kind
    of id, which docs/extraction.md states and tests/test_deletes_streaming.py holds at 10M ids. Here 1M of
    each kind through the same engine, in a child process from after the previous snapshot exists."""
    measured = compare_in_child(kind, tmp_path, 1_000_000)
    assert measured["gone_exact"] and measured["gone"] == 1000 and measured["runs"] > 0
    assert measured["peak_mb"] < COMPARE_BOUND_MB, f"1M {kind} ids: peak grew {measured}"
    assert measured["imported"] == [], measured
    docs = (Path(__file__).resolve().parent.parent / "docs" / "extraction.md").read_text(encoding="utf-8")
    assert f"the test bounds 10M of each at {COMPARE_BOUND_MB} MB" in " ".join(docs.split())


# -- F5: the mirror example: a NUL in any text value stops the MERGE for good ------------------------------


@pytest.fixture
def mirror_database(monkeypatch):
    """A database of its own on the PostgreSQL at 127.0.0.1:5432 (user postgres), dropped afterwards."""
    yield from postgres.mirror_database(monkeypatch, "deyel_review26")


def mirror_module():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "dags_examples" / "deyel_mirror_postgres.py"
    spec = importlib.util.spec_from_file_location("mirror_example_r26", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_nul_character_in_one_instance_does_not_stop_the_mirror_merge(
    emulator, deyel_conn, tmp_path, mirror_database
):
    """Any user who can edit a Deyel text field can store U+0000 in it; JSON carries it as ``\\u0000``, which
    PostgreSQL's jsonb refuses ("unsupported Unicode escape sequence"). The example casts every line to jsonb
    (``line::jsonb``), so the whole file's MERGE fails, on every retry: no change of that run reaches the
    mirror and the watermark has moved past them. The example should strip or escape it (or store text)."""
    import psycopg2

    from deyel_provider.operators.extract import DeyelExtractOperator

    edit(emulator, 4, dsNotes="before\x00after")
    emulator.advance(30)
    changes = tmp_path / "changes.jsonl"
    DeyelExtractOperator(task_id="extract", form=FORM, output=str(changes), incremental_field=None).execute(
        {}
    )
    module = mirror_module()
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=mirror_database) as conn:
        with conn.cursor() as cursor:
            for statement in module.CREATE_TABLES:
                cursor.execute(statement)
    conn.close()
    module.copy_then(changes.as_uri(), "staging_changes", module.MERGE)
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=mirror_database) as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM deyel_crm_account")
            (count,) = cursor.fetchone()
    conn.close()
    assert count == 50


# -- F1 (follow-up): a cleared run whose published output is gone fails typed, never reports "nothing" -------


def test_a_cleared_run_whose_output_was_overwritten_fails_typed_and_reads_nothing(
    emulator, deyel_conn, tmp_path
):
    """The snapshot remembers each run's output digest: a rerun finding another file there (a shared output
    path, a removed file) cannot re-emit what it reported, and must not silently report nothing."""
    from deyel_provider.exceptions import DeyelSnapshotError

    run(operator(tmp_path, "gone-run-1.jsonl"), "run-1")
    emulator.state.store.delete(FORM, 3)
    emulator.advance(30)
    assert run(operator(tmp_path, "gone-run-2.jsonl"), "run-2")["gone"] == 1
    snapshot = (tmp_path / "ids.snapshot").read_bytes()
    (tmp_path / "gone-run-2.jsonl").write_text("", encoding="utf-8")
    emulator.reset()
    with pytest.raises(DeyelSnapshotError, match="no longer holds them"):
        run(operator(tmp_path, "gone-run-2.jsonl"), "run-2")
    assert emulator.stats()["api_requests"] == 0
    assert (tmp_path / "ids.snapshot").read_bytes() == snapshot


# -- F6: a planted large file is refused on its header, before its body is read ----------------------------


def test_a_planted_large_snapshot_is_refused_on_its_header_before_its_body_is_read(
    emulator, deyel_conn, tmp_path
):
    """On 1ed844f the whole file (up to max_snapshot_bytes + 1) was read before the header was checked: a
    planted file larger than the cap was refused for its size, after reading it. Now the header (at most
    64 KiB) is verified first: the forged header's MAC fails and the body is never read."""
    from deyel_provider.exceptions import DeyelSnapshotError

    op = operator(tmp_path, max_snapshot_bytes=1 << 20)
    run(op, "run-1")
    path = tmp_path / "ids.snapshot"
    header = json.loads(path.read_bytes().partition(b"\n")[0])
    header["count"] += 1  # forged: the MAC no longer holds
    path.write_bytes(json.dumps(header).encode() + b"\n" + b"\0" * (2 << 20))
    with pytest.raises(DeyelSnapshotError, match="fails its MAC") as refused:
        run(op, "run-2")
    assert "After rotating the client secret" in str(refused.value)
