"""What an extraction tells the task log while it runs: slices, records (of how many, where the server counts
them), rate, elapsed time and, with a count, the percentage done and the time left."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from deyel_provider.exceptions import DeyelConfigError

log = logging.getLogger(__name__)


class Progress:
    """Logs slices, records, rate and elapsed time every ``interval`` seconds while the extraction runs; with
    the server's count of the window (:meth:`expect`), also the total, the percentage and an ETA.

    :param interval: seconds between progress lines (the ``progress_interval`` option).
    :param logger: where the run's lines go (the operator passes its task logger); default: this module's.
    :param clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self, interval: float = 30.0, logger: Any = log, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval <= 0:
            raise DeyelConfigError(f"progress_interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self.log = logger
        self._clock = clock
        self.begin()

    def begin(self) -> None:
        """Start the clock and the counts (when the reading starts, not when the object was built)."""
        self.started = self._clock()
        self._next = self.started + self.interval
        self.slices = 0
        self.records = 0
        #: The server's count of what the read will list (its count header on the first response); None
        #: where it sends none. An estimate for the log only: edits during the run move it.
        self.total: int | None = None

    def expect(self, total: int | None) -> None:
        """The server's count of the window's instances, once known (the first response's count header)."""
        if total is not None and total >= 0:
            self.total = total

    @property
    def elapsed(self) -> float:
        return self._clock() - self.started

    def add(self, records: int) -> None:
        self.slices += 1
        self.records += records
        if self._clock() >= self._next:
            self._next = self._clock() + self.interval
            self.report("progress")

    def report(self, what: str) -> None:
        elapsed = self.elapsed
        rate = self.records / elapsed if elapsed > 0 else 0.0
        total = self.total
        if total is None or self.records > total:
            # No count, or one that does not count this read (it counts the page): no percentage to show.
            self.log.info(
                "%s: %d slices, %d records, %.0f records/s, %.1f s elapsed",
                what,
                self.slices,
                self.records,
                rate,
                elapsed,
            )
            return
        share = 100.0 * self.records / total if total else 100.0
        left = (total - self.records) / rate if rate > 0 else None
        self.log.info(
            "%s: %d slices, %d of %d records (%.0f%%), %.0f records/s, %.1f s elapsed, ETA %s",
            what,
            self.slices,
            self.records,
            total,
            share,
            rate,
            elapsed,
            "unknown" if left is None else f"{left:.0f} s",
        )
