"""DeyelDeletedInstancesOperator: the ids gone between two snapshots, exactly; a failed read or an untrusted
snapshot reports nothing and keeps the old snapshot; 10M ids in a bounded memory."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelIncompleteError, DeyelSnapshotError
from deyel_provider.operators.deletes import DeyelDeletedInstancesOperator
from deyel_provider.read.id_snapshot import Identity, Snapshot, SnapshotCodec, build
from tests.support.helpers import CLIENT_ID, CLIENT_SECRET, fresh_secrets_masker, outlet_events

FORM = "CRM_ACCOUNT"
AR = "cdCountry=eq:AR"


def operator(folder: Path, search: str | None = None, **kwargs) -> DeyelDeletedInstancesOperator:
    return DeyelDeletedInstancesOperator(
        task_id="deletes",
        form=FORM,
        output=str(folder / "gone.jsonl"),
        snapshot=str(folder / "ids.snapshot"),
        search=search,
        **kwargs,
    )


def run(op: DeyelDeletedInstancesOperator, run_id: str) -> dict:
    events = outlet_events()
    summary = op.execute({"run_id": run_id, "outlet_events": events})  # type: ignore[arg-type]
    assert events[op.asset].extra == summary
    return summary


def gone_ids(folder: Path) -> list[str]:
    lines = (folder / "gone.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["idObjectValue"] for line in lines]


def matching(emulator, search: str | None) -> set[str]:
    store = emulator.state.store
    ids = set()
    for instance_id in store.all_ids(FORM):
        values = store.get(FORM, instance_id)
        if values is not None and (search is None or values.get("cdCountry") == "AR"):
            ids.add(str(instance_id))
    return ids


def mutate(emulator, kind: str, pick: int) -> None:
    """One change another user makes: the emulator's store is what its writer (and its HTTP routes) call."""
    store = emulator.state.store
    live = store.all_ids(FORM)
    if kind == "insert" or not live:
        store.create(FORM, {"dsCompany": "Inserted", "cdCountry": "AR" if pick % 2 else "BR"})
        return
    instance_id = live[pick % len(live)]
    if kind == "delete":
        assert store.delete(FORM, instance_id)
        return
    values = {
        "edit": {"dsNotes": f"edit {pick}"},
        "move_out": {"cdCountry": "BR"},
        "move_in": {"cdCountry": "AR"},
    }
    current = store.get(FORM, instance_id)
    assert current is not None
    store.update(FORM, instance_id, {**values[kind], "dtLastUpdate": current["dtLastUpdate"]}, partial=True)


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["insert", "edit", "delete", "delete", "move_out", "move_out", "move_in"]),
        st.integers(0, 10_000),
    ),
    max_size=25,
)


def test_deletes_and_search_moves_between_snapshots_are_reported_exactly(deyel_conn):
    """Over inserts, edits, deletes and moves in and out of ``search``: each run reports exactly the ids that
    matched at the previous snapshot and match no more; the output carries both snapshot moments."""
    taken: Counter[str] = Counter()
    with run_emulator(records=120) as emulator:
        deyel_conn(url=emulator.url, extra={"cache": "memory"})

        @settings(max_examples=25, deadline=None, database=None, derandomize=True)
        @given(search=st.sampled_from([None, AR]), rounds=st.lists(MUTATIONS, min_size=1, max_size=3))
        def check(search, rounds):
            fresh_secrets_masker()
            with tempfile.TemporaryDirectory() as folder_name:
                folder = Path(folder_name)
                op = operator(folder, search, page_size=20)
                first = run(op, "run-0")
                assert first["gone"] == 0 and gone_ids(folder) == []
                assert first["listed"] == len(matching(emulator, search))
                before, previous = matching(emulator, search), first
                for number, mutations in enumerate(rounds, start=1):
                    for kind, pick in mutations:
                        mutate(emulator, kind, pick)
                    emulator.advance(30)  # the changes settle without the test waiting
                    now = matching(emulator, search)
                    summary = run(op, f"run-{number}")
                    expected = sorted(before - now, key=int)
                    assert gone_ids(folder) == expected
                    assert summary["gone"] == len(expected) and summary["listed"] == len(now)
                    lines = [json.loads(x) for x in (folder / "gone.jsonl").read_text().splitlines()]
                    assert all(
                        line["gone_after"] == previous["gone_by"] <= line["gone_by"] == summary["gone_by"]
                        for line in lines
                    )
                    event("some gone" if expected else "none gone")
                    taken["some gone" if expected else "none gone"] += 1
                    before, previous = now, summary

        check()
    assert taken["some gone"] >= 0.4 * sum(taken.values()), taken


