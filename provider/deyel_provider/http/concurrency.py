"""How many requests an extraction keeps in flight: a fixed number, or ``auto``.

``auto`` starts with one request in flight and adds one each time a measuring window shows more requests per
second than the best window before (additive increase), never past ``ceiling``; once paced (below), it adds
one while the requests do not keep up with the pace. A rate-limit answer (429, or
Deyel's 403 ``REQUEST_LIMIT_EXCEEDED``) halves the requests in flight (multiplicative decrease) and also
paces requests at 90% of the rate the server was answering when it refused (over the last second, or since
the first request where that is shorter and holds six answers at least; a refusal with fewer sets no pace,
the rate being unknown): a limit counts requests per second, and a pace sits just under it where whole
numbers of requests in flight swing above and below it.
The refusals of one burst (every request in flight meets the same limit) count once. Each second without
a refusal raises the pace by 3%, up to 97% of the rate refused for _HOLD seconds, then beyond it, so a
limit that was lifted is found again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

from deyel_provider.exceptions import DeyelConfigError, DeyelRateLimitError

log = logging.getLogger(__name__)

#: Growth must beat the best window so far by this factor: noise alone does not add workers.
_GAIN = 1.10
#: Completed requests per measuring window, per request in flight (and at least _MIN_WINDOW).
_WINDOW_PER_WORKER = 3
_MIN_WINDOW = 6
#: After a refusal, the pace is this share of the rate the server was answering; it then grows by _PROBE
#: per second without one.
_BACKOFF_PACE = 0.9
_PROBE = 1.03
#: Seconds of completed requests that measure "the rate the server was answering".
_RATE_SPAN = 1.0
#: For this many seconds after a refusal the pace stays under _UNDER of the rate that was refused.
_HOLD = 30.0
_UNDER = 0.97
#: The longest a freed place waits to be taken by a waiting request before its giver goes on (see
#: RequestGate.give_back); taken at once in practice, this only bounds a place nobody takes.
_HANDOVER_S = 0.05


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class Workers:
    """``max_workers`` and ``max_workers_ceiling``, checked once when built (an operator builds it when the
    DAG is parsed) and passed down as is: :class:`Concurrency` takes it without checking again.

    :param setting: a whole number >= 1, or ``"auto"``.
    :param ceiling: the most requests ``auto`` ever keeps in flight.
    """

    setting: int | str = 1
    ceiling: int = 8

    def __post_init__(self) -> None:
        if not _whole(self.ceiling):
            raise DeyelConfigError(f"max_workers_ceiling must be a whole number >= 1, got {self.ceiling!r}")
        if self.setting != "auto" and not _whole(self.setting):
            raise DeyelConfigError(f"max_workers must be a whole number >= 1 or 'auto', got {self.setting!r}")

    @property
    def auto(self) -> bool:
        return self.setting == "auto"


#: One request in flight: the default of every request path.
ONE_WORKER = Workers()


class Concurrency:
    """The number of requests in flight, fixed or adapted to what the server sustains (thread-safe)."""

    def __init__(self, workers: Workers = ONE_WORKER) -> None:
        self.auto = workers.auto
        fixed = 1 if self.auto else int(workers.setting)
        self.ceiling = workers.ceiling if self.auto else fixed
        self._limit = fixed
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        #: When the first request was sent (the rate a refusal measures is over no more than the run).
        self._started: float | None = None
        self._window_done = 0
        #: The best requests/s of a window so far: only beating it by _GAIN adds a request in flight. (Not
        #: records/s: slices hold very different numbers of instances, requests are what a server serves.)
        self._best_rate: float | None = None
        #: Requests per second once a rate limit was met (None: unpaced), and the next free start time.
        self._pace: float | None = None
        self._next_start = 0.0
        self._last_refusal = self._last_probe = -_HOLD
        self._refused_rate = 0.0
        self._finished: collections.deque[float] = collections.deque()
        #: The highest limit reached, and how often a rate limit was met (for logs and tests).
        self.peak = self._limit
        self.rate_limited = 0

    @property
    def limit(self) -> int:
        with self._lock:
            return self._limit

    def before_request(self) -> None:
        """Wait for the request's turn when a rate limit set a pace (called by the thread that sends it)."""
        if not self.auto:
            return
        with self._lock:
            now = time.monotonic()
            if self._started is None:
                self._started = now
            if self._pace is None:
                return
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self._pace
        if start > now:
            time.sleep(start - now)

    def note_done(self) -> None:
        """A request finished: at a window's end, grow if it paid off."""
        if not self.auto:
            return
        with self._lock:
            now = time.monotonic()
            self._finished.append(now)
            while self._finished and self._finished[0] < now - _RATE_SPAN:
                self._finished.popleft()
            self._window_done += 1
            if self._window_done < max(_MIN_WINDOW, _WINDOW_PER_WORKER * self._limit):
                return
            elapsed = max(now - self._window_start, 1e-6)
            rate = self._window_done / elapsed
            if self._pace is not None:
                # Paced: add requests in flight while they do not keep up with the pace.
                grow = rate < 0.95 * self._pace
            else:
                grow = self._best_rate is None or rate > self._best_rate * _GAIN
            grow = grow and self._limit < self.ceiling
            self._best_rate = max(rate, self._best_rate or 0.0)
            self._window_start, self._window_done = now, 0
            if self._pace is not None and now - self._last_refusal > 1.0:
                self._pace *= _PROBE ** (now - max(self._last_probe, self._last_refusal + 1.0))
                if now - self._last_refusal < _HOLD:
                    self._pace = min(self._pace, max(_UNDER * self._refused_rate, 1.0))
                self._last_probe = now
            if grow:
                self._limit += 1
                self.peak = max(self.peak, self._limit)
                log.info("max_workers=auto: %d requests in flight (%.1f requests/s)", self._limit, rate)

    def note_retry(self, error: BaseException) -> None:
        """The retry policy is about to replay a request: on a rate limit, halve and pace."""
        if not self.auto or not isinstance(error, DeyelRateLimitError):
            return
        with self._lock:
            self.rate_limited += 1
            now = time.monotonic()
            if now - self._last_refusal < _RATE_SPAN / 2:
                return  # the same burst: every request in flight met the same limit
            self._last_refusal = now
            halved = max(1, self._limit // 2)
            # The rate answered over the last _RATE_SPAN, or since the first request where that is
            # shorter (a refusal 0.1 s in would otherwise measure a tenth of it), from _MIN_WINDOW answers
            # at least then (one answer 1 ms in is no rate of 1,000 requests/s). Too few answers, or none,
            # and the rate is unknown, not zero: no new pace (a pace of 1 request/s was held _HOLD
            # seconds), the retry waits as the server says and the next refusal measures again.
            span = min(_RATE_SPAN, now - (self._started if self._started is not None else now))
            answered = sum(1 for t in self._finished if t >= now - _RATE_SPAN)
            measured = answered > 0 and span > 0 and (span >= _RATE_SPAN or answered >= _MIN_WINDOW)
            if measured:
                self._refused_rate = answered / span
                self._pace = max(1.0, _BACKOFF_PACE * self._refused_rate)
            log.info(
                "max_workers=auto: rate limited, %d -> %d requests in flight, %s",
                self._limit,
                halved,
                f"paced at {self._pace:.1f} requests/s"
                if measured
                else "not paced (too few answers to measure a rate)"
                if self._pace is None
                else f"pace kept at {self._pace:.1f} requests/s",
            )
            self._limit = halved
            # Measure afresh: the window that met the limit is no baseline for growth.
            self._best_rate = None
            self._window_start, self._window_done = now, 0


class RequestGate:
    """At most ``concurrency.limit`` slices of a read making requests at once (thread-safe).

    A slice takes a place before its first request and gives it back once it makes no more: with one
    request (its proof left to the consumer), as soon as the response is in, before it is parsed. The place
    goes to a slice waiting its turn, whose request is then sent while the one before is parsed: the server
    does not wait on the client, and never sees more of the read's slices at once than the limit (the
    consumer's own requests, a proof without a count header or a crowded millisecond's pages, are not
    counted: they come on top, as before). A free place goes first to a slice asked for as the read's head
    (``take(head=True)``: the one the consumer waited for when it was asked for, such as the first half of a
    head that overflowed), which would otherwise wait behind the slices after it, and every worker with it,
    as the read's lookahead is bounded (bench/extract.py's parallel table; docs/benchmarks.md). Closing the
    gate (the read stopped, or one of its slices failed: :meth:`fail`) sends
    every waiter away.
    """

    def __init__(self, concurrency: Concurrency) -> None:
        self._concurrency = concurrency
        self._changed = threading.Condition()
        self._on_wire = 0
        self._waiting = 0
        #: Waiters asking for a place as the read's head: the others wait while one does.
        self._heads_waiting = 0
        #: Places taken so far: how a giver sees that its place was taken.
        self._taken = 0
        self._closed = False
        #: The first error a slice failed with (see :meth:`fail`).
        self.failure: BaseException | None = None

    @property
    def on_wire(self) -> int:
        with self._changed:
            return self._on_wire

    def take(self, head: bool = False) -> bool:
        """Wait for a place (``head``: before any waiter that is not); False once the gate is closed (the
        request must not be sent)."""
        with self._changed:
            self._waiting += 1
            self._heads_waiting += head
            try:
                # Bounded under ``auto``: its raising the limit notifies nobody; a waiter sees it within this.
                timeout = _HANDOVER_S if self._concurrency.auto else None
                while not self._closed and (
                    self._on_wire >= self._concurrency.limit or (not head and self._heads_waiting > 0)
                ):
                    self._changed.wait(timeout=timeout)
            finally:
                self._waiting -= 1
                if head:
                    self._heads_waiting -= 1
                    self._changed.notify_all()  # the others wait no more for a head that leaves
            if self._closed:
                return False
            self._on_wire += 1
            self._taken += 1
            self._changed.notify_all()  # a giver waits for this (see give_back)
            return True

    def give_back(self) -> None:
        """Free a place; with a request waiting for one, return once it was taken.

        Waiting here, before this thread parses its response, lets the waiter have the interpreter (the GIL)
        and send its request. Parsing at once kept it waiting for the parse and for Python's switch interval
        (5 ms): measured, the server sat idle a median 7 ms between two requests of 21-24 ms (one worker,
        pages of 1000, 100,000 instances; 0.1 ms after). The wait is bounded: a place nobody takes (the
        limit just lowered) is no reason to hold a response.
        """
        with self._changed:
            self._on_wire -= 1
            # Every waiter looks again: ``auto`` may have raised the limit since the last place was freed.
            self._changed.notify_all()
            if self._waiting and self._on_wire < self._concurrency.limit:
                taken = self._taken
                self._changed.wait_for(lambda: self._taken != taken or self._closed, timeout=_HANDOVER_S)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def fail(self, error: BaseException) -> None:
        """A slice failed with ``error``, which fails the read: close the gate, keep the first error."""
        with self._changed:  # one step: no place is taken between the failure and the close
            if self.failure is None:
                self.failure = error
            self._closed = True
            self._changed.notify_all()
