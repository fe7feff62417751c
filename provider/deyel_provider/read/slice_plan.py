"""Cutting a slice that holds more than one response into parts expected to fit one each."""

from __future__ import annotations

import functools
import itertools
import statistics
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from deyel_provider.api.pagination import Page
from deyel_provider.exceptions import DeyelIncompleteError
from deyel_provider.read.slice_values import SliceValues

#: What an overflowing slice costs beyond the one request it was planned to take: its response is thrown
#: away and it is cut in (at least) two parts, one more request each (``_split``).
OVERFLOW_COST = 2
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
    #: The slice's response and whether it provably holds the whole slice (see ``PastSlices._get_proven``).
    future: Future[tuple[Page, bool | None]] | None = field(default=None, repr=False)


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
        """``[start, end)`` cut into parts each expected to fill one response, with room for the unevenness
        the page's own instances show.

        Only a plan: a part that overflows is split again, so a wrong guess costs requests, never records.
        The page's instances are a sample of the range: listed in field order, they are the range's first
        instances (the first part ends at the last of them, and holds them); otherwise a random sample,
        evenly spread inside its span, with about ``total / (n + 1)`` instances beyond each end. The room
        left in each part follows how regular the sample's gaps are (:func:`target`): a form stamped
        evenly fills its responses, a random one keeps the room that costs the fewest requests.
        Without a total, a short page stands in for the count (below), else the densest well-filled slice
        seen so far does.
        """
        with self._lock:
            density = self._density
        capacity = self._walker.capacity
        total = page.total
        if total is None and len(page.records) < capacity and not self._walker.evidence.shortens:
            # A short page, from a server not seen to shorten pages: the range held about that many when it
            # was asked (it lost its proof to an edit meanwhile). The densest slice's density stood in: over
            # a wide, sparse range it planned thousands of parts (MAX_SPLIT), each a request and its proof.
            total = len(page.records)
        listed = [v for v in (self._sample_value(r) for r in page.records) if start <= v < end]
        if len(listed) < 2:
            room = target(capacity, 1.0)
            expected = total if total is not None else _guess(density, start, end, len(page.records))
            return _even(start, end, max(2.0, expected / room))
        low, high = min(listed), max(listed) + 1
        if high - low == 1:
            # Every instance of the sample shares one millisecond: it gets a part of its own (paged if it
            # is crowded), and the rest of the range is split around it.
            parts = [(start, low)] if start < low else []
            parts.append((low, high))
            if high < end:
                parts.append((high, end))
        elif listed == sorted(listed):
            parts = _after_first(start, end, listed, total, capacity)
        else:
            parts = _around_sample(start, end, listed, total, capacity, density)
        return parts if len(parts) > 1 else _even(start, end, 2)


@functools.lru_cache(maxsize=256)
def target(capacity: int, irregularity: float) -> int:
    """The instances a part is planned to hold: the count that costs the fewest requests per instance.

    A part planned for ``m`` instances takes one request, and ``1 + OVERFLOW_COST`` when its count exceeds
    the capacity: ``(1 + OVERFLOW_COST * P(count > capacity)) / m`` requests per instance, minimised over
    ``m``. The count is taken as one more than ``m`` (for where the bounds fall between instances) and
    normal with a standard deviation of ``irregularity * sqrt(m)`` (a renewal process over ``m`` gaps).
    For random stamps (irregularity 1) that leaves about 2.5 standard deviations of room at a capacity of
    1000 (923: 1.096 requests per response's worth, where three deviations, 904, cost 1.108), 2 at 100 (81,
    not 69: 1.28 not 1.45); an evenly stamped form (irregularity 0) fills its responses less one instance.

    :param irregularity: the coefficient of variation of the gaps between instances (1 for random stamps,
        0 for evenly spaced ones).
    """

    def cost(planned: int) -> float:
        spread = irregularity * planned**0.5
        if spread > 0:
            overflow = 1 - statistics.NormalDist(planned + 1, spread).cdf(capacity + 0.5)
        else:
            overflow = float(planned + 1 > capacity)
        return (1 + OVERFLOW_COST * overflow) / planned

    # Candidates up to six standard deviations below the capacity, a twentieth of one apart (whatever the
    # capacity: page_size has no upper bound).
    deviation = irregularity * capacity**0.5
    return min({max(1, int(capacity - 1 - step * deviation / 20)) for step in range(121)}, key=cost)


def irregularity(values: Sequence[int]) -> float:
    """The coefficient of variation of the gaps between sorted ``values`` (at least two distinct)."""
    gaps = [b - a for a, b in itertools.pairwise(values)]
    mean = sum(gaps) / len(gaps)
    variance = sum((g - mean) ** 2 for g in gaps) / len(gaps)
    return float(variance**0.5 / mean)


def _guess(density: float | None, low: int, high: int, at_least: float) -> float:
    return max(at_least, density * (high - low)) if density is not None else 2 * at_least


def _after_first(
    start: int, end: int, listed: list[int], total: int | None, capacity: int
) -> list[tuple[int, int]]:
    """A plan from a sample listed in field order: the range's first instances. The first part ends at
    the last of them (it holds the others); the rest follow at the sample's density, the last part running
    to ``end`` (where a lower density would leave some)."""
    first, last = listed[0], listed[-1]
    parts = [(start, last)] if start < last else []
    if total is None:
        parts.append((last, end))  # how many follow is unknown: one part, split when its response shows
        return parts
    rest = total - sum(1 for v in listed if v < last)
    room = target(capacity, irregularity(listed))
    if rest <= room:
        parts.append((last, end))
        return parts
    reach = min(end, last + int(rest * (last - first) / (len(listed) - 1)) + 1)
    middle = _even(last, reach, rest / room)
    middle[-1] = (middle[-1][0], end)
    return parts + middle


def _around_sample(
    start: int, end: int, listed: list[int], total: int | None, capacity: int, density: float | None
) -> list[tuple[int, int]]:
    """A plan from a random sample of the range: even parts over the sample's span widened by the share
    expected beyond each of its ends, the first and last parts running to the range's bounds."""
    n = len(listed)
    low, high = min(listed), max(listed) + 1
    room = target(capacity, 1.0)  # a random sample's gaps say nothing of how evenly the form is stamped
    if total is None:
        inside = _guess(density, low, high, n)
        outside = 0.0
    else:
        inside, outside = total * (n - 1) / (n + 1), total / (n + 1)
    # The span's density carries the instances expected beyond each end of the sample.
    beyond = int(outside * (high - low) / max(inside, 1.0))
    if total is None:
        parts = [(start, low)] if start < low else []
        parts += _even(low, high, inside / room)
        if high < end:
            parts.append((high, end))
        return parts
    wide_low, wide_high = max(start, low - beyond), min(end, high + beyond)
    parts = _even(wide_low, wide_high, (inside + 2 * outside) / room)
    parts[0] = (start, parts[0][1])
    parts[-1] = (parts[-1][0], end)
    return parts


def _even(start: int, end: int, parts: float) -> list[tuple[int, int]]:
    """``[start, end)`` in ``ceil(parts)`` parts of equal width (at least one, at most MAX_SPLIT)."""
    width = end - start
    count = max(1, min(width, MAX_SPLIT, int(-(-parts // 1))))
    bounds = [start + width * i // count for i in range(count + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
