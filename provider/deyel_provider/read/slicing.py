"""Reading a form through time slices of its incremental field: every instance exactly once, or a typed error.

Paging by offset breaks while someone edits the form: an edit moves an instance out of the listing and every
later instance up one slot, so the instance at the next page boundary is never read. This reader asks for
slices ``field=gte:a,field=lt:b`` instead (documented search operators), each small enough to come back in
one response, so a change elsewhere cannot shift it.

The contract (docs/extraction.md states it for users):

1. Every instance that matches the search for the whole read is yielded exactly once; one that changes
   during the read is yielded once (the version before or after the change); one created or deleted during
   the read at most once.
2. An incremental window ``[start, end)`` that lies in the server's past can only lose instances while it
   is read (an edit moves ``dtLastUpdate`` to the server's present), so the next window gets every change.
3. Where the server's answers do not allow 1 and 2 (the total header disagrees with the instances sent,
   the page parameter is ignored inside a crowded millisecond, the form changes faster than it can be
   read), :class:`~deyel_provider.exceptions.DeyelIncompleteError` says what was seen and what to change.

How: the window is cut at the server's settled present ``t0``: its ``Date`` header less ``settle_ms`` (the
connection's ``settle_seconds``: how long after its stamp a change is surely visible; a ``Date`` further
than ``max_skew_ms`` from the worker's clock is refused). Slices below
``t0`` are read in any order and in parallel, and split while they hold more than one response can:
whether a response holds its whole slice is :class:`~deyel_provider.api.page_walker.PageWalker`'s decision, on
proof only (an empty next page with the first unchanged, or a total shown to count the search; a short page
alone is none). A one-millisecond slice that still holds more is paged, re-read until two passes agree. A
window ending after ``t0`` is waited for (bounded). The part of a full load at or above ``t0`` is read last,
in rounds: each waits until what the last one saw has settled, reads the settled part by slices, and the
rounds end when one response holds the rest (they converge whenever the form is read faster than it is
written; a round that reads no fewer than the one before fails typed). Ids already yielded are dropped, so
an instance edited after its slice was read is not yielded twice.

Assumptions (all Deyel's documented behaviour or the project's switchable ones): every write moves
``dtLastUpdate`` to the server's present, values are epoch milliseconds; a short page ends nothing (a
server that shortens pages after paging sends them too), so without a count header slices are read to an
empty page.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing

from deyel_provider.api.clock import DATE_RESOLUTION_MS, latest_present, server_horizon
from deyel_provider.api.pagination import Page
from deyel_provider.exceptions import DeyelError, DeyelIncompleteError, DeyelWatermarkError
from deyel_provider.read.slice_passes import PastSlices
from deyel_provider.read.slice_requests import ReadStats, Slice, SliceSettings

__all__ = ["ReadStats", "Slice", "SliceSettings", "SlicedReader"]

log = logging.getLogger(__name__)

#: Rounds over the present before giving up on the form ever holding still enough (each waits the margin).
MAX_ROUNDS = 16
#: The longest a window ending in the server's future is waited for before the read fails.
MAX_FUTURE_WAIT_S = 300


class SlicedReader(PastSlices):
    """Reads ``field``-bounded slices of a form's instances; see the module docstring for the contract.

    :param fetch: makes one authenticated GET (endpoint or absolute URL, query) and returns the response.
    :param endpoint: the form's instances collection.
    :param params: other query parameters sent with every request; ``search`` is narrowed per slice.
    :param paging: the connection's paging strategy, used inside crowded milliseconds and to size responses.
    :param settings: the field, id key, date literal and clock (:class:`SliceSettings`).
    :param concurrency: requests in flight (fixed or ``auto``).

    Its constructor is :class:`~deyel_provider.read.slice_requests.SliceRequests`'. The layers below it:
    :mod:`.slice_requests` (one request), :mod:`.slice_values` (what a response may hold),
    :mod:`.slice_plan` (cutting an overflowing slice), :mod:`.slice_passes` (the range below the present,
    crowded milliseconds).
    """

    # -- the read --------------------------------------------------------------------------------------------

    def read(
        self, start: int | None, end: int | None, *, end_at_server_time: bool = False
    ) -> Generator[Slice, None, None]:
        """Yield the slices of ``start <= field < end`` in ascending order.

        :param start: inclusive lower bound, epoch ms; None: from the epoch (a full load).
        :param end: exclusive upper bound, epoch ms; None: no bound (a full load, read up to the present).
        :param end_at_server_time: end the window at the server's settled present instead (``end`` is
            ignored): the watermark of a run without a data interval. ``stats.window_end`` then says where it
            ended.

        Every failure is a :class:`~deyel_provider.exceptions.DeyelError`.
        """
        try:
            yield from self._read(start, end, end_at_server_time)
        except DeyelError:
            raise
        except Exception as exc:
            # The contract promises a typed failure: a bug of ours must not leave as a bare exception (its
            # text may hold server values, so only its type is named).
            raise DeyelIncompleteError(
                f"the read stopped on an unexpected {type(exc).__name__} (a provider bug; please report it "
                f"with the task log): nothing of this read may be published"
            ) from exc

    def horizon(self) -> int:
        """After a full read: a moment every version left unread was stamped at or after, on the server's
        clock (the latest ``Date`` of a response the read accepted, less ``settle_ms``,
        :func:`server_horizon`). A version stamped before it and visible within ``settle_ms`` of its stamp
        was visible to the read's last accepted response, which held everything above the part already
        read; so an instance the read did not list has no version matching the search stamped before it.
        Not a proof request's ``Date``: asked after the listing (a worker stalled in between, for seconds),
        it lists nothing, and counting it claimed a horizon past an instance created meanwhile (an older
        attempt's snapshot then ranked newer than a retry's, and a delete went unreported; helper-78).
        Without a ``Date`` on any of them, this worker's clock when it sent the request of the latest (with
        the wider margin), not when the response was proven, accepted or this is called: a stall after the
        listing is no reason to claim more. With one, that clock is also what the ``Date`` is checked
        against (``max_clock_skew_seconds``): both tell the same moment, where the clock now would count the
        stall as skew. Compare it with ``dtLastUpdate``, never with the worker's clock."""
        asked = self.stats.accepted_clock_ms
        worker_ms = asked if asked is not None else int(self._clock() * 1000)
        return server_horizon(self.stats.accepted_ms, worker_ms, self._settle_ms, self._max_skew_ms)

    def fix_window(
        self, start: int | None, end: int | None, *, end_at_server_time: bool = False
    ) -> tuple[int, int | None, Page | None]:
        """``(start, end, first response)`` of the window :meth:`read` reads, bounded as it bounds it: a
        window ending after the server's settled present is waited for, and ``end_at_server_time`` ends it
        there (a start after the server's present is a ``DeyelWatermarkError``). The response is None for
        an empty window. The fan-out's plan fixes a window once with it, for every part to read."""
        low, end, probe, _ = self._bounds(start, end, end_at_server_time)
        if probe is not None and probe.records and not self._unit_checked:
            # As :meth:`read` checks its first response: asked with no upper bound, it shows a field in a
            # finer unit or stamped ahead, which would otherwise lie after the end, in no part.
            self._check_unit(probe)
        return low, end, probe

    def _bounds(
        self, start: int | None, end: int | None, end_at_server_time: bool
    ) -> tuple[int, int | None, Page | None, int]:
        low = 0 if start is None else int(start)
        if not end_at_server_time and end is not None and end <= low:
            return low, end, None, low
        probe = self._get(low, None if end_at_server_time else end)
        # The server's count of the whole window, for the progress log only (never a proof).
        self.stats.expected = probe.total
        present = self._present(probe)
        if not end_at_server_time and end is not None and end > present:
            # A window that ends after the server's present: a change stamped before its end but made after
            # it was read would fall in no run's window. Wait for the end to pass on the server's clock.
            probe, present = self._wait_for(end, low, probe, present)
        if end_at_server_time:
            # A start after the server's own clock (its Date) is no moment this server has reached: a
            # watermark planted or written from a clock that ran ahead. Clamping it would read nothing,
            # run after run, and succeed. (Between the read horizon and the Date: an empty window.) Without
            # a Date, our clock stands in, off by as much as its margin either way.
            now = latest_present(probe.server_ms, int(self._clock() * 1000))
            if low > now:
                raise DeyelWatermarkError(
                    f"the window starts at {self._field}={low}, {(low - now) / 1000:.0f} s after the "
                    f"server's present ({now}): the stored watermark lies in the server's future (planted, "
                    f"or written while a clock ran ahead), or start_from does; reset the watermark by "
                    f'triggering one run with the conf {{"deyel_watermark_reset": true}} and a start_from in '
                    f"the past (docs/extraction.md, 'Resetting a watermark')"
                )
            if present <= low:
                # Nothing has settled since ``start`` (a run right after the last one): an empty window, the
                # next run takes it all.
                return low, low, None, present
            end = present
        return low, end, probe, present

    def skip(self, ids: Iterable[str]) -> None:
        """Ids another read wrote already (a fan-out's other parts): never yielded, as if read before."""
        for ident in ids:
            self._seen.add(ident)

    def count(self, start: int, end: int | None) -> int | None:
        """The server's count of ``[start, end)`` (its total header on a one-instance page), None without
        one: a plan's estimate, never a proof."""
        return self._get(start, end, size=1).total

    def _read(self, start: int | None, end: int | None, end_at_server_time: bool) -> Iterator[Slice]:
        low, end, probe, present = self._bounds(start, end, end_at_server_time)
        self.stats.window_end = end
        if probe is None:
            return
        if probe.records and not self._unit_checked:
            # On the first response, which a watermark run asks with no upper bound: a field in a finer
            # unit (or stamped ahead) shows there, and would otherwise fall outside every slice below.
            self._check_unit(probe)
        if self._is_whole(probe, low, None if end_at_server_time else end):
            # One response holds the window: a consistent snapshot, nothing can have moved inside it.
            yield self._accept(probe, low, end, clip=end_at_server_time)
            return
        past_end = max(low, present if end is None else min(end, present))
        yield from self._read_past(low, past_end, probe)
        if end is None or end > past_end:
            yield from self._read_present(past_end, end)

    def _wait_for(self, end: int, low: int, probe: Page, present: int) -> tuple[Page, int]:
        """Wait until ``end`` has settled on the server's clock: a window whose end is still inside the margin
        would miss a change stamped before its end but seen after the read. Bounded: a window ending more
        than MAX_FUTURE_WAIT_S after the server's ``Date`` is refused."""
        for _ in range(3):
            lag = (end - present) / 1000
            if lag > MAX_FUTURE_WAIT_S + self._settle_ms / 1000:
                raise DeyelIncompleteError(
                    f"the window ends {lag:.0f} s after the server's present ({self._field} < {end}, "
                    f"settle_seconds included): changes made until then would fall in a window already "
                    f"read; run it once its interval is over on the server's clock (a later schedule, or a "
                    f"data-interval timetable)"
                )
            log.info(
                "the window ends %.1f s after the server's settled present (Date less settle_seconds): "
                "waiting for it",
                lag,
            )
            self._sleep(max(lag, 0.0) + DATE_RESOLUTION_MS / 1000)
            probe = self._get(low, end)
            present = self._present(probe)
            if end <= present:
                return probe, present
        raise DeyelIncompleteError(
            f"the server's clock does not reach the window's end ({self._field} < {end}): its Date "
            f"header does not move; set the window in the past"
        )

    def _read_present(self, start: int, end: int | None) -> Iterator[Slice]:
        """``[start, end)`` at or above the settled present, read after everything below, in rounds.

        A round whose first response does not hold the rest waits until everything written up to then has
        settled (``settle_ms`` plus the ``Date``'s resolution), then reads the part settled by then by slices.
        Each round reads what the writers wrote during the one before, so the rounds converge whenever the
        form is read faster than it is written; a round reading no fewer than the one before (the tail does
        not shrink) fails typed, as does the MAX_ROUNDS-th.
        """
        low = start
        before: int | None = None
        for _ in range(MAX_ROUNDS):
            self.stats.rounds += 1
            page = self._get(low, end)
            if self._is_whole(page, low, end):
                yield self._accept(page, low, end)
                return
            log.info(
                "more than one response of instances at or after the server's settled present: waiting "
                "%.1f s for them to settle",
                (self._settle_ms + DATE_RESOLUTION_MS) / 1000,
            )
            self._sleep((self._settle_ms + DATE_RESOLUTION_MS) / 1000)
            page = self._get(low, end)
            if self._is_whole(page, low, end):
                yield self._accept(page, low, end)
                return
            present = self._present(page)
            upto = present if end is None else min(end, present)
            if upto <= low:
                continue  # the server's clock did not move while we waited: the next round waits again
            repeats, read = self.stats.repeats, 0
            with closing(self._read_past(low, upto, page)) as pieces:  # stopped with this generator
                for piece in pieces:
                    read += len(piece.records)
                    yield piece
            read += self.stats.repeats - repeats
            if end is not None and upto >= end:
                return
            if before is not None and read >= before:
                # Each round reads what was written during the one before: a round reading no fewer than
                # the last means the writers keep pace with the reader, and waiting more will not end it.
                raise DeyelIncompleteError(
                    f"the instances with {self._field} at or after the server's settled present do not "
                    f"shrink from round to round ({before}, then {read}): the form changes faster than it "
                    f"can be read; extract an incremental window (incremental_field and a data interval or a "
                    f"watermark) or use a larger page_size"
                )
            before, low = read, upto
        raise DeyelIncompleteError(
            f"after {MAX_ROUNDS} rounds, more than one response of instances still have {self._field} at or "
            f"after {low} (the server's settled present): the form changes faster than it can be read, or "
            f"holds future {self._field} values; extract an incremental window (incremental_field and a "
            f"data interval or a watermark) or use a larger page_size"
        )