@given(
    old=st.sets(st.one_of(st.integers(0, 3_000).map(str), st.sampled_from(["07", "x", "1e3", str(1 << 29)]))),
    kept=st.integers(0, 10),
)
@settings(max_examples=60, deadline=None, database=None, derandomize=True)
def test_an_id_set_round_trips_and_its_difference_is_exact(old, kept):
    """Bitmap ids, non-canonical decimals and ids past the bitmap: stored and compared exactly."""
    new = {ident for index, ident in enumerate(sorted(old)) if index % 11 < kept} | {"999999", "new"}
    codec = SnapshotCodec(CLIENT_SECRET, "http://x/oauth/token", CLIENT_ID)
    identity = Identity("http://x", CLIENT_ID, FORM, "", "idObjectValue")
    stored = codec.encode(Snapshot(build(old), identity, 1, 2, "r", 0))
    decoded = codec.decode(stored, identity, "here")
    assert len(decoded.ids) == len(old) and all(ident in decoded.ids for ident in old)
    assert sorted(decoded.ids.missing_from(build(new))) == sorted(old - new)
    event("some gone" if old - new else "none gone")


def test_a_lost_page_fails_typed_and_keeps_the_old_snapshot(emulator, deyel_conn, tmp_path):
    """A listing page whose instances never arrive (its count says 20): the read cannot be proven complete,
    the task fails typed, the snapshot and the published output stay byte for byte; the next good run
    reports the one real delete and nothing the lost page hid."""
    op = operator(tmp_path, page_size=20)
    run(op, "run-1")
    snapshot, output = (tmp_path / "ids.snapshot").read_bytes(), (tmp_path / "gone.jsonl").read_bytes()
    emulator.state.store.delete(FORM, 3)
    emulator.advance(30)
    emulator.set_faults(
        [
            {
                "route": "data",
                "action": "status",
                "status": 200,
                "body": [],
                "headers": {"X-Total-Count": "20"},
                "after": 1,
                "count": 1000,
            }
        ]
    )
    with pytest.raises(DeyelIncompleteError, match="X-Total-Count"):
        run(op, "run-2")
    assert (tmp_path / "ids.snapshot").read_bytes() == snapshot
    assert (tmp_path / "gone.jsonl").read_bytes() == output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone.jsonl", "ids.snapshot"]
    emulator.clear_faults()
    assert run(op, "run-3")["gone"] == 1 and gone_ids(tmp_path) == ["3"]


def test_a_rerun_of_the_run_that_published_keeps_its_output_and_reads_nothing(emulator, deyel_conn, tmp_path):
    op = operator(tmp_path)
    run(op, "run-1")
    emulator.state.store.delete(FORM, 5)
    emulator.advance(30)
    assert run(op, "run-2")["gone"] == 1
    emulator.reset()
    again = run(op, "run-2")
    assert again["rerun"] and again["gone"] == 1 and gone_ids(tmp_path) == ["5"]
    assert emulator.stats()["api_requests"] == 0


def test_the_runs_lines_reach_the_log_through_the_module_logger(emulator, deyel_conn, tmp_path, caplog):
    """No logger is handed down: the detection reports through its module's logger, which Airflow puts in
    the task log (and caplog sees), and so do the leftovers it removes (the publishing module's)."""
    caplog.set_level(logging.INFO, logger="deyel_provider")
    op = operator(tmp_path)
    run(op, "run-1")
    emulator.state.store.delete(FORM, 5)
    emulator.advance(30)
    (tmp_path / "gone.jsonl.tmp-0123").write_text("partial")
    run(op, "run-2")
    lines = [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("deyel_provider.")]
    deletes, publish = "deyel_provider.extract.deletes", "deyel_provider.storage.publish"
    first = "first snapshot of CRM_ACCOUNT: 50 ids; nothing to compare with, an empty output"
    assert (deletes, first) in lines
    assert (deletes, "1 of 50 ids listed before are gone") in lines
    assert (publish, "removing gone.jsonl.tmp-0123, left by an interrupted attempt") in lines


@pytest.mark.parametrize("damage", ["body byte", "header count", "garbage", "empty"])
def test_a_tampered_snapshot_is_refused_and_left_alone(emulator, deyel_conn, tmp_path, damage):
    op = operator(tmp_path)
    run(op, "run-1")
    path = tmp_path / "ids.snapshot"
    data = path.read_bytes()
    header, _, body = data.partition(b"\n")
    if damage == "body byte":
        data = header + b"\n" + body[:-1] + bytes([body[-1] ^ 1])
    elif damage == "header count":
        fields = json.loads(header)
        fields["count"] -= 1
        data = json.dumps(fields, sort_keys=True).encode() + b"\n" + body
    elif damage == "garbage":
        data = b"\x00" * 64
    else:
        data = b""
    path.write_bytes(data)
    emulator.state.store.delete(FORM, 9)
    emulator.advance(30)
    if damage == "empty":
        # No header at all is not a snapshot of ours either: refused, never taken for a first run.
        pass
    with pytest.raises(DeyelSnapshotError):
        run(op, "run-2")
    assert path.read_bytes() == data


