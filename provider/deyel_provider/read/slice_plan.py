"""Cutting a slice that holds more than one response into parts expected to fit one each."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from deyel_provider.api.pagination import Page
from deyel_provider.exceptions import DeyelIncompleteError
from deyel_provider.read.slice_values import SliceValues

#: Slices are planned to hold a response's capacity less this many standard deviations of a Poisson count
#: (about 70 of 100, 905 of 1000), so that ordinary unevenness rarely overflows one.
SPREAD = 3.0
#: The most parts one slice is cut into at once.
MAX_SPLIT = 4096


@dataclass
class SplitGroup:
    """The parts one slice was cut into: below the present a range only loses instances, so the parts'
    totals cannot add up to more than the whole's (a total that does not count the search does)."""

    total: int | None
    seen: int = 0


@dataclass
class PendingSlice:
    """A slice waiting in the reader's queue, with its request once submitted."""

    start: int
    end: int | None
    parent: SplitGroup | None = None
    future: Future[Page] | None = field(default=None, repr=False)


class SlicePlanner(SliceValues):
    """Plans the parts of an overflowing slice, and checks the parts' totals against the whole's."""

    def _check_parts(self, pending: PendingSlice, page: Page) -> None:
        split = pending.parent
        if split is None or split.total is None or page.total is None:
            return
        split.seen += page.total
        if split.seen > split.total:
            raise DeyelIncompleteError(
                f"the server's '{self._paging.total_header}' says {split.total} instances for a range and "
                f"more than that for its parts: it does not count the search, so it cannot prove a slice "
                f"complete; set the connection's total_header to 'none'"
            )

    def _split(self, start: int, end: int, page: Page) -> Sequence[tuple[int, int]]:
        """``[start, end)`` cut into parts each expected to fit one response with room to spare.

        Only a plan: a part that overflows is split again, so a wrong guess costs requests, never records.
        The page's own instances are a sample of the range: outside their span lie few instances (a random
        sample) or the rest (a page listed in field order), and inside it they are spread evenly. Without a
        total, the densest well-filled slice seen so far stands in for the count.
        """
        with self._lock:
            density = self._density
        capacity = self._walker.capacity
        target = max(1, int(capacity - SPREAD * capacity**0.5))
        total = page.total

        def guess(low: int, high: int, at_least: float) -> float:
            return max(at_least, density * (high - low)) if density is not None else 2 * at_least

        listed = [v for v in (self._sample_value(r) for r in page.records) if start <= v < end]
        if len(listed) < 2:
            expected = total if total is not None else guess(start, end, len(page.records))
            return _even(start, end, max(2.0, expected / target))
        low, high = min(listed), max(listed) + 1
        parts = [(start, low)] if start < low else []
        if listed == sorted(listed):
            # Listed in field order: the sample is the range's beginning, and the rest follows it.
            parts += _even(low, high, len(listed) / target)
            rest = (total - len(listed)) if total is not None else 0
            if high < end and rest > target:
                # Where the rest would end at the sample's density; beyond that, one part to split later.
                reach = min(end, high + int(2 * rest * (high - low) / len(listed)) + 1)
                parts += _even(high, reach, rest / target)
                high = reach
        else:
            n = len(listed)
            inside = total * (n - 1) / (n + 1) if total is not None else guess(low, high, n)
            parts += _even(low, high, inside / target)
        if high < end:
            parts.append((high, end))
        return parts if len(parts) > 1 else _even(start, end, 2)


def _even(start: int, end: int, parts: float) -> list[tuple[int, int]]:
    """``[start, end)`` in ``ceil(parts)`` parts of equal width (at least one, at most MAX_SPLIT)."""
    width = end - start
    count = max(1, min(width, MAX_SPLIT, int(-(-parts // 1))))
    bounds = [start + width * i // count for i in range(count + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
