"""The sliced reader's requests: what it is set up with, one slice asked for, and the page walker's proof
that a response holds its whole slice (:mod:`deyel_provider.read.slicing` reads a form with them)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deyel_provider.api.clock import DEFAULT_MAX_SKEW_MS, DEFAULT_SETTLE_MS
from deyel_provider.api.dates import DATE_LITERALS, search_literal
from deyel_provider.api.instance_ids import DEFAULT_ID_FIELD, instance_id, missing_id
from deyel_provider.api.page_walker import PageWalker
from deyel_provider.api.pagination import Fetch, Page, Paging, parse_page
from deyel_provider.exceptions import DeyelConfigError, DeyelIncompleteError, DeyelRequestError
from deyel_provider.http.concurrency import Concurrency, RequestGate
from deyel_provider.http.deadline import Call, current_call
from deyel_provider.read.id_set import IdSet

log = logging.getLogger(__name__)


class ReadAbandoned(Exception):
    """Raised in a worker whose read has stopped, instead of its next request; nobody reads its result."""


@dataclass(frozen=True)
class Slice:
    """The instances of ``start <= field < end`` (``end`` None: no upper bound) not yielded before."""

    start: int
    end: int | None
    records: list[dict[str, Any]]
    #: Whether the records are plain as parsed (``Page.plain``): they are some of one page's records, as
    #: parsed.
    plain: bool = False


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
    #: The server's count of the window's matches on the first response (its count header), None without
    #: one: an estimate for progress lines, never a proof of anything.
    expected: int | None = None
    #: The latest ``Date`` of a response whose instances the read accepted (epoch ms; None: none had one):
    #: see :meth:`SlicedReader.horizon <deyel_provider.read.slicing.SlicedReader.horizon>`. A proof's later
    #: request (an empty next page, a one-instance page) lists nothing, so its ``Date`` proves nothing.
    accepted_ms: int | None = None
    #: This worker's clock when it sent the request of the latest response the read accepted (epoch ms;
    #: None: none yet): the horizon's bound where no accepted response had a ``Date``.
    accepted_clock_ms: int | None = None


@dataclass(frozen=True)
class SliceSettings:
    """How a :class:`SlicedReader` cuts and dates its slices; checked once, when built.

    :param field: an epoch-millisecond field that every write moves to the present (``dtLastUpdate``).
    :param id_field: the key of the instance id, to drop repeats (``links``: the self link's last segment).
    :param date_literal: how the slice bounds are written in ``search``: ``epoch_ms`` or ``iso``.
    :param settle_ms: how long after its stamp a change is surely visible: windows end this long before the
        server's ``Date`` (the connection's ``settle_seconds``).
    :param max_skew_ms: a ``Date`` further than this from ``clock`` is refused (``max_clock_skew_seconds``).
    :param clock: the worker's clock, seconds since the epoch (tests pass the emulator's).
    :param sleep: waits that many seconds (tests pass one that moves the emulator's clock instead).
    :param plain_pages: learn whether each page is plain as it is parsed (``Slice.plain``): for a JSON Lines
        writer, which writes a plain page in one call; every other reader skips its cost (see ``parse_page``).
    """

    field: str = "dtLastUpdate"
    id_field: str = DEFAULT_ID_FIELD
    date_literal: str = "epoch_ms"
    settle_ms: int = DEFAULT_SETTLE_MS
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    plain_pages: bool = False

    def __post_init__(self) -> None:
        field = self.field
        if not isinstance(field, str) or not field.strip() or any(c in field for c in ",=:"):
            raise DeyelConfigError(f"the incremental field must be a field identifier, got {field!r}")
        if self.id_field == field:  # every instance written in one millisecond would be one "id"
            raise DeyelConfigError(
                f"the connection's 'id_field' extra names the incremental field {field!r}, which is not an "
                f"instance id; set id_field to the key holding the instance id (idObjectValue, id or 'links')"
            )
        if self.date_literal not in DATE_LITERALS:
            raise DeyelConfigError(
                f"date_literal must be one of {list(DATE_LITERALS)}, got {self.date_literal!r}"
            )


class SliceRequests:
    """What every layer of the sliced reader shares: its settings, state and one request (see
    :class:`~deyel_provider.read.slicing.SlicedReader`, which takes these arguments)."""

    def __init__(
        self,
        fetch: Fetch,
        endpoint: str,
        params: dict[str, Any] | None,
        paging: Paging,
        settings: SliceSettings | None = None,
        *,
        concurrency: Concurrency | None = None,
    ) -> None:
        settings = settings or SliceSettings()
        self._fetch = fetch
        self._endpoint = endpoint
        self._params = dict(params or {})
        self._search = str(self._params.pop("search", "") or "").strip().strip(",")
        self._paging = paging
        self._field = settings.field
        self._id_field = settings.id_field
        self._date_literal = settings.date_literal
        #: Whether the field's unit was checked (on the first response that holds an instance).
        self._unit_checked = False
        self._concurrency = concurrency or Concurrency()
        self._settle_ms = max(0, int(settings.settle_ms))
        self._max_skew_ms = int(settings.max_skew_ms)
        self._clock = settings.clock
        self._sleep = settings.sleep
        self._plain_pages = settings.plain_pages
        self._lock = threading.Lock()
        #: The stop signal of the parallel read in progress, or of the last one (``_read_past``: one each).
        #: Set when that read stops early (its consumer failed or closed it): its slices are discarded, so
        #: its workers start no further request for them (a proof's next page and re-read), and the error
        #: reaches the user at once: the requests already in flight are cut (``_serve``). Each read has its
        #: own, handed to its own pool's threads (``_worker``), so a read that stops never stops another.
        self.stopping = threading.Event()
        self._worker = threading.local()
        #: The gate of the parallel read in progress, or of the last one: once one of its slices failed,
        #: no request of the read is sent (``_stop_if_stopped``).
        self._gate: RequestGate | None = None
        #: Owns the rule "this listing has ended" and what the server's pages have proven (caps, totals).
        # A page_size above the server's cap is read at the cap, with one warning in the task log.
        self._walker = PageWalker(paging, id_field=settings.id_field, warn=log)
        #: The densest whole slice seen (instances per ms), for planning without a total: sparse edges of
        #: a window (years with nothing in them) would make an average far too low.
        self._density: float | None = None
        self._seen = IdSet()
        self.stats = ReadStats()

    @property
    def page_size(self) -> int:
        """Instances asked for per response."""
        return self._paging.page_size

    # -- one request -----------------------------------------------------------------------------------------

    def _get(
        self,
        start: int,
        end: int | None,
        *,
        index: int = 0,
        size: int | None = None,
        received: Callable[[], None] | None = None,
    ) -> Page:
        clauses = [self._search] if self._search else []
        clauses.append(f"{self._field}=gte:{self._literal(start)}")
        if end is not None:
            clauses.append(f"{self._field}=lt:{self._literal(end)}")
        query = {**self._params, "search": ",".join(clauses)}
        query.update(self._paging.params_for(index, size or self._paging.page_size))
        try:
            return self._call(self._endpoint, query, received=received)
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

    def _serve(self, stop: threading.Event, call: Call) -> None:
        """A pool thread's start (``ThreadPoolExecutor(initializer=...)``): the read it serves, and the
        :class:`~deyel_provider.http.deadline.Call` its requests belong to (cancelled when the read stops: a
        request in flight is cut, a retry's wait ends, and nothing is retried)."""
        self._worker.stop = stop
        current_call.set(call)

    def _stop_if_stopped(self) -> None:
        stop: threading.Event | None = getattr(self._worker, "stop", None)
        if stop is not None and stop.is_set():
            raise ReadAbandoned("the read this request was for has stopped")
        gate = self._gate
        if gate is not None and gate.failure is not None:
            # The read fails with that slice's error: a request now (a proof, a split's part) is waste.
            raise ReadAbandoned("a slice of this read failed")

    def _call(
        self, endpoint: str, query: dict[str, Any] | None, *, received: Callable[[], None] | None = None
    ) -> Page:
        """One GET, parsed; ``received`` is called once a response is in, before it is parsed (not when the
        request failed)."""
        self._stop_if_stopped()
        self._concurrency.before_request()
        self._stop_if_stopped()  # the pace may have kept it waiting meanwhile
        asked_ms = int(self._clock() * 1000)
        response = self._fetch(endpoint, query)
        if received is not None:
            received()
        page = parse_page(response, self._paging, plain=self._plain_pages)
        page.asked_ms = asked_ms
        with self._lock:
            self.stats.requests += 1
        self._concurrency.note_done()
        return page

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