def test_a_snapshot_of_another_search_or_connection_is_refused(emulator, deyel_conn, tmp_path):
    """Copied under another task's path: another search, another server URL (same secret) are refused."""
    run(operator(tmp_path), "run-1")
    data = (tmp_path / "ids.snapshot").read_bytes()
    with pytest.raises(DeyelSnapshotError, match="another connection, form, search"):
        run(operator(tmp_path, AR), "run-2")
    other_task = operator(tmp_path)
    other_task.task_id = "another_task"
    with pytest.raises(DeyelSnapshotError, match="or task wrote it"):
        run(other_task, "run-2")
    deyel_conn("other", url=emulator.url.replace("127.0.0.1", "localhost"))
    # Another URL is another token URL: the MAC key differs before the identity is even compared.
    with pytest.raises(DeyelSnapshotError, match="fails its MAC"):
        run(operator(tmp_path, deyel_conn_id="other"), "run-3")
    assert (tmp_path / "ids.snapshot").read_bytes() == data


def test_a_link_planted_at_the_snapshot_is_refused_not_taken_for_a_first_run(emulator, deyel_conn, tmp_path):
    """Starting over would hide every delete since the real snapshot: a link there is an error, left alone."""
    op = operator(tmp_path)
    run(op, "run-1")
    (tmp_path / "ids.snapshot").rename(tmp_path / "elsewhere")
    (tmp_path / "ids.snapshot").symlink_to(tmp_path / "elsewhere")
    emulator.state.store.delete(FORM, 2)
    emulator.advance(30)
    with pytest.raises(DeyelSnapshotError, match="not a regular file"):
        run(op, "run-2")
    assert (tmp_path / "ids.snapshot").is_symlink()


def test_another_connections_key_fails_the_mac(tmp_path):
    identity = Identity("http://x", CLIENT_ID, FORM, "", "idObjectValue")
    stored = SnapshotCodec("secret-one", "http://x/oauth/token", CLIENT_ID).encode(
        Snapshot(build(["1", "2"]), identity, 1, 2, "r", 0)
    )
    with pytest.raises(DeyelSnapshotError, match="fails its MAC"):
        SnapshotCodec("secret-two", "http://x/oauth/token", CLIENT_ID).decode(stored, identity, "here")


#: The stated bound: 10M sequential ids (a previous and a current set, the snapshot encoded and decoded, the
#: difference listed) raise the process's peak RSS by less than this (measured: about 6 MB). Each bitmap is
#: 1.25 MB; a set of 10M Python strings would take about 800 MB.
TEN_MILLION_BOUND_MB = 16

_TEN_MILLION = textwrap.dedent(
    """
    from deyel_provider.read.id_snapshot import Identity, Snapshot, SnapshotCodec, build

    def status_mb(key):
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith(key + ":"))
        return int(line.split()[1]) / 1024

    codec = SnapshotCodec("secret", "http://x/oauth/token", "client")
    identity = Identity("http://x", "client", "F", "", "id")
    codec.encode(Snapshot(build(["1"]), identity, 0, 1, "r", 0))  # the key derivation (scrypt) done
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak (VmHWM) starts again from here: the warm-up's scrypt does not count
    base = status_mb("VmRSS")
    N = 10_000_000
    old = build(map(str, range(1, N + 1)))  # generated in C, so the time goes to the code under test
    stored = codec.encode(Snapshot(old, identity, 0, 1, "r", 0))
    del old
    previous = codec.decode(stored, identity, "here")
    current = build(map(str, filter((1000).__rmod__, range(1, N + 1))))  # every thousandth id gone
    gone = sum(1 for _ in previous.ids.missing_from(current))
    print(len(previous.ids), len(current), gone, len(stored), round(status_mb("VmHWM") - base, 1))
    """
)


def test_ten_million_ids_stay_within_the_stated_memory_bound():
    """A child process (its own peak RSS, from after its imports): ids only, generated, no HTTP."""
    done = subprocess.run([sys.executable, "-c", _TEN_MILLION], capture_output=True, text=True, check=True)
    listed, current, gone, stored_bytes, growth_mb = done.stdout.split()
    assert (int(listed), int(current), int(gone)) == (10_000_000, 9_990_000, 10_000)
    assert int(stored_bytes) < 1_000_000  # a sequence compresses to almost nothing
    assert float(growth_mb) < TEN_MILLION_BOUND_MB, done.stdout
