"""The heap frozen during an extraction's page loop (issue 24, read/collector.py), and never left frozen:
not by a read abandoned in a reference cycle, not by a run failing mid-read while its error is kept, not in
a child forked during a read. Real extractions against the emulator; the freeze is seen from gc callbacks."""

from __future__ import annotations

import gc
import os
from typing import Any

import pytest

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelSchemaError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.read import collector
from deyel_provider.read.collector import heap_frozen
from tests.support.extracting import extract_pages
from tests.test_slice_speed import CountingFetch, reader_for


def _frozen() -> bool:
    return gc.get_freeze_count() > 0


def _pages(count: int, size: int) -> list[list[dict[str, Any]]]:
    return [[{"dsName": f"n{page}-{n}", "qtSeats": n} for n in range(size)] for page in range(count)]


def test_an_extraction_freezes_the_heap_while_it_writes_its_pages_and_unfreezes_after(tmp_path):
    """Collections run during the page loop see a frozen heap (the speed of issue 24); none is left after."""
    assert not _frozen()
    seen: list[bool] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        # Until the first frozen one: counting the frozen walks them all, an unfrozen heap costs nothing.
        if phase == "start" and not seen and _frozen():
            seen.append(True)

    gc.callbacks.append(watch)
    try:
        result, _ = extract_pages(tmp_path / "out.jsonl", "jsonl", _pages(6, 200))
    finally:
        gc.callbacks.remove(watch)
    assert result.records == 1200
    assert seen == [True]  # a collection ran inside the page loop, on a frozen heap
    assert not _frozen()


def test_a_run_failing_mid_read_leaves_no_freeze_while_its_error_is_kept(tmp_path):
    """A writer's refusal inside the page loop: the error's traceback holds the loop's frame and the read it
    was iterating, suspended. The freeze belonged to that generator before (undone only when it was closed),
    so a process keeping the error (a retry wrapper, a test report) stayed frozen; a plain ``with`` ends it.
    """
    with pytest.raises(DeyelSchemaError) as kept:
        extract_pages(tmp_path / "out.csv", "csv", _pages(3, 50), max_columns=1)
    assert kept.value.__traceback__ is not None
    assert not _frozen()


def test_a_read_abandoned_in_a_reference_cycle_does_not_leave_the_process_frozen(deyel_conn):
    """A read left after its first slice in a cycle (an object holding itself and the iterator). Frozen
    inside the generator, the generator was frozen with the heap: the collector never saw the cycle, its
    ``finally`` never ran, and the process stayed frozen for good (every later read sharing that freeze)."""

    class Holder:
        pass

    with run_emulator(records=300, updated_order="id") as emulator:
        deyel_conn(url=emulator.url, extra={"cache": "memory"})
        holder = Holder()
        holder.itself = holder  # type: ignore[attr-defined]
        holder.read = reader_for(emulator, CountingFetch(DeyelHook()), page_size=100).read(None, None)  # type: ignore[attr-defined]
        assert len(next(holder.read).records) > 0  # type: ignore[attr-defined]
        del holder
        gc.collect()
        try:
            assert not _frozen()
            assert collector._holders == 0
        finally:
            gc.unfreeze()  # the old code's leak must not spill into the tests that follow


def test_nested_blocks_share_one_freeze_and_a_heap_frozen_by_someone_else_stays_so():
    assert not _frozen()
    with heap_frozen():
        assert _frozen()
        with heap_frozen():
            assert _frozen()
        assert _frozen()
    assert not _frozen()
    gc.freeze()
    try:
        with heap_frozen():
            assert _frozen()
        assert _frozen()  # not ours to undo
    finally:
        gc.unfreeze()


def test_a_child_forked_during_a_read_starts_unfrozen_and_freezes_its_own_reads():
    """A child forked while a read holds the freeze has no read running: the parent's freeze is undone in it
    (it would otherwise stay frozen for good, its count of holders the parent's), and the child's own reads
    freeze and unfreeze as in any process. The parent's freeze is untouched."""
    read_end, write_end = os.pipe()
    with heap_frozen():
        pid = os.fork()
        if pid == 0:  # the child: report and leave at once, whatever happens
            code = 1
            try:
                states = [_frozen(), collector._holders]
                with heap_frozen():
                    states.append(_frozen())
                states.append(_frozen())
                os.write(write_end, repr(states).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end) as reader:
            states = reader.read()
        _, status = os.waitpid(pid, 0)
        assert _frozen()
    assert os.waitstatus_to_exitcode(status) == 0
    assert states == repr([False, 0, True, False])
    assert not _frozen()
