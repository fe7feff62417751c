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

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deyel_provider.api.clock import (
    DATE_RESOLUTION_MS,
    DEFAULT_MAX_SKEW_MS,
    DEFAULT_SETTLE_MS,
    latest_present,
    settled_present,
    utc_text,
)
from deyel_provider.api.dates import DATE_LITERALS, finer_unit, in_seconds, is_iso, search_literal
from deyel_provider.api.instance_ids import DEFAULT_ID_FIELD, instance_id, missing_id, not_an_id
from deyel_provider.api.page_walker import PageWalker
from deyel_provider.api.pagination import Fetch, Page, Paging, parse_page
from deyel_provider.exceptions import (
    DeyelConfigError,
    DeyelError,
    DeyelIncompleteError,
    DeyelRequestError,
    DeyelWatermarkError,
)
from deyel_provider.http.concurrency import Concurrency
from deyel_provider.read.id_set import IdSet

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

#: Slices are planned to hold a response's capacity less this many standard deviations of a Poisson count
#: (about 70 of 100, 905 of 1000), so that ordinary unevenness rarely overflows one.
SPREAD = 3.0
#: Passes over a crowded millisecond before giving up on two of them agreeing.
MAX_PASSES = 6
#: Rounds over the present before giving up on the form ever holding still enough (each waits the margin).
MAX_ROUNDS = 16
#: The longest a window ending in the server's future is waited for before the read fails.
MAX_FUTURE_WAIT_S = 300
#: The most parts one slice is cut into at once.
MAX_SPLIT = 4096


@dataclass(frozen=True)
class Slice:
    """The instances of ``start <= field < end`` (``end`` None: no upper bound) not yielded before."""

    start: int
    end: int | None
    records: list[dict[str, Any]]


@dataclass
class ReadStats:
    """What a read did, for logs and the task's XCom."""

    requests: int = 0
    slices: int = 0
    splits: int = 0
    rounds: int = 0
    #: Instances the server sent again after they were yielded (edited during the read, or re-read to check
    #: a crowded millisecond): dropped.
    repeats: int = 0
    #: The end of the window that was read (exclusive, epoch ms): the next run's start. None: no bound.
    window_end: int | None = None


@dataclass
class _Split:
    """The parts one slice was cut into: below the present a range only loses instances, so the parts'
    totals cannot add up to more than the whole's (a total that does not count the search does)."""

    total: int | None
    seen: int = 0


@dataclass
class _Pending:
    start: int
    end: int | None
    parent: _Split | None = None
    future: Future[Page] | None = field(default=None, repr=False)


