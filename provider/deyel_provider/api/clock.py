"""The server's clock as a read may trust it: the latest moment a window may end at (its settled present),
and how far a ``Date`` header may lie from the worker's clock. One rule for the extraction's slices, the
change trigger and the probe."""

from __future__ import annotations

import time

from deyel_provider.exceptions import DeyelClockSkewError

#: The connection's ``settle_seconds`` default, in ms: how long after its stamp a change is surely visible
#: and the server's ``Date`` trusted (a Date ahead of the stamping clock plus a commit lag; see
#: docs/extraction.md).
DEFAULT_SETTLE_MS = 10_000
#: The connection's ``max_clock_skew_seconds`` default, in ms: a ``Date`` further than this from the
#: worker's clock ends no window.
DEFAULT_MAX_SKEW_MS = 300_000
#: The server's ``Date`` has whole seconds: the present it gives may be this much behind the real one.
DATE_RESOLUTION_MS = 1_000
#: Without a ``Date`` header our own clock stands in, and it may be off by minutes.
LOCAL_CLOCK_MARGIN_MS = 300_000


def latest_present(server_ms: int | None, worker_ms: int) -> int:
    """The latest the server's present can be: its ``Date``, or without one the worker's clock plus
    :data:`LOCAL_CLOCK_MARGIN_MS` (our clock may be off by that much either way)."""
    return server_ms if server_ms is not None else worker_ms + LOCAL_CLOCK_MARGIN_MS


def settled_present(server_ms: int | None, worker_ms: int, settle_ms: int, max_skew_ms: int) -> int:
    """The latest moment a window may end at: the earlier of the server's ``Date`` and the worker's clock,
    less the settle margin; without a ``Date``, the worker's clock with a wider margin.

    The earlier of the two: a ``Date`` ahead of the clock that stamps ``dtLastUpdate`` (a proxy, another
    node) by more than the margin would end a window after changes not yet stamped, and they would fall in
    no window. A ``Date`` ahead of the worker's clock is never trusted past it; one behind it only ends the
    window earlier (the next run reads the rest). One further than ``max_skew_ms`` either way is refused
    (:func:`check_server_clock`).
    """
    if server_ms is None:
        return worker_ms - LOCAL_CLOCK_MARGIN_MS - settle_ms
    check_server_clock(server_ms, worker_ms, max_skew_ms)
    return min(server_ms, worker_ms) - settle_ms


def server_horizon(server_ms: int | None, worker_ms: int, settle_ms: int, max_skew_ms: int) -> int:
    """The latest moment the server surely stamped everything before: its ``Date`` less the settle margin
    (without a ``Date``, the worker's clock with the wider margin of :func:`settled_present`).

    Unlike :func:`settled_present` the worker's clock does not cap it: this is a bound compared with the
    server's own stamps (``dtLastUpdate``), so a worker clock behind the server's must not pull it back past
    versions the read already saw settled. A ``Date`` further than ``max_skew_ms`` from the worker's clock is
    refused as there."""
    if server_ms is None:
        return worker_ms - LOCAL_CLOCK_MARGIN_MS - settle_ms
    check_server_clock(server_ms, worker_ms, max_skew_ms)
    return server_ms - settle_ms


def check_server_clock(server_ms: int, worker_ms: int, max_skew_ms: int) -> None:
    """Refuse a server ``Date`` further than ``max_skew_ms`` from the worker's clock: one such answer (a
    proxy's clock, a node set years ahead) would otherwise end a window, and move a watermark, that far
    off."""
    skew = server_ms - worker_ms
    if abs(skew) > max_skew_ms:
        raise DeyelClockSkewError(
            f"the server's Date header says {utc_text(server_ms)} and this worker's clock "
            f"{utc_text(worker_ms)}: "
            f"{abs(skew) / 1000:.0f} s apart, more than max_clock_skew_seconds ({max_skew_ms / 1000:g} s); "
            f"a present that far off ends no window and moves no watermark: fix the server's or the "
            f"worker's clock (NTP), or raise the connection's max_clock_skew_seconds"
        )


def utc_text(ms: int) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"
