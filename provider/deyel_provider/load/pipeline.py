"""Running a load's chunks: the next chunk is searched while the records of the last are written, up to the
concurrency control's limit of requests at a time; memory holds about two chunks of records. What each
record came to is counted by a :class:`Tally`, which also logs the progress and the first rejects."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from deyel_provider.load.rejects import Reject
from deyel_provider.load.writing import CREATED, UNCHANGED, UPDATED

if TYPE_CHECKING:
    from deyel_provider.http.concurrency import Concurrency
    from deyel_provider.load.matching import ChunkMatcher
    from deyel_provider.load.records import Record
    from deyel_provider.load.rejects import RejectsFile
    from deyel_provider.load.writing import RecordWriter

log = logging.getLogger(__name__)

#: Rejects logged one by one (the rest are in the rejects file and the count).
_LOGGED_REJECTS = 10


class Tally:
    """What the records of a load came to: counts, the rejects (into ``sink``, if any), progress lines."""

    def __init__(self, sink: RejectsFile | None, started: float) -> None:
        self.sink = sink
        self.started = started
        self.counts = {CREATED: 0, UPDATED: 0, UNCHANGED: 0}
        self.rejected = 0
        self.first_reject = ""

    def count(self, outcome: str | Reject) -> None:
        if isinstance(outcome, Reject):
            self._count_reject(outcome)
        else:
            self.counts[outcome] += 1

    def report(self) -> None:
        elapsed = time.monotonic() - self.started
        counts = self.counts
        done = sum(counts.values()) + self.rejected
        log.info(
            "progress: %d records (%d created, %d updated, %d unchanged, %d rejected), %.0f records/s, "
            "%.1f s elapsed",
            done,
            counts[CREATED],
            counts[UPDATED],
            counts[UNCHANGED],
            self.rejected,
            done / elapsed if elapsed > 0 else 0.0,
            elapsed,
        )

    def _count_reject(self, reject: Reject) -> None:
        self.rejected += 1
        if self.rejected == 1:
            self.first_reject = reject.summary()
        if self.rejected <= _LOGGED_REJECTS:
            log.warning("rejected %s", reject.summary())
        elif self.rejected == _LOGGED_REJECTS + 1:
            log.warning("more rejects: counted, and listed in the rejects file if one was asked for")
        if self.sink is not None:
            self.sink.add(reject)


def run_chunks(
    chunks: Iterator[list[Record]],
    matcher: ChunkMatcher,
    writer: RecordWriter,
    concurrency: Concurrency,
    tally: Tally,
    progress_interval: float,
) -> None:
    """Search chunk after chunk (``chunks``: :meth:`Source.chunks`) and write their records,
    ``concurrency.limit`` requests at a time."""
    ready: deque[tuple[Record, list[dict[str, Any]]]] = deque()
    pending: dict[Future[Any], bool] = {}  # future -> is a search
    more, searching = True, False
    next_report = time.monotonic() + progress_interval
    pool = ThreadPoolExecutor(max_workers=concurrency.ceiling, thread_name_prefix="deyel-upsert")
    try:
        while True:
            limit = concurrency.limit
            while len(pending) < limit:
                # The next chunk is searched while the last records of this one are written.
                if more and not searching and len(ready) < 2 * limit:
                    chunk = next(chunks, None)
                    if chunk is None:
                        more = False
                        continue
                    pending[pool.submit(matcher.match, chunk)] = True
                    searching = True
                elif ready:
                    pending[pool.submit(writer.place, *ready.popleft())] = False
                else:
                    break
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if pending.pop(future):
                    searching = False
                    ready.extend(future.result())
                    continue
                tally.count(future.result())
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + progress_interval
                tally.report()
    except BaseException:
        for future in pending:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
