"""Counters that tests and benchmarks read, and the data-request rate limiter."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any


class Stats:
    """Request counters. ``reset`` zeroes them; the data and the tokens are untouched."""

    _FIELDS = ("token_requests", "tokens_issued", "token_failures", "api_requests", "api_unauthorized")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()
        self._methods: Counter[str] = Counter()
        self._in_flight = 0

    def enter(self) -> None:
        """A data request started: tracks the peak of concurrent requests (proof of parallel clients)."""
        with self._lock:
            self._in_flight += 1
            self._counts["api_in_flight_peak"] = max(self._counts["api_in_flight_peak"], self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def record_method(self, method: str) -> None:
        """A data request with this method arrived (writes are told from reads by it)."""
        with self._lock:
            self._methods[method] += 1

    def methods(self) -> dict[str, int]:
        """Data requests per HTTP method since the last reset."""
        with self._lock:
            return dict(sorted(self._methods.items()))

    def record_status(self, status: int) -> None:
        with self._lock:
            self._statuses[status] += 1
            if status == 401:
                self._counts["api_unauthorized"] += 1

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._statuses.clear()
            self._methods.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {name: self._counts[name] for name in self._FIELDS}
            out["faults_injected"] = self._counts["faults_injected"]
            out["rate_limited"] = self._counts["rate_limited"]
            out["api_in_flight_peak"] = self._counts["api_in_flight_peak"]
            out["api_in_flight"] = self._in_flight
            # JSON object keys are strings; keep them so in-process and HTTP readers see the same dict.
            out["status_counts"] = {str(status): n for status, n in sorted(self._statuses.items())}
        return out


class RateLimiter:
    """Fixed window: at most ``limit`` requests per ``window`` seconds."""

    def __init__(self, limit: int | None, window: float) -> None:
        self._limit = limit
        self._window = window
        self._lock = threading.Lock()
        self._window_start = 0.0
        self._used = 0

    def allow(self) -> bool:
        if self._limit is None:
            return True
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= self._window:
                self._window_start = now
                self._used = 0
            if self._used >= self._limit:
                return False
            self._used += 1
            return True
