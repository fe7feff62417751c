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


def _waiting(gate: RequestGate, count: int) -> None:
    """Until ``count`` threads wait at ``gate``: each is counted under the gate's lock before it waits, so
    this reads their state, not a time."""
    pause = threading.Event()
    for _ in range(6000):
        with gate._changed:
            if gate._waiting == count:
                return
        pause.wait(0.01)
    raise AssertionError(f"{count} waiters never waited")


def test_a_free_place_goes_to_the_head_before_the_slices_that_waited_longer():
    """The slice asked for as the read's head (the first half of a head that overflowed) takes the next free
    place before slices that were waiting before it; they then take theirs in turn. One place, held; three
    slices wait, then the head; the place is given back once, and the head has it. Twelve rounds: a gate
    that ignored ``head`` would give the head the place in a round by chance (one in four), not in all."""
    for _ in range(12):
        gate = RequestGate(Concurrency(Workers(1)))
        assert gate.take()
        order: list[str] = []  # list.append is atomic

        def slice_(name: str, head: bool, gate: RequestGate = gate, order: list[str] = order) -> None:
            assert gate.take(head=head)
            order.append(name)
            gate.give_back()

        later = [threading.Thread(target=slice_, args=(f"later-{n}", False), daemon=True) for n in range(3)]
        for thread in later:
            thread.start()
        _waiting(gate, 3)
        head = threading.Thread(target=slice_, args=("head", True), daemon=True)
        head.start()
        _waiting(gate, 4)
        gate.give_back()
        for thread in [head, *later]:
            thread.join(timeout=60)
        assert len(order) == 4  # every slice had its place (the success branch ran)
        assert order[0] == "head"
        assert gate.on_wire == 0


def test_a_head_waiting_for_a_place_is_sent_away_by_a_close_and_so_are_the_others():
    gate = RequestGate(Concurrency(Workers(1)))
    assert gate.take()
    answers: list[tuple[str, bool]] = []
    threads = [
        threading.Thread(target=lambda h=h: answers.append((str(h), gate.take(head=h))), daemon=True)
        for h in (False, True)
    ]
    for thread in threads:
        thread.start()
    _waiting(gate, 2)
    gate.close()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == [("False", False), ("True", False)]
