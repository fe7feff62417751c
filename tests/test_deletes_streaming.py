"""DeyelDeletedInstancesOperator's comparison in a bounded memory (issue 26, "Memory bounded for 10M ids"):
non-decimal ids spill to sorted runs on disk and meet the previous snapshot in a streaming merge-join; the
gone ids are exactly the previous ids minus the current ones on both paths (bitmap and runs); a version-1
snapshot written before this change is still read; 10M ids of either kind stay within a stated peak RSS."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath
from hypothesis import given, settings
from hypothesis import strategies as st

from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError, DeyelSnapshotError
from deyel_provider.extract.deletes import DeletesResult, DeletesSpec, compare_and_publish, open_previous
from deyel_provider.operators.deletes import DeyelDeletedInstancesOperator
from deyel_provider.read.id_runs import RUN_BYTES, CurrentIds
from deyel_provider.read.id_set import IdSet
from deyel_provider.read.id_snapshot import Identity, SnapshotCodec, Stamp
from deyel_provider.read.id_snapshot_body import BodyFacts, BodyReader, BodyWriter, compare
from tests.support.branches import Branches
from tests.support.helpers import CLIENT_ID, CLIENT_SECRET, outlet_events
from tests.support.id_snapshot_v1 import V1_IDENTITY, V1_IDS, V1_SNAPSHOT, V1_TOKEN_URL
from tests.support.memory import COMPARE_BOUND_MB, compare_in_child, peak_memory

FORM = "CRM_ACCOUNT"
IDENTITY = Identity("http://x", CLIENT_ID, FORM, "", "idObjectValue", "dag.deletes")
CODEC = SnapshotCodec(CLIENT_SECRET, "http://x/oauth/token", CLIENT_ID)


def in_bitmap(text: str) -> bool:
    """The documented rule, written out again: canonical decimals below 2**28 are bits."""
    canonical = text == "0" or not text.startswith("0")
    return text.isascii() and text.isdecimal() and canonical and len(text) <= 9 and int(text) < 1 << 28


def expected_order(ids: set[str]) -> list[str]:
    """The output's order: bitmap ids ascending, then the others in Python's order of ``str``."""
    return sorted((i for i in ids if in_bitmap(i)), key=int) + sorted(i for i in ids if not in_bitmap(i))


def spec_in(folder: Path, run_id: str) -> DeletesSpec:
    return DeletesSpec(
        form=FORM,
        output=ObjectStoragePath(f"file://{folder}/gone-{run_id}.jsonl"),
        snapshot=ObjectStoragePath(f"file://{folder}/ids.snapshot"),
        run_id=run_id,
        spill_dir=str(folder / "spill"),
    )


def compare_run(
    folder: Path,
    ids: list[str],
    run_id: str,
    horizon: int,
    *,
    identity: Identity = IDENTITY,
    codec: SnapshotCodec = CODEC,
    batched: bool = False,
    **current: int,
) -> tuple[DeletesResult, list[str], int]:
    """What the operator does once the ids are read (added one by one, or ``batched`` through ``update``
    as the operator adds a page): the result, the gone ids in output order, the runs spilled."""
    spec = spec_in(folder, run_id)
    previous = open_previous(spec, codec, identity)
    try:
        with CurrentIds(spec.spill_dir, **current) as listing:
            if batched:
                listing.update(ids)
            else:
                for ident in ids:
                    listing.add(ident)
            result = compare_and_publish(spec, codec, identity, previous, listing, horizon, horizon)
            spilled = listing.runs_written
    finally:
        if previous is not None:
            previous.source.close()
    lines = [json.loads(line) for line in (folder / f"gone-{run_id}.jsonl").read_text().splitlines()]
    return result, [line["idObjectValue"] for line in lines], spilled


SHAPES = st.one_of(
    st.integers(0, 3_000).map(str),  # the bitmap
    st.integers(1 << 28, 1 << 40).map(str),  # decimal, past the bitmap
    st.uuids().map(str),
    st.integers(0, 10**6).map(lambda n: f"AR-{n}"),
    st.sampled_from(["07", "+7", "1e3", "\u0661\u0662", "\ud800", "x" * 300, "ñandú", "😀", " ", "a\nb"]),
    st.text(min_size=1, max_size=40),
)


def test_the_gone_ids_are_exactly_previous_minus_current_on_both_paths(tmp_path):
    """Over inserts, deletes and id shapes, with runs of a few ids (spilled and merged in rounds) or held in
    memory: each run's output is exactly the previous listing minus this one, in the documented order, and
    the snapshot it stores holds exactly this listing. Both paths run: bitmap ids and spilled ids gone."""
    gone_paths, spills = Branches(), Branches()
    counter = iter(range(10**9))

    @settings(max_examples=50, deadline=None, database=None, derandomize=True)
    @given(
        first=st.sets(SHAPES, min_size=15, max_size=120),
        rounds=st.lists(st.tuples(st.sets(SHAPES, max_size=30), st.integers(0, 4)), min_size=1, max_size=3),
        run_bytes=st.sampled_from([150, 600, RUN_BYTES]),
        fan_in=st.sampled_from([2, 3, 64]),
        data=st.data(),
    )
    def example(first, rounds, run_bytes, fan_in, data):
        folder = tmp_path / f"example-{next(counter)}"
        folder.mkdir()
        before = set(first)
        repeated = sorted(before)[::7]  # a listing may name an id twice: it counts once
        result, gone, _ = compare_run(folder, [*first, *repeated], "r0", 1000)
        assert gone == [] and result.listed == len(before) and result.previous is None
        paths = set()
        for number, (inserted, keep_every) in enumerate(rounds, start=1):
            deleted = data.draw(st.sets(st.sampled_from(sorted(before)))) if before else set()
            if keep_every:
                deleted |= {ident for index, ident in enumerate(sorted(before)) if index % (keep_every + 1)}
            now = (before - deleted) | inserted
            listing = data.draw(st.permutations(sorted(now)))
            result, gone, spilled = compare_run(
                folder,
                listing,
                f"r{number}",
                1000 + number,
                batched=data.draw(st.booleans()),
                run_bytes=run_bytes,
                fan_in=fan_in,
            )
            assert gone == expected_order(before - now)
            assert (result.gone, result.listed, result.previous) == (len(gone), len(now), len(before))
            stored = CODEC.decode((folder / "ids.snapshot").read_bytes(), IDENTITY, "here")
            assert len(stored.ids) == len(now) and all(ident in stored.ids for ident in now)
            paths |= {"bitmap" if in_bitmap(ident) else "spilled" for ident in gone}
            spills.took("spilled to runs" if spilled else "held in memory")
            before = now
        assert not list((folder / "spill").iterdir()), "the private spill folder is removed after each run"
        gone_paths.took("both gone" if len(paths) == 2 else "one kind gone" if paths else "none gone")

    example()
    gone_paths.assert_share("both gone", at_least=0.4, examples=40)
    spills.assert_share("spilled to runs", at_least=0.3, examples=40)


KINDS = {
    "bitmap": st.integers(0, 3_000).map(str),
    "decimal, some zero-led or empty": st.one_of(
        st.integers(0, 3_000).map(str), st.integers(0, 3_000).map(lambda n: f"0{n}"), st.just("")
    ),
    "decimal, some too long for int()": st.one_of(st.integers(0, 3_000).map(str), st.just("9" * 5_000)),
    "past the bitmap": st.integers(1 << 28, 1 << 40).map(str),
    "other": st.uuids().map(str),
    "mixed": SHAPES,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_ids_added_a_batch_at_a_time_are_remembered_as_one_at_a_time(tmp_path, kind):
    """``update`` (the operator adds a page at a time) tells a batch of one kind in C: decimals for the
    bitmap, decimals past it, other ids; a mixed batch (a zero-led, empty or 5000-digit decimal) id by id.
    Over batches of each kind, with repeats, it remembers exactly what ``add`` does: the same bits, the same
    count, the same runs spilled at the same points, the same ids out of them; and so does an IdSet."""
    spills = Branches()

    @settings(max_examples=25, deadline=None, database=None, derandomize=True)
    @given(
        ids=st.lists(KINDS[kind], min_size=8, max_size=5_000),
        run_bytes=st.sampled_from([300, RUN_BYTES]),
    )
    def example(ids, run_bytes):
        ids += ids[:: max(1, len(ids) // 5)]  # repeats
        singly, batched = IdSet(), IdSet()
        for ident in ids:
            singly.add(ident)
        batched.update(iter(ids))
        assert (len(batched), batched._others) == (len(singly), singly._others)
        assert batched._bits.rstrip(b"\0") == singly._bits.rstrip(b"\0")
        with CurrentIds(str(tmp_path), run_bytes) as one, CurrentIds(str(tmp_path), run_bytes) as many:
            for ident in ids:
                one.add(ident)
            many.update(iter(ids))
            assert (many.runs_written, many.decimal_count) == (one.runs_written, one.decimal_count)
            assert list(many.others()) == list(one.others()) and many.bits() == one.bits()
        spills.took("spilled" if one.runs_written else "held")

    example()
    spills.assert_share("held", at_least=0.2, examples=25)
    if kind != "bitmap":  # (canonical) bitmap ids are never spilled
        spills.assert_share("spilled", at_least=0.2, examples=25)


def test_a_version_1_snapshot_is_read_and_replaced_by_a_version_2_one(tmp_path):
    """The fixture was written by the code before this change: its ids compare exactly, the run it
    remembers is kept, and the next snapshot is version 2 (read back the same)."""
    codec = SnapshotCodec(CLIENT_SECRET, V1_TOKEN_URL, CLIENT_ID)
    decoded = codec.decode(V1_SNAPSHOT, V1_IDENTITY, "fixture")
    assert len(decoded.ids) == len(V1_IDS) and all(ident in decoded.ids for ident in V1_IDS)
    (tmp_path / "ids.snapshot").write_bytes(V1_SNAPSHOT)
    now = {*V1_IDS[::2], "new-id", "5"}
    result, gone, _ = compare_run(tmp_path, sorted(now), "run-8", 3000, identity=V1_IDENTITY, codec=codec)
    assert gone == expected_order(set(V1_IDS) - now) and len(gone) == len(V1_IDS) // 2
    assert (result.listed, result.previous, result.gone_after) == (len(now), len(V1_IDS), 2000)
    data = (tmp_path / "ids.snapshot").read_bytes()
    header = json.loads(data.partition(b"\n")[0])
    assert header["v"] == 2 and [run["run_id"] for run in header["runs"]] == ["run-7", "run-8"]
    again = codec.decode(data, V1_IDENTITY, "v2")
    assert len(again.ids) == len(now) and all(ident in again.ids for ident in now)


def test_a_version_1_body_is_parsed_across_its_chunks():
    """A version-1 body's JSON array is parsed a 64 KiB chunk at a time: strings cut by a chunk (escapes,
    ``\\uXXXX`` of non-ASCII text and of a lone surrogate, ids longer than a chunk) come out whole and in
    order; the body is built as the code of f64c678 built it (bitmap, then ``json.dumps(sorted(...))``)."""
    pieces = ["ñandú", '"q"', "back\\slash", "\ud800", "😀", "日本", "tab\t", "x" * 70_000]
    others = sorted({f"{pieces[n % len(pieces)]}-{n}" for n in range(6_000)} | {"y" * 140_000})
    raw = (3).to_bytes(8, "big") + b"\x0e\x00\x01" + json.dumps(others).encode()  # ids 1, 2, 3, 16
    compressed = zlib.compress(raw, 6)
    facts = BodyFacts(4 + len(others), len(raw), len(compressed), hashlib.sha256(compressed).hexdigest())
    reader = BodyReader(io.BytesIO(compressed), 1, facts)
    assert [chunk for _, chunk in reader.bitmap_chunks()] == [b"\x0e\x00\x01"]
    read = [data.decode("utf-8", "surrogatepass") for block in reader.others() for data in block]
    reader.finish()
    assert read == others and len(raw) > 20 * (1 << 16)


def test_a_snapshot_of_a_newer_format_fails_typed_saying_what_to_do(tmp_path):
    header, _, body = V1_SNAPSHOT.partition(b"\n")
    fields = json.loads(header)
    fields["v"] = 3
    with pytest.raises(DeyelSnapshotError, match=r"reads versions 1, 2 .* upgrade this one"):
        CODEC.decode(json.dumps(fields).encode() + b"\n" + body, V1_IDENTITY, "here")


def test_a_body_that_breaks_its_order_fails_typed_and_publishes_nothing(tmp_path):
    """A genuine header over a body whose ids are out of order (only a bug could write one): found while the
    ids stream past, after the form was read; the output is not published, the snapshot stays byte for
    byte, no temporary file or spilled run is left."""
    body_path = tmp_path / "body"
    with body_path.open("wb") as sink:
        writer = BodyWriter(sink)
        writer.bitmap(b"\x0e")  # 1, 2, 3
        writer.block([b"b-id", b"a-id"])
        facts = writer.finish()
    stored = CODEC.header_line(Stamp(IDENTITY, 1000, 1000, "r0", 0, 1000), facts) + body_path.read_bytes()
    body_path.unlink()
    (tmp_path / "ids.snapshot").write_bytes(stored)
    with pytest.raises(DeyelSnapshotError, match=r"cannot be decoded .*out of order"):
        compare_run(tmp_path, ["1", "a-id"], "r1", 2000, run_bytes=20)
    assert (tmp_path / "ids.snapshot").read_bytes() == stored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.snapshot", "spill"]
    assert not list((tmp_path / "spill").iterdir())


def test_the_spilled_runs_are_private_and_removed(tmp_path):
    with CurrentIds(str(tmp_path / "spill"), run_bytes=100) as listing:
        for number in range(20):
            listing.add(f"id-{number}")
        (folder,) = (tmp_path / "spill").iterdir()
        runs = list(folder.glob("run-*"))
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and len(runs) == listing.runs_written >= 5
        assert {stat.S_IMODE(run.stat().st_mode) for run in runs} == {0o600}
        assert [ident for block in listing.others() for ident in block] == sorted(
            f"id-{n}".encode() for n in range(20)
        )
    assert not list((tmp_path / "spill").iterdir())


_FULL_DISK_CHILD = """
import json, os, resource, signal, sys
from deyel_provider.exceptions import DeyelError
from deyel_provider.read.id_runs import CurrentIds
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))  # a disk that holds 1 KiB per file
from deyel_provider.read.spill_room import RoomChecked, no_room
def told(exc):
    return {"error": type(exc).__name__, "text": str(exc), "cause": type(exc.__cause__).__name__}
