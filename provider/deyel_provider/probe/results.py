"""What the probe found: one finding per topic, the server's answers, the extras to set."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import requests

from deyel_provider.api.instance_ids import DEFAULT_ID_FIELD, instance_id
from deyel_provider.api.pagination import Paging

if TYPE_CHECKING:
    from deyel_provider.connection.settings import DeyelConfig

PREFIXES = ("", "/api", "/rest", "/DeyelWeb/api", "/DeyelWeb/rest", "/deyel/api", "/api/v1")
PAGE_PARAMS = ("page", "pageNumber", "pageNo", "p")
SIZE_PARAMS = ("pageSize", "size", "per_page", "limit", "max", "rows", "count")
OFFSET_PARAMS = ("offset", "start", "skip", "first", "from")
TOTAL_HEADERS = ("X-Total-Count", "X-Total", "Total-Count", "X-Result-Count", "X-Count")

#: Instances per page while probing: two pages of TINY must be told apart from one page of 2 * TINY.
TINY = 2
#: Fewer instances than this and paging cannot be told from no paging.
MIN_INSTANCES = 2 * TINY + 1

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Finding:
    level: str
    topic: str
    text: str


@dataclass
class Answer:
    """One GET: status, headers, the parsed JSON (None when not JSON) and the URL answered."""

    status: int
    headers: requests.structures.CaseInsensitiveDict[str]
    body: Any
    url: str
    links: dict[str, dict[str, str]]

    @property
    def records(self) -> list[dict[str, Any]] | None:
        if self.status == 200 and isinstance(self.body, list) and all(isinstance(r, dict) for r in self.body):
            return self.body
        return None

    def deyel_error(self) -> str | None:
        """The first message of a Deyel error body (``errors`` list or ``errorCode``), if it is one."""
        body = self.body
        if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
            first = body["errors"][0]
            return str(first.get("message", "")) if isinstance(first, dict) else str(first)
        if isinstance(body, dict) and "errorCode" in body:
            return str(body.get("message") or body["errorCode"])
        return None


@dataclass(frozen=True)
class Candidates:
    """Names to try beyond the connection's own and the common ones (the command line's ``--prefix``,
    ``--page-param``, ``--size-param``, ``--offset-param``, ``--total-header``)."""

    prefixes: Sequence[str] = ()
    page_params: Sequence[str] = ()
    size_params: Sequence[str] = ()
    offset_params: Sequence[str] = ()
    total_headers: Sequence[str] = ()


@dataclass
class ProbeResult:
    findings: list[Finding] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    gets: int = 0
    token_posts: int = 0

    @property
    def ok(self) -> bool:
        return not any(f.level == FAIL for f in self.findings)


class ProbeFailed(Exception):
    """A step the others depend on failed: the findings so far say why."""


def unique(*groups: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(item for group in groups for item in group))


def record_key(record: dict[str, Any], id_field: str = DEFAULT_ID_FIELD) -> str:
    """The instance's id under ``id_field``, else the whole instance: paging is told apart either way."""
    ident = instance_id(record, id_field)
    return str(ident) if ident is not None else json.dumps(record, sort_keys=True, default=str)


def record_keys(records: Sequence[dict[str, Any]] | None) -> list[str] | None:
    return None if records is None else [record_key(r) for r in records]


def search_field(sample: Sequence[dict[str, Any]]) -> tuple[str, Any] | None:
    """A field of the first instance with a plain value that the second instance does not share."""
    if not sample:
        return None
    first, other = sample[0], (sample[1] if len(sample) > 1 else {})
    plain = [
        (name, value)
        for name, value in first.items()
        if name not in ("links", DEFAULT_ID_FIELD)
        and isinstance(value, (str, int))
        and not isinstance(value, bool)
        and not any(c in str(value) for c in ",=:;")
        and str(value)
        and value != other.get(name)
    ]
    # Text first: numbers and dates may be compared in another literal form.
    plain.sort(key=lambda item: (not isinstance(item[1], str) or item[0].startswith("dt"), item[0]))
    if plain:
        return plain[0]
    ident = first.get(DEFAULT_ID_FIELD)
    return (DEFAULT_ID_FIELD, ident) if ident is not None else None


def found_paging(extras: dict[str, Any], config: DeyelConfig, strategy: str, size: int) -> Paging:
    """The paging found so far (the connection's parameter names where none was found yet) as the provider
    reads pages, counted by no header: the probe's checks tell whether more follow from the pages alone."""
    return Paging(
        strategy=strategy,
        page_size=size,
        page_param=extras.get("page_param", config.page_param),
        page_size_param=extras.get("page_size_param", config.page_size_param),
        offset_param=extras.get("offset_param", config.offset_param),
        limit_param=extras.get("limit_param", config.limit_param),
        total_header="none",
    )


class ProbeSession(Protocol):
    """What the checks beside the prober (keys, short pages, paging, counts) use of it: they import this,
    not the prober, which imports them."""

    config: DeyelConfig
    result: ProbeResult
    page_params: list[str]
    size_params: list[str]
    offset_params: list[str]
    total_headers: list[str]
    page_size: int
    _collection: str
    _prefix_answer: Answer | None

    def get(self, url: str, params: dict[str, Any] | None = None) -> Answer: ...

    def listing(self, params: dict[str, Any] | None = None) -> Answer: ...

    def records(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]] | None: ...

    def note(self, level: str, topic: str, text: str) -> None: ...


class ProberChecks:
    """What the checks beside the prober (paging, counts) read of it, taken in one place: its connection,
    result, requests and candidate names (the connection's, the common ones, the command line's)."""

    def __init__(self, prober: ProbeSession) -> None:
        self.prober = prober
        self.config = prober.config
        self.result = prober.result
        self.note = prober.note
        self.get = prober.get
        self.listing = prober.listing
        self.records = prober.records
        self.page_params = prober.page_params
        self.size_params = prober.size_params
        self.offset_params = prober.offset_params
        self.total_headers = prober.total_headers
        self.page_size = prober.page_size
