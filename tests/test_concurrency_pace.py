"""``max_workers="auto"``: the pace a rate limit sets comes from a rate measured, never from an empty one.

Contract: a refusal paces requests at 90% of the rate the server answered them over the second before it, or
over the time since the first request where that is shorter; a refusal that comes before any request was
answered knows no rate and sets no pace (the requests in flight still halve, and the retry waits as the
server says). Before, a refusal at the start (a shared limit another client spent, one 429 in a thousand)
paced the whole load at 1 request/s for 30 s, and a refusal 0.1 s into a run paced at a tenth of the rate
measured: a 40-request load met by one early 429 took minutes.

The controller is driven on a clock of its own (``time`` in its module): requests are "answered" by moving
it, and its waits are read off the same clock, so nothing here waits on the wall clock.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deyel_provider.exceptions import DeyelRateLimitError
from deyel_provider.http import concurrency as concurrency_module
from deyel_provider.http.concurrency import Concurrency, Workers
from tests.support.branches import Branches

REFUSED = DeyelRateLimitError("429 Too Many Requests", status=429)


class Clock:
    """``time`` for the controller: ``monotonic`` reads it, ``sleep`` moves it and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(concurrency_module, "time", fake)
    return fake


def answer(controller: Concurrency, clock: Clock, count: int, seconds: float) -> None:
    """``count`` requests sent and answered one after another over ``seconds``."""
    for _ in range(count):
        controller.before_request()
        clock.now += seconds / count
        controller.note_done()


def waits_for(controller: Concurrency, clock: Clock, requests: int) -> float:
    """The seconds the controller makes ``requests`` more requests wait, sent as soon as allowed."""
    clock.slept.clear()
    for _ in range(requests):
        controller.before_request()
    return sum(clock.slept)


def test_a_refusal_before_any_answer_sets_no_pace(clock):
    controller = Concurrency(Workers("auto"))
    controller.note_retry(REFUSED)
    assert controller.rate_limited == 1 and controller.limit == 1
    assert waits_for(controller, clock, 40) == 0.0  # before: 39 s, one request a second


def test_a_refusal_early_in_a_run_paces_at_the_rate_measured_since_it_started(clock):
    controller = Concurrency(Workers("auto"))
    answer(controller, clock, 20, 0.1)  # 200 requests/s, over 0.1 s
    controller.note_retry(REFUSED)
    # 10 requests at 90% of 200/s: the first at once, then one every 1/180 s (before: every 1/18 s).
    assert waits_for(controller, clock, 10) == pytest.approx(9 / 180)


def test_one_answer_a_moment_before_a_refusal_is_no_rate(clock):
    """One answer 1 ms in, then a refusal: not a rate of 1,000 requests/s to pace at (a pace that high
    would keep nothing under the limit, and hold the next 30 s's pace cap that high too)."""
    controller = Concurrency(Workers("auto"))
    answer(controller, clock, 1, 0.001)
    controller.note_retry(REFUSED)
    assert waits_for(controller, clock, 10) == 0.0
    # The next refusal, after a second of answers, measures the rate (50/s): paced at 45/s.
    clock.now += 5.0
    answer(controller, clock, 50, 1.0)
    controller.note_retry(REFUSED)
    assert waits_for(controller, clock, 10) == pytest.approx(9 / 45)


def test_a_refusal_paces_at_ninety_percent_of_the_rate_answered():
    """For any steady rate answered, over any time before the refusal: the pace is 90% of it (1 request/s
    at the least), measured over the last second, or over the whole run where it is shorter and holds six
    answers at least (fewer: no pace)."""
    branches = Branches()

    @settings(max_examples=60, deadline=None)
    @given(rate=st.integers(2, 400), seconds=st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    def example(rate, seconds):
        clock = Clock()
        original = concurrency_module.time
        concurrency_module.time = clock  # type: ignore[assignment]
        try:
            controller = Concurrency(Workers("auto"))
            count = max(1, round(rate * seconds))
            answer(controller, clock, count, seconds)
            controller.note_retry(REFUSED)
            waited = waits_for(controller, clock, 11)
        finally:
            concurrency_module.time = original  # type: ignore[assignment]
        if seconds < 1 and count < 6:
            assert waited == 0.0
            branches.took("too few answers: no pace")
            return
        if seconds < 1:  # the run so far is the span: every answer in it
            low = high = count / seconds
        else:  # the last second: an answer more or less where one falls on its edge
            low, high = rate - 1, rate + 1
        assert 10 / max(1.0, 0.9 * high) * 0.999 <= waited <= 10 / max(1.0, 0.9 * low) * 1.001, (waited, rate)
        branches.took("paced")

    example()
    branches.assert_share("paced", at_least=0.6)