results = []
try:
    with CurrentIds(sys.argv[1], run_bytes=20_000) as listing:
        for number in range(2000):
            listing.add(f"id-{number:06d}")
        list(listing.others())
    results.append({"error": None})
except DeyelError as exc:
    results.append(told(exc))
try:  # a checked file (deletes.py's output and body): its write past the limit
    room = lambda: no_room("the gone ids", "here", "do this")
    with RoomChecked(open(sys.argv[1] + ".out", "wb"), room) as out:
        out.write(b"x" * 2048)
    results.append({"error": None})
except DeyelError as exc:
    results.append(told(exc))
try:  # an error in flight, then the close flushes the buffer past the limit: the error stays the one raised
    with RoomChecked(open(sys.argv[1] + ".buffered", "wb", buffering=65536), room) as out:
        out.write(b"x" * 2048)  # buffered: written by the close
        raise KeyError("the read failed")
except Exception as exc:
    results.append({**told(exc), "notes": getattr(exc, "__notes__", [])})
print(json.dumps(results))
"""


def test_a_spill_the_disk_cannot_hold_is_a_typed_error_that_names_spill_dir(tmp_path):
    """A full disk while spilling ids (here a file size limit, set in a child: a real failing write, EFBIG)
    was a bare OSError (stop 34's review, LOW 4): it is a DeyelConfigError saying where the ids go, how much
    they take and what to change; the private folder is removed. (Other errors, reads among them, are raised
    as they are: read/spill_room.py.)"""
    spill = tmp_path / "spill"
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(spill)], capture_output=True, text=True, check=True
    )
    result, checked, in_flight = json.loads(done.stdout.splitlines()[-1])
    assert result["error"] == "DeyelConfigError" and result["cause"] == "OSError", result
    assert checked == {
        "error": "DeyelConfigError",
        "text": "no room to write the gone ids in here (File too large): do this",
        "cause": "OSError",
    }
    assert (
        f"no room to write the listed ids in {os.path.realpath(spill)!r} (File too large)" in result["text"]
    )
    assert "raise the file size limit), or set spill_dir to a disk with room" in result["text"]
    assert list(spill.iterdir()) == []
    # An error already raised is not replaced by the no-room error its file's close then finds (stop 38).
    assert (in_flight["error"], in_flight["text"]) == ("KeyError", "'the read failed'"), in_flight
    assert in_flight["notes"] == [
        "closing the file then failed too: no room to write the gone ids in here (File too large): do this"
    ]


def test_the_operator_spills_where_it_is_told_and_leaves_nothing_there(emulator, deyel_conn, tmp_path):
    """Through the real reader and the operator: the emulator's ids are decimals (the bitmap), and the new
    snapshot's body is still written in the private folder made under ``spill_dir``; one delete is
    reported, and nothing is left there afterwards."""
    store = emulator.state.store
    op = DeyelDeletedInstancesOperator(
        task_id="deletes",
        form=FORM,
        output=str(tmp_path / "gone.jsonl"),
        snapshot=str(tmp_path / "ids.snapshot"),
        spill_dir=str(tmp_path / "spill"),
    )
    op.execute({"run_id": "r1", "outlet_events": outlet_events()})  # type: ignore[arg-type]
    store.delete(FORM, 7)
    emulator.advance(30)
    summary = op.execute({"run_id": "r2", "outlet_events": outlet_events()})  # type: ignore[arg-type]
    assert summary["gone"] == 1 and summary["listed"] == summary["previous"] - 1
    lines = (tmp_path / "gone.jsonl").read_text().splitlines()
    assert [json.loads(line)["idObjectValue"] for line in lines] == ["7"]
    assert not list((tmp_path / "spill").iterdir())


# -- 10M ids in a child process: the stated bound --------------------------------------------------------


@pytest.mark.parametrize("kind", ["uuid", "decimal"])
def test_ten_million_ids_compare_within_the_stated_memory_bound(kind, tmp_path):
    """A child process compares 10M ids (generated, no HTTP) with a 10M-id snapshot through the operator's
    own engine, and reads its own peak RSS: exactly the 10,000 removed ids are reported, within the bound."""
    measured = compare_in_child(kind, tmp_path, 10_000_000)
    print(kind, measured)
    assert measured["gone_exact"] and measured["gone"] == 10_000
    assert (measured["listed"], measured["previous"]) == (10_005_000 - 10_005, 10_000_000)
    assert (measured["runs"] > 0) == (kind == "uuid")  # UUIDs went through the runs, decimals the bitmap
    assert measured["peak_mb"] < COMPARE_BOUND_MB, measured
    assert measured["imported"] == [], measured
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone.jsonl", "ids.snapshot"]


# -- review of issue 26: the bitmap is not copied, spill_dir is safe, a killed run's folder is reclaimed ----


def test_the_comparison_holds_no_copy_of_the_bitmap():
    """The largest decimal id a bitmap holds (268,435,455: 32 MiB of bits, which one hostile id can cost)
    is compared and written without a second copy of the bitmap: the stated worst case counts it once."""
    with CurrentIds() as listing:
        listing.add("1")
        listing.add(str((1 << 28) - 1))
        with peak_memory() as peak:
            listed = compare(None, listing, BodyWriter(io.BytesIO()), lambda ident: None)
    assert listed == 2
    assert peak[0] < 4 * 1024 * 1024, peak


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_a_spill_dir_others_can_write_is_refused_before_anything_is_read(tmp_path, mode):
    """Another local user who can rename entries in ``spill_dir`` could swap the private folder for a link
    to theirs between two runs' files, read the ids and plant runs (current ids they chose, signed into
    the next snapshot): such a folder is refused when the listing starts, a sticky one (``/tmp``) is not."""
    spill = tmp_path / "spill"
    spill.mkdir()
    spill.chmod(mode)
    with pytest.raises(DeyelConfigError, match=r"spill_dir .* others can write"):
        CurrentIds(str(spill)).__enter__()
    assert not list(spill.iterdir())
    spill.chmod(mode | stat.S_ISVTX)
    with CurrentIds(str(spill)) as listing:
        listing.add("id-1")
        assert [block for block in listing.others()] == [[b"id-1"]]
    assert not list(spill.iterdir())


_KILLED_RUN = """
import os, signal, sys
from deyel_provider.read.id_runs import CurrentIds
listing = CurrentIds(sys.argv[1], run_bytes=100).__enter__()
for number in range(40):
    listing.add(f"id-{number}")
