"""What an extraction tells the task log while it runs: slices, records, rate and elapsed time."""

from __future__ import annotations

import logging
import time
from typing import Any

from deyel_provider.exceptions import DeyelConfigError

log = logging.getLogger(__name__)


class Progress:
    """Logs slices, records, rate and elapsed time every ``interval`` seconds while the extraction runs.

    :param interval: seconds between progress lines (the ``progress_interval`` option).
    :param logger: where the run's lines go (the operator passes its task logger); default: this module's.
    """

    def __init__(self, interval: float = 30.0, logger: Any = log) -> None:
        if interval <= 0:
            raise DeyelConfigError(f"progress_interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self.log = logger
        self.begin()

    def begin(self) -> None:
        """Start the clock and the counts (when the reading starts, not when the object was built)."""
        self.started = time.monotonic()
        self._next = self.started + self.interval
        self.slices = 0
        self.records = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def add(self, records: int) -> None:
        self.slices += 1
        self.records += records
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.interval
            self.report("progress")

    def report(self, what: str) -> None:
        elapsed = self.elapsed
        rate = self.records / elapsed if elapsed > 0 else 0.0
        self.log.info(
            "%s: %d slices, %d records, %.0f records/s, %.1f s elapsed",
            what,
            self.slices,
            self.records,
            rate,
            elapsed,
        )
