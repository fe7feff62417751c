"""The sliced reader's RequestGate: never more places taken than the limit, whatever the threads do; a
closed gate sends every waiter away; a freed place goes to a waiter (tests/test_slice_speed.py shows the
read's next request sent before the previous response is parsed; bench/extract.py what that is worth)."""

from __future__ import annotations

import threading

from deyel_provider.http.concurrency import Concurrency, RequestGate, Workers


def test_no_more_places_are_taken_at_once_than_the_limit():
    gate = RequestGate(Concurrency(Workers(2)))
    lock = threading.Lock()
    taken, peak, rounds = 0, 0, 0

    def worker() -> None:
        nonlocal taken, peak, rounds
        for _ in range(200):
            assert gate.take()
            with lock:
                taken += 1
                peak = max(peak, taken)
                rounds += 1
            with lock:
                taken -= 1
            gate.give_back()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert rounds == 8 * 200  # every thread had its turns (the success branch ran)
    assert peak <= 2
    assert gate.on_wire == 0


def test_a_closed_gate_sends_every_waiter_away():
    gate = RequestGate(Concurrency(Workers(1)))
    assert gate.take()  # the one place, never given back
    answers: list[bool] = []
    waiters = [threading.Thread(target=lambda: answers.append(gate.take())) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    gate.close()
    for waiter in waiters:
        waiter.join(timeout=60)
    assert answers == [False, False, False]
    assert not gate.take()


def test_a_freed_place_goes_to_the_waiter():
    gate = RequestGate(Concurrency(Workers(1)))
    assert gate.take()
    took = threading.Event()

    def waiter() -> None:
        if gate.take():
            took.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    gate.give_back()
    assert took.wait(timeout=60)
    thread.join(timeout=60)
    assert gate.on_wire == 1