assert listing.runs_written >= 5
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_folder_of_a_killed_run_is_removed_by_the_next_one_and_a_live_one_is_kept(tmp_path):
    """A worker killed mid-run (SIGKILL, the OOM killer) cannot remove its runs: the next listing under the
    same ``spill_dir`` does, once the dead run's lock is free; the folder of a listing still running (a
    second task on the same worker) is left alone."""
    spill = tmp_path / "spill"
    killed = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(spill)], check=False)
    assert killed.returncode == -signal.SIGKILL
    (dead,) = spill.iterdir()
    assert len(list(dead.glob("run-*"))) >= 5
    with CurrentIds(str(spill), run_bytes=100) as running:
        running.add("id-x")
        (alive,) = set(spill.iterdir()) - {dead}
        with CurrentIds(str(spill)) as later:
            later.add("id-y")
            assert list(later.others()) == [[b"id-y"]]
            assert not dead.exists() and alive.is_dir()
            assert len(list(spill.iterdir())) == 2
        assert list(running.others()) == [[b"id-x"]]
    assert not list(spill.iterdir())


@pytest.mark.parametrize("fan_in", [2, 64])
def test_an_id_listed_across_the_blocks_of_a_run_comes_out_once(tmp_path, fan_in):
    """A run is written with its repeats (dropping them cost a pass over the sorted buffer): the merge drops
    them, also the copies of an id that begin a run's next block (10,000 copies: each run holds them in
    blocks of 1024), whether the runs are merged at once or in rounds first."""
    with CurrentIds(str(tmp_path), run_bytes=100_000, fan_in=fan_in) as listing:
        listing.update(["c", *["b"] * 10_000, "a", "d"])
        assert listing.runs_written == 5  # and the rest when others() is called
        blocks = list(listing.others())
    assert [ident for block in blocks for ident in block] == [b"a", b"b", b"c", b"d"]


