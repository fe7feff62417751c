"""How many requests an extraction keeps in flight: a fixed number, or ``auto``.

``auto`` is additive increase, multiplicative decrease (as TCP does): it starts with one request in flight,
adds one each time a measuring window shows more records per second than the window before, halves on a
rate-limit answer (429 or Deyel's 403 ``REQUEST_LIMIT_EXCEEDED``) and never goes past ``ceiling``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from deyel_provider.exceptions import DeyelConfigError, DeyelRateLimitError

log = logging.getLogger(__name__)

#: Growth must beat the previous window by this factor: noise alone does not add workers.
_GAIN = 1.10
#: Completed requests per measuring window, per request in flight (and at least _MIN_WINDOW).
_WINDOW_PER_WORKER = 3
_MIN_WINDOW = 6


class Concurrency:
    """The number of requests in flight, fixed or adapted to what the server sustains (thread-safe).

    :param setting: a whole number >= 1, or ``"auto"``.
    :param ceiling: the most requests ``auto`` ever keeps in flight.
    """

    def __init__(self, setting: int | str = 1, *, ceiling: int = 8, logger: Any = log) -> None:
        if not isinstance(ceiling, int) or isinstance(ceiling, bool) or ceiling < 1:
            raise DeyelConfigError(f"max_workers_ceiling must be a whole number >= 1, got {ceiling!r}")
        self.auto = setting == "auto"
        if not self.auto and (not isinstance(setting, int) or isinstance(setting, bool) or setting < 1):
            raise DeyelConfigError(f"max_workers must be a whole number >= 1 or 'auto', got {setting!r}")
        self.ceiling = ceiling if self.auto else int(setting)
        self._limit = 1 if self.auto else int(setting)
        self._log = logger
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._window_done = 0
        self._window_records = 0
        #: The best records/s of a window so far: only beating it by _GAIN adds a request in flight.
        self._best_rate: float | None = None
        #: The highest limit reached, and how often a rate limit halved it (for the run's summary).
        self.peak = self._limit
        self.rate_limited = 0

    @property
    def limit(self) -> int:
        with self._lock:
            return self._limit

    def note_done(self, records: int) -> None:
        """A request finished with ``records`` instances: at a window's end, grow if it paid off."""
        if not self.auto:
            return
        with self._lock:
            self._window_done += 1
            self._window_records += records
            if self._window_done < max(_MIN_WINDOW, _WINDOW_PER_WORKER * self._limit):
                return
            elapsed = max(time.monotonic() - self._window_start, 1e-6)
            rate = self._window_records / elapsed
            grow = self._limit < self.ceiling and (self._best_rate is None or rate > self._best_rate * _GAIN)
            self._best_rate = max(rate, self._best_rate or 0.0)
            self._window_start, self._window_done, self._window_records = time.monotonic(), 0, 0
            if grow:
                self._limit += 1
                self.peak = max(self.peak, self._limit)
                self._log.info("max_workers=auto: %d requests in flight (%.0f records/s)", self._limit, rate)

    def note_retry(self, error: BaseException) -> None:
        """The retry policy is about to replay a request; a rate limit halves the requests in flight."""
        if not self.auto or not isinstance(error, DeyelRateLimitError):
            return
        with self._lock:
            self.rate_limited += 1
            halved = max(1, self._limit // 2)
            if halved != self._limit:
                self._log.info(
                    "max_workers=auto: rate limited, %d -> %d requests in flight", self._limit, halved
                )
            self._limit = halved
            # Measure afresh: the rate of the window that hit the limit is no baseline for growth.
            self._best_rate = None
            self._window_start, self._window_done, self._window_records = time.monotonic(), 0, 0
