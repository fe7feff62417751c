"""Cutting a window into a few disjoint slices of about equal instance counts, for parts read apart.

Only a plan: every slice is read with the sliced reader's own proofs, so a poor cut costs balance between
the parts, never a record. With a count (the server's total header), each cut is searched for on the
counts of ``[start, t)``; without one, a sample in random order gives quantiles; otherwise the window is
cut in slices of equal width.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence

#: Count requests spent at most on one cut (each a one-instance page).
MAX_PROBES_PER_CUT = 16


def cut_window(
    start: int,
    end: int,
    parts: int,
    *,
    total: int | None,
    sample: Sequence[int],
    count: Callable[[int, int], int | None],
    page_size: int = 1,
) -> list[tuple[int, int]]:
    """``[start, end)`` cut into at most ``parts`` disjoint, adjacent slices covering it, no more than
    responses of ``page_size`` the count fills (a part of less than a response is a task for nothing).

    :param total: the server's count of the window, or None.
    :param sample: field values of instances of the window (a response's), in the order listed.
    :param count: the server's count of ``[a, b)``, or None when it sends none.
    """
    width = end - start
    if parts <= 1 or width <= 1:
        return [(start, end)]
    parts = min(parts, width)
    if total is not None:
        parts = max(1, min(parts, -(-total // max(1, page_size))))
    if parts <= 1:
        return [(start, end)]
    inside = [v for v in sample if start <= v < end]
    if total is not None and total > 0:
        cuts = _cuts_by_count(start, end, parts, total, count, inside)
    else:
        if len(inside) >= 2 * parts and inside != sorted(inside):
            ordered = sorted(inside)
            cuts = [ordered[len(ordered) * k // parts] for k in range(1, parts)]
        else:
            cuts = [start + width * k // parts for k in range(1, parts)]
    bounds = sorted({start, end, *(c for c in cuts if start < c < end)})
    return list(itertools.pairwise(bounds))


def _cuts_by_count(
    start: int,
    end: int,
    parts: int,
    total: int,
    count: Callable[[int, int], int | None],
    sample: Sequence[int],
) -> list[int]:
    """The cuts where ``count(start, cut)`` is nearest ``total * k / parts``: interpolation between the
    counts known so far, a bisection every other probe (skewed stamps would slow interpolation alone). The
    sample's first and last values are counted first: a window far wider than its instances (a full load
    from the epoch) is searched where they are."""
    known_t, known_c = [start, end], [0, total]
    for edge in sorted({min(sample), max(sample) + 1} if sample else set()):
        if start < edge < end:
            counted = count(start, edge)
            if counted is None:
                break
            i = bisect.bisect_left(known_t, edge)
            known_t.insert(i, edge)
            known_c.insert(i, min(max(counted, known_c[i - 1]), known_c[i]))
    tolerance = max(1, total // (parts * 50))
    cuts = []
    for k in range(1, parts):
        goal = total * k / parts
        best, best_miss = None, float("inf")
        for probe in range(MAX_PROBES_PER_CUT):
            i = bisect.bisect_left(known_c, goal)
            i = min(max(i, 1), len(known_c) - 1)
            lo_t, hi_t, lo_c, hi_c = known_t[i - 1], known_t[i], known_c[i - 1], known_c[i]
            if hi_t - lo_t <= 1:
                best = hi_t if abs(hi_c - goal) < abs(goal - lo_c) else lo_t
                break
            if best is None:
                # The nearest count known so far stands in until a probe does better.
                nearest = min(range(len(known_c)), key=lambda j: abs(known_c[j] - goal))
                best, best_miss = known_t[nearest], abs(known_c[nearest] - goal)
            if probe % 2 == 0 and hi_c > lo_c:
                t = lo_t + int((goal - lo_c) * (hi_t - lo_t) / (hi_c - lo_c))
            else:
                t = (lo_t + hi_t) // 2
            t = min(max(t, lo_t + 1), hi_t - 1)
            counted = count(start, t)
            if counted is None:
                break
            # Counts below the present only fall while writers move instances out: keep them monotone.
            counted = min(max(counted, lo_c), hi_c)
            known_t.insert(i, t)
            known_c.insert(i, counted)
            if abs(counted - goal) < best_miss:
                best, best_miss = t, abs(counted - goal)
            if best_miss <= tolerance:
                break
        if best is None:
            best = start + (end - start) * k // parts
        cuts.append(best)
    return cuts