def test_long_ids_are_merged_in_blocks_of_bounded_bytes(tmp_path):
    """Blocks were cut at 1024 ids whatever their length: 64 runs of 8 KiB ids (a hostile server's, or a
    form keyed on long text) held a 1 MiB block each while merging, 64 MiB in all. Cut at about 64 KiB too,
    the merge holds a few MiB, and every id comes out once, in order."""
    ids = [f"{number:06d}-".encode() + b"x" * 8192 for number in range(8192)]
    with CurrentIds(str(tmp_path), run_bytes=1 << 20, fan_in=64) as listing:
        for data in reversed(ids):
            listing.add(data.decode())
        assert listing.runs_written >= 60
        with peak_memory() as peak:
            count, last = 0, b""
            for block in listing.others():
                assert block[0] > last and sum(map(len, block)) < 8 << 20
                count, last = count + len(block), block[-1]
    assert count == len(ids) and last == ids[-1]
    assert peak[0] < 16 << 20, peak


def test_the_documented_worst_case_a_full_bitmap_beside_the_runs_stays_within_the_bound(tmp_path):
    """docs/extraction.md: the most a comparison reaches is the 32 MiB bitmap plus the run buffer plus a few
    MB of blocks. 1M UUIDs and one current id of 268,435,455 (the bitmap at its limit): within the same
    bound, the bitmap counted once (the comparison copied it before, past the bound)."""
    measured = compare_in_child("uuid+bitmap", tmp_path, 1_000_000)
    print(measured)
    assert measured["gone_exact"] and measured["gone"] == 1000 and measured["runs"] > 0
    assert (measured["listed"], measured["previous"]) == (1_000_500 - 1001 + 1, 1_000_000)
    assert 32 < measured["peak_mb"] < COMPARE_BOUND_MB, measured
    assert measured["imported"] == [], measured


