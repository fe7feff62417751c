"""Reading a range below the server's present: slices in parallel, split while they overflow, and the
passes over a crowded millisecond (more instances than a response holds share one value)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from deyel_provider.api.pagination import Page
from deyel_provider.exceptions import DeyelIncompleteError
from deyel_provider.http.concurrency import RequestGate
from deyel_provider.http.deadline import Call
from deyel_provider.read.slice_plan import PendingSlice, SlicePlanner, SplitGroup
from deyel_provider.read.slice_requests import ReadAbandoned, Slice

#: Passes over a crowded millisecond before giving up on two of them agreeing.
MAX_PASSES = 6


class PastSlices(SlicePlanner):
    """Reads ranges that can only lose instances while they are read (they lie below the present)."""

    def _read_past(self, start: int, end: int, hint: Page) -> Generator[Slice, None, None]:
        """Slices of ``[start, end)``, a range below the server's present: in parallel, split as needed."""
        if end <= start:
            return
        whole = SplitGroup(hint.total)
        queue: deque[PendingSlice] = deque(
            PendingSlice(a, b, whole) for a, b in self._split(start, end, hint)
        )
        stop, call, gate = threading.Event(), Call(), RequestGate(self._concurrency)
        self.stopping, self._gate = stop, gate
        pool = ThreadPoolExecutor(
            # A thread for each slice making requests, one for each waiting its turn, and one for a head
            # asked for beyond them (see _submit): a head never waits for a thread.
            max_workers=2 * self._concurrency.ceiling + 1,
            thread_name_prefix="deyel-slice",
            initializer=self._serve,
            initargs=(stop, call),
        )
        try:
            try:
                yield from self._past_queue(queue, pool, gate)
            except ReadAbandoned:
                # A request of the consumer's own refused after a slice failed (_stop_if_stopped): the
                # read fails with that slice's error, raised as it was (its cause kept).
                if gate.failure is None:
                    raise
                failure = gate.failure
            else:
                return
            raise failure
        finally:
            if queue:  # stopped early (an error here or in the consumer): the rest will not be read
                call.cancel()  # first: what is in flight, or waits to be retried, ends now
                stop.set()
            gate.close()  # a request waiting for its turn is not sent
            for pending in queue:
                if pending.future is not None:
                    pending.future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            if self._gate is gate:
                self._gate = None  # its failure, if any, was this read's: later requests are not refused

    def _past_queue(
        self, queue: deque[PendingSlice], pool: ThreadPoolExecutor, gate: RequestGate
    ) -> Generator[Slice, None, None]:
        """The slices of ``queue`` in order, split while they overflow. After a slice failed, the slices
        already answered before it are still yielded (a resumable extraction keeps them), but no request
        is made for them (a proof): the read then fails with that slice's error."""
        while queue:
            self._submit(queue, pool, gate)
            head = queue[0]
            assert head.future is not None and head.end is not None
            if not head.future.done():
                running = [p.future for p in queue if p.future is not None and not p.future.done()]
                wait(running, return_when=FIRST_COMPLETED)
                continue
            if head.future.exception() is not None and gate.failure is not None:
                # Failed, or sent away from the gate (ReadAbandoned) by another slice's failure: the
                # first failure is the read's, raised as it was (its cause kept).
                raise gate.failure
            queue.popleft()
            page, proven = head.future.result()
            self._check_parts(head, page)
            if proven is None:
                proven = self._is_whole(page, head.start, head.end)
            if proven:
                yield self._accept(page, head.start, head.end)
            elif head.end - head.start > 1:
                self.stats.splits += 1
                parts, group = self._split(head.start, head.end, page), SplitGroup(page.total)
                queue.extendleft(reversed([PendingSlice(a, b, group) for a, b in parts]))
            else:
                yield from self._page_inside(head.start, head.end, page)

    def _submit(self, queue: deque[PendingSlice], pool: ThreadPoolExecutor, gate: RequestGate) -> None:
        """Keep ``2 * limit`` slices asked for among the next few; the head is always asked for.

        ``limit`` of them make requests and as many wait their turn at the read's
        :class:`~deyel_provider.http.concurrency.RequestGate`, which lets one go as soon as a slice makes no
        more (with one worker: as soon as its response is in, before it is parsed). So the server is not
        idle while the client parses a response, nor while the consumer writes the head (this is called once
        the head's response is in and before it is yielded; tests/test_slice_speed.py)."""
        limit = self._concurrency.limit
        asked = sum(1 for p in queue if p.future is not None and not p.future.done())
        for position, pending in enumerate(queue):
            # Looking ahead a bounded distance keeps memory to a few responses, however long the queue.
            if position >= 2 * limit + 1:
                break
            if pending.future is None and (position == 0 or asked < 2 * limit):
                pending.future = pool.submit(
                    self._get_proven, gate, pending.start, pending.end, limit > 1, position == 0
                )
                asked += 1

    def _get_proven(
        self, gate: RequestGate, start: int, end: int | None, prove: bool, head: bool
    ) -> tuple[Page, bool | None]:
        """A slice's response and, with ``prove``, whether it provably holds the whole slice (None: the
        consumer decides).

        Without a total header the proof takes two more requests (an empty next page, then the first asked
        again: the page walker's). Made by the consumer they run one slice after another, two round trips in
        series per slice: with several workers each proves its own slice instead (made by the consumer,
        ``max_workers=4`` gained nothing: 1.01x at 50 ms, bench/extract.py). With one worker the consumer
        proves the head while the next slice is fetched, which keeps that fetch going meanwhile. The
        requests are the same, in the same order for the slice: only which thread waits for them changes.

        The slice holds a place at ``gate`` while it may make requests: without ``prove`` only its one
        request, so the place passes to the next slice as soon as the response is in (before it is parsed);
        with ``prove`` until its proof is made, as the proof's requests are the slice's own. ``head``: asked
        for as the read's head, it takes the next free place before the slices after it."""
        if not gate.take(head):
            raise ReadAbandoned("the read this request was for has stopped")
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                gate.give_back()

        try:
            page = self._get(start, end, received=None if prove else give_back)
            return page, self._is_whole(page, start, end) if prove else None
        except ReadAbandoned:
            raise
        except BaseException as error:
            # The read fails with this error (the consumer raises it): no slice starts a request meanwhile,
            # which would only be cut. (A request that failed never passed its place on, see _call; a
            # response that fails to parse did, and its successor's request is cut by the read's stop.)
            gate.fail(error)
            raise
        finally:
            give_back()

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