class SlicedReader:
    """Reads ``field``-bounded slices of a form's instances; see the module docstring for the contract.

    :param fetch: makes one authenticated GET (endpoint or absolute URL, query) and returns the response.
    :param endpoint: the form's instances collection.
    :param params: other query parameters sent with every request; ``search`` is narrowed per slice.
    :param paging: the connection's paging strategy, used inside crowded milliseconds and to size responses.
    :param field: an epoch-millisecond field that every write moves to the present (``dtLastUpdate``).
    :param id_field: the key of the instance id, to drop repeats (``links``: the self link's last segment).
    :param date_literal: how the slice bounds are written in ``search``: ``epoch_ms`` or ``iso``.
    :param concurrency: requests in flight (fixed or ``auto``).
    :param settle_ms: how long after its stamp a change is surely visible: windows end this long before the
        server's ``Date`` (the connection's ``settle_seconds``).
    :param max_skew_ms: a ``Date`` further than this from ``clock`` is refused (``max_clock_skew_seconds``).
    :param clock: the worker's clock, seconds since the epoch (tests pass the emulator's).
    :param sleep: waits that many seconds (tests pass one that moves the emulator's clock instead).
    """

    def __init__(
        self,
        fetch: Fetch,
        endpoint: str,
        params: dict[str, Any] | None,
        paging: Paging,
        *,
        field: str = "dtLastUpdate",
        id_field: str = DEFAULT_ID_FIELD,
        date_literal: str = "epoch_ms",
        concurrency: Concurrency | None = None,
        logger: Any = log,
        settle_ms: int = DEFAULT_SETTLE_MS,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(field, str) or not field.strip() or any(c in field for c in ",=:"):
            raise DeyelConfigError(f"the incremental field must be a field identifier, got {field!r}")
        if id_field == field:  # every instance written in one millisecond would be one "id"
            raise DeyelConfigError(
                f"the connection's 'id_field' extra names the incremental field {field!r}, which is not an "
                f"instance id; set id_field to the key holding the instance id (idObjectValue, id or 'links')"
            )
        self._fetch = fetch
        self._endpoint = endpoint
        self._params = dict(params or {})
        self._search = str(self._params.pop("search", "") or "").strip().strip(",")
        self._paging = paging
        self._field = field
        self._id_field = id_field
        if date_literal not in DATE_LITERALS:
            raise DeyelConfigError(f"date_literal must be one of {list(DATE_LITERALS)}, got {date_literal!r}")
        self._date_literal = date_literal
        #: Whether the field's unit was checked (on the first response that holds an instance).
        self._unit_checked = False
        self._concurrency = concurrency or Concurrency(1)
        self._log = logger
        self._settle_ms = max(0, int(settle_ms))
        self._max_skew_ms = int(max_skew_ms)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        #: Owns the rule "this listing has ended" and what the server's pages have proven (caps, totals).
        self._walker = PageWalker(paging, id_field=id_field)
        #: The densest whole slice seen (instances per ms), for planning without a total: sparse edges of
        #: a window (years with nothing in them) would make an average far too low.
        self._density: float | None = None
        self._seen = IdSet()
        self.stats = ReadStats()

    # -- the read --------------------------------------------------------------------------------------------

    def read(
        self, start: int | None, end: int | None, *, end_at_server_time: bool = False
    ) -> Iterator[Slice]:
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

    def _read(self, start: int | None, end: int | None, end_at_server_time: bool) -> Iterator[Slice]:
        low = 0 if start is None else int(start)
        if not end_at_server_time and end is not None and end <= low:
            self.stats.window_end = end
            return
        probe = self._get(low, None if end_at_server_time else end)
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
                self.stats.window_end = low
                return
            end = present
        self.stats.window_end = end
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
            self._log.info(
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

    def _read_past(self, start: int, end: int, hint: Page) -> Iterator[Slice]:
        """Slices of ``[start, end)``, a range below the server's present: in parallel, split as needed."""
        if end <= start:
            return
        whole = _Split(hint.total)
        queue: deque[_Pending] = deque(_Pending(a, b, whole) for a, b in self._split(start, end, hint))
        pool = ThreadPoolExecutor(max_workers=self._concurrency.ceiling, thread_name_prefix="deyel-slice")
        try:
            while queue:
                self._submit(queue, pool)
                head = queue[0]
                assert head.future is not None and head.end is not None
                if not head.future.done():
                    running = [p.future for p in queue if p.future is not None and not p.future.done()]
                    wait(running, return_when=FIRST_COMPLETED)
                    continue
                queue.popleft()
                page = head.future.result()
                self._check_parts(head, page)
                if self._is_whole(page, head.start, head.end):
                    yield self._accept(page, head.start, head.end)
                elif head.end - head.start > 1:
                    self.stats.splits += 1
                    parts, group = self._split(head.start, head.end, page), _Split(page.total)
                    queue.extendleft(reversed([_Pending(a, b, group) for a, b in parts]))
                else:
                    yield from self._page_inside(head.start, head.end, page)
        finally:
            for pending in queue:
                if pending.future is not None:
                    pending.future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, queue: deque[_Pending], pool: ThreadPoolExecutor) -> None:
        """Keep ``limit`` requests in flight among the next few slices; the head is always asked for."""
        limit = self._concurrency.limit
        in_flight = sum(1 for p in queue if p.future is not None and not p.future.done())
        for position, pending in enumerate(queue):
            # Looking ahead a bounded distance keeps memory to a few responses, however long the queue.
            if position >= 2 * limit + 1:
                break
            if pending.future is None and (position == 0 or in_flight < limit):
                pending.future = pool.submit(self._get, pending.start, pending.end)
                in_flight += 1

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
            self._log.info(
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
            for piece in self._read_past(low, upto, page):
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

    def _page_inside(self, start: int, end: int, first: Page) -> Iterator[Slice]:
        """A one-millisecond slice holding more than a response: page it, pass after pass, until a pass is
        provably whole (a steady total header met) or a pass lists every instance of the one before.
        Repeats are dropped as they come. The slice is in the past: it can only lose instances."""
        previous: set[str] | None = None
        page_size = len(first.records)
        totals: set[int | None] = set()
        for attempt in range(MAX_PASSES):
            page = first if attempt == 0 else self._get(start, end)
            totals = {page.total}
            listed: list[str] = []
            index, last_ids = 0, None
            while True:
                ids = [self._id_of(record) for record in page.records]
                if last_ids is not None and ids and ids == last_ids:
                    raise DeyelIncompleteError(
                        f"{len(ids)}+ instances share {self._field}={start} and the server answers every "
                        f"page of them with the same instances: it ignores the "
                        f"'{self._page_param_name()}' parameter; set the connection's paging options "
                        f"(paging, page_param, offset_param) to what the server understands"
                    )
                if page.total is None and not set(ids).isdisjoint(listed):
                    # A slice in the past only loses instances: a stable order skips, never repeats. A
                    # repeat means the order of these ties changes between requests, and then no number
                    # of passes proves that none was skipped.
                    raise DeyelIncompleteError(
                        f"instances sharing {self._field}={start} are listed in an order that changes "
                        f"between requests (a page repeated instances of an earlier one) and the server "
                        f"sends no total to check them against: set the connection's total_header to the "
                        f"header that counts the search, or a page_size above the instances of one ms"
                    )
                yield self._accept(page, start, end, crowded=True)
                self._walker.observe(page)
                listed += ids
                totals.add(page.total)
                # The end of a pass only on proof (page_walker): an empty page; a short one is no end (a
                # server that shortens pages after paging sends them while more follow).
                if not ids:
                    break
                if page.total is not None and len(listed) >= page.total:
                    break
                if self._paging.strategy == "link":
                    if not page.next_url:
                        break
                    page = self._call(page.next_url, None)
                else:
                    index += 1
                    page = self._get(start, end, index=index, size=page_size)
                last_ids = ids
            distinct = set(listed)
            known = {t for t in totals if t is not None}
            if known and len(totals) == 1:
                (total,) = known
                if len(distinct) == total:
                    return
                if len(distinct) > total or distinct == previous:
                    # Two passes alike and short of a steady total: it counts something else.
                    raise self._counts_disagree(total, len(distinct), start)
            elif not known and previous is not None and previous <= distinct:
                # Every instance of the last pass is still listed: none left during it, so it skipped
                # none (a skip needs one that was read to leave), and it held all that stayed.
                return
            previous = distinct
        raise DeyelIncompleteError(
            f"{len(previous or ())} instances share {self._field}={start} and {MAX_PASSES} passes over them "
            f"did not agree (totals seen: {sorted(t for t in totals if t is not None) or 'none'}): they "
            f"keep changing, or the server pages them in an unstable order; "
            + (
                f"if '{self._paging.total_header}' does not count the search, set total_header to 'none'"
                if any(t is not None for t in totals)
                else "retry later, or use a page_size above the instances written in one millisecond"
            )
        )

    # -- one request -----------------------------------------------------------------------------------------

    def _get(self, start: int, end: int | None, *, index: int = 0, size: int | None = None) -> Page:
        clauses = [self._search] if self._search else []
        clauses.append(f"{self._field}=gte:{self._literal(start)}")
        if end is not None:
            clauses.append(f"{self._field}=lt:{self._literal(end)}")
        query = {**self._params, "search": ",".join(clauses)}
        query.update(self._paging.params_for(index, size or self._paging.page_size))
        try:
            return self._call(self._endpoint, query)
        except DeyelRequestError as refused:
            if refused.status != 400:
                raise
            # Deyel documents no date literal for search values: a 400 here is most often that.
            raise DeyelRequestError(
                f"{refused.detail}; the slice's search bounds {self._field} with {self._date_literal} "
                f"literals (e.g. {self._literal(start)}): if this server writes dates otherwise in search, "
                f"set the connection's date_literal extra (epoch_ms or iso; deyel-probe tells which)",
                status=refused.status,
                method=refused.method,
                path=refused.path,
                errors=refused.errors,
            ) from None

    def _call(self, endpoint: str, query: dict[str, Any] | None) -> Page:
        self._concurrency.before_request()
        page = parse_page(self._fetch(endpoint, query), self._paging)
        with self._lock:
            self.stats.requests += 1
        self._concurrency.note_done()
        return page

    def _check_parts(self, pending: _Pending, page: Page) -> None:
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

    def _is_whole(self, page: Page, start: int, end: int | None) -> bool:
        """Whether ``page`` holds every instance of ``[start, end)``: the page walker's proofs (an empty next
        page with the first unchanged, or a total shown to count the search; a short page alone is none)."""
        return self._walker.holds_all(
            page,
            self._paging.page_size,
            lambda index, size: self._get(start, end, index=index, size=size),
            lambda url: self._call(url, None),
        )

    def _counts_disagree(self, total: int, count: int, at: int | None) -> DeyelIncompleteError:
        where = f" with {self._field}={at}" if at is not None else ""
        return DeyelIncompleteError(
            f"the server's '{self._paging.total_header}' says {total} instances{where} but it sent {count}: "
            f"the total cannot prove a slice complete; if that header does not count the search, set the "
            f"connection's total_header to 'none'"
        )

    def _accept(
        self, page: Page, start: int, end: int | None, *, clip: bool = False, crowded: bool = False
    ) -> Slice:
        """The page's instances not yielded before, after checking each lies in the slice asked for.

        :param clip: keep only those below ``end`` (the whole-window probe of a watermark run asked for no
            upper bound); otherwise one outside the slice means the server ignored the search.
        :param crowded: a page of a crowded millisecond, which says nothing of the form's usual density.
        """
        fresh: list[tuple[int, int, str, dict[str, Any]]] = []
        repeats = 0
        in_response: set[str] = set()  # one response is a consistent snapshot: it lists an instance once
        if not self._unit_checked and page.records:
            self._check_unit(page)
        elif not self._unit_checked and start > 0 and self.stats.requests == 1:
            # The first response was empty: sample an older instance, and with none, a future one (a field
            # in a finer unit lies after every millisecond bound). A healthy empty window costs one more.
            if not self._check_unit(self._sample_before(start)):
                self._check_unit(self._sample_after(self._future_bound(page)), page)
        for record in page.records:
            value = self._value_of(record)
            if value < start or (end is not None and value >= end):
                if clip and end is not None and value >= end:
                    # Past the window's end: settling yet, for the next run, unless no clock has reached
                    # it (a finer unit, a stamping clock running ahead): then no run would ever read it.
                    self._check_future(page, value)
                    continue
                raise DeyelIncompleteError(
                    f"asked for {self._field} in [{start}, {end}) and got an instance with {value}: the "
                    f"server ignores the search, or does not compare dates as epoch milliseconds (the "
                    f"connection's date_literal is {self._date_literal!r})"
                )
            instance_id = self._id_of(record)
            if instance_id in in_response:
                raise DeyelConfigError(not_an_id(self._id_field))
            in_response.add(instance_id)
            if self._seen.add(instance_id):
                fresh.append((value, len(instance_id), instance_id, record))
            else:
                repeats += 1
        # Ordered by (field, id) whatever the server's order or the slicing: reruns write the same bytes.
        fresh.sort(key=lambda entry: entry[:3])
        with self._lock:
            self.stats.slices += 1
            self.stats.repeats += repeats
            # A slice of a few instances says little of the density: only well-filled ones count.
            # (A zero-width slice, which only a whole-window probe can be, says nothing either.)
            if (
                end is not None
                and end > start
                and not crowded
                and len(page.records) >= max(8, self._paging.page_size // 3)
            ):
                self._density = max(self._density or 0.0, len(page.records) / (end - start))
        return Slice(start, end, [entry[3] for entry in fresh])

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

    # -- values ----------------------------------------------------------------------------------------------

    def _present(self, page: Page) -> int:
        """The server's settled present (see :func:`settled_present`)."""
        return settled_present(page.server_ms, int(self._clock() * 1000), self._settle_ms, self._max_skew_ms)

    def _sample_value(self, record: dict[str, Any]) -> int:
        try:
            return self._value_of(record)
        except DeyelIncompleteError:
            return -1  # outside every range: ignored by the plan, and refused when the slice is accepted

    def _value_of(self, record: dict[str, Any]) -> int:
        raw = record.get(self._field)
        try:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw) if isinstance(raw, int) else int(str(raw).strip())
        except (TypeError, ValueError):
            ident = instance_id(record, self._id_field)
            unit = " (ISO 8601 text, not a number)" if is_iso(raw) else ""
            raise DeyelIncompleteError(
                f"instance {ident!r} has {self._field}={str(raw)[:40]!r}{unit}: slicing needs "
                f"epoch-millisecond values in every instance; set incremental_field to such a field"
            ) from None

    def _check_unit(self, page: Page, dated: Page | None = None) -> bool:
        """Refuse a field in epoch seconds (compared with millisecond bounds, every window reads empty), or
        one whose newest value lies after the present (see :meth:`_check_future`). False: nothing to check.

        :param dated: the response whose ``Date`` is the present (default: ``page``)."""
        self._unit_checked = True
        dated = dated or page
        values = [v for v in (self._sample_value(r) for r in page.records) if v > 0]
        if not values:
            return False
        present = dated.server_ms if dated.server_ms is not None else int(self._clock() * 1000)
        newest = max(values)
        if in_seconds(newest, present):
            raise DeyelIncompleteError(
                f"{self._field} holds epoch seconds (newest {newest}: in milliseconds a moment of 1970) "
                f"where epoch milliseconds are expected: every window bounded in milliseconds would read "
                f"nothing; set incremental_field to an epoch-millisecond field"
            )
        self._check_future(dated, newest)
        return True

    def _future_bound(self, page: Page) -> int:
        """The latest value a change can hold by the time of ``page``: its ``Date`` (our clock with its
        margin, without one) plus ``max_skew_ms``. Nothing after it has happened on any sane clock."""
        return latest_present(page.server_ms, int(self._clock() * 1000)) + self._max_skew_ms

    def _check_future(self, page: Page, value: int) -> None:
        """Refuse a value after :meth:`_future_bound`: no window bounded by the server's present would ever
        hold it, so dropping it (a watermark run's probe keeps what lies below its end) loses it for good."""
        bound = self._future_bound(page)
        if value <= bound:
            return
        present = bound - self._max_skew_ms
        where = "the server's Date" if page.server_ms is not None else "this worker's clock (no Date header)"
        unit = finer_unit(value, present)
        why = (
            f"it reads as epoch {unit}, not milliseconds"
            if unit
            else "a moment no clock has reached: the clock stamping instances is running ahead, or the field "
            "is not in epoch milliseconds"
        )
        raise DeyelIncompleteError(
            f"an instance has {self._field}={value}, {(value - present) / 1000:.0f} s after {where} "
            f"({utc_text(present)}), more than max_clock_skew_seconds "
            f"({self._max_skew_ms / 1000:g} s): {why}; "
            f"windows bounded by the server's present would never read it. Fix the stamping clock (NTP), or "
            f"set incremental_field to an epoch-millisecond field"
        )

    def _sample_before(self, start: int) -> Page:
        """One instance older than an empty first window, to check the field's unit with: a field in
        seconds compared with millisecond bounds makes every window empty, so an empty one proves nothing."""
        if not self._paging.pages:
            return Page(records=[])  # one response would hold every older instance
        clauses = [self._search] if self._search else []
        clauses.append(f"{self._field}=lt:{self._literal(start)}")
        query = {**self._params, "search": ",".join(clauses), **self._paging.params_for(0, 1)}
        return self._call(self._endpoint, query)

    def _sample_after(self, moment: int) -> Page:
        """One instance at or after ``moment`` (past the present): only a finer unit or a clock running
        ahead puts one there. Asked only when a window and everything before it were empty."""
        clauses = [self._search] if self._search else []
        clauses.append(f"{self._field}=gte:{self._literal(moment)}")
        query = {**self._params, "search": ",".join(clauses), **self._paging.params_for(0, 1)}
        return self._call(self._endpoint, query)

    def _literal(self, moment: int) -> str:
        return search_literal(moment, self._date_literal)

    def _id_of(self, record: dict[str, Any]) -> str:
        ident = instance_id(record, self._id_field)
        if ident is None:
            raise DeyelIncompleteError(
                f"{missing_id(self._id_field)}; repeats cannot be told apart without the instance id"
            )
        return ident

    def _page_param_name(self) -> str:
        return {"page": self._paging.page_param, "offset": self._paging.offset_param}.get(
            self._paging.strategy, "next link"
        )


def _even(start: int, end: int, parts: float) -> list[tuple[int, int]]:
    """``[start, end)`` in ``ceil(parts)`` parts of equal width (at least one, at most MAX_SPLIT)."""
    width = end - start
    count = max(1, min(width, MAX_SPLIT, int(-(-parts // 1))))
    bounds = [start + width * i // count for i in range(count + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
