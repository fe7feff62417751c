"""The sliced reader's RequestGate: exactly the limit's places taken at once, never more; a closed or failed
gate refuses every place; a failure keeps its first error. (tests/test_slice_speed.py shows the read's next
request sent before the previous response is parsed, test_abandoned_read.py that a failed slice lets no other
start a request; bench/extract.py what the hand-over is worth.)"""

from __future__ import annotations

import threading

from deyel_provider.http.concurrency import Concurrency, RequestGate, Workers


def test_the_limit_is_exactly_the_places_taken_at_once():
    """Four threads, a limit of two: each holds its place until another holder meets it at a barrier of
    two. A gate letting in more than two shows a peak above two; one letting in fewer breaks the barrier."""
    gate = RequestGate(Concurrency(Workers(2)))
    meet = threading.Barrier(2, timeout=30)
    lock = threading.Lock()
    inside, peak, done = 0, 0, []

    def holder() -> None:
        nonlocal inside, peak
        assert gate.take()
        with lock:
            inside += 1
            peak = max(peak, inside)
        meet.wait()
        with lock:
            inside -= 1
        gate.give_back()
        done.append(True)

    threads = [threading.Thread(target=holder, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(done) == 4  # every holder had its place and met another (the success branch ran)
    assert peak == 2
    assert gate.on_wire == 0


def test_a_closed_gate_refuses_every_place():
    gate = RequestGate(Concurrency(Workers(1)))
    assert gate.take()
    waiter_answer: list[bool] = []
    waiter = threading.Thread(target=lambda: waiter_answer.append(gate.take()), daemon=True)
    waiter.start()
    gate.close()
    waiter.join(timeout=60)
    assert waiter_answer == [False]
    gate.give_back()
    assert not gate.take()  # a free place, but closed


def test_a_failed_gate_keeps_the_first_error_and_refuses_every_place():
    gate = RequestGate(Concurrency(Workers(2)))
    first, second = RuntimeError("first"), RuntimeError("second")
    gate.fail(first)
    gate.fail(second)
    assert gate.failure is first
    assert not gate.take()