def test_the_measured_peak_is_the_comparisons_not_airflows_first_use_of_a_path(tmp_path):
    """The child's peak counts the comparison alone. Airflow 3.0 loads its providers manager (about 500
    modules, 33 MB) the first time a process resolves a path's filesystem, whatever the ids: measured after
    the baseline, it put 1M UUIDs beside a full bitmap at 78 MB, past the bound (47 MB on 3.3, which has
    nothing left to load then). The child resolves both paths first; 10,000 ids then grow the peak by little
    and load no module, on every supported Airflow."""
    measured = compare_in_child("uuid", tmp_path, 10_000)
    assert measured["gone_exact"] and measured["gone"] == 10 and measured["runs"] == 0
    assert measured["imported"] == [], measured
    assert measured["peak_mb"] < 8, measured


def test_an_id_longer_than_the_bound_on_an_id_fails_typed_and_keeps_the_snapshot(
    emulator, deyel_conn, tmp_path
):
    """A hostile server (or an ``id_field`` naming a text field) could send ids as long as a page: each one a
    run of its own, and a merge of 64 such runs holds one of each. An id longer than the bound the write-back
    already applies (1024 characters, Deyel's are short numbers) fails the task typed, the snapshot kept
    byte for byte and nothing spilled."""
    store = emulator.state.store
    for number in store.all_ids(FORM):
        store.touch(FORM, number, {"dsCompany": f"company-{number}"})  # a distinct key: read as the id
    deyel_conn("by_company", extra={"id_field": "dsCompany"})
    op = DeyelDeletedInstancesOperator(
        task_id="deletes",
        form=FORM,
        output=str(tmp_path / "gone.jsonl"),
        snapshot=str(tmp_path / "ids.snapshot"),
        spill_dir=str(tmp_path / "spill"),
        deyel_conn_id="by_company",
    )
    emulator.advance(30)
    assert op.execute({"run_id": "r1", "outlet_events": outlet_events()})["listed"] == len(
        store.all_ids(FORM)
    )
    stored = (tmp_path / "ids.snapshot").read_bytes()
    store.touch(FORM, 7, {"dsCompany": "x" * 1025})
    emulator.advance(30)
    with pytest.raises(DeyelBadResponseError, match=r"1025 characters\) is longer than 1024"):
        op.execute({"run_id": "r2", "outlet_events": outlet_events()})
    assert (tmp_path / "ids.snapshot").read_bytes() == stored
    assert not list((tmp_path / "spill").iterdir())
