"""The emulator's clock for dtLastUpdate stamps and the Date header: the wall clock plus an offset that
tests move forward (``RunningEmulator.advance``) instead of waiting."""

from __future__ import annotations

import threading
import time


class Clock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0

    def now(self) -> float:
        """Seconds since the epoch."""
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
