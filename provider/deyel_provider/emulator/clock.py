"""The emulator's clock for dtLastUpdate stamps and the Date header: the wall clock plus an offset that
tests move forward (``RunningEmulator.advance``) instead of waiting."""

from __future__ import annotations

import threading
import time
import weakref

#: The clocks of the emulators running in this process, for :meth:`Clock.latest`.
_LIVE: weakref.WeakSet[Clock] = weakref.WeakSet()


class Clock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        _LIVE.add(self)

    @staticmethod
    def latest() -> float:
        """The furthest any emulator clock of this process has been moved (the wall clock at least): a
        client's clock for tests that move an emulator's clock instead of waiting, so that time passes for
        the client too (``DeyelHook.clock``, which bounds the server's ``Date``)."""
        return max([time.time(), *(clock.now() for clock in list(_LIVE))])

    def retire(self) -> None:
        """The emulator stopped: its clock no longer counts in :meth:`latest`."""
        _LIVE.discard(self)

    def now(self) -> float:
        """Seconds since the epoch."""
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
