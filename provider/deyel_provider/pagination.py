"""Walking the pages of a Deyel collection: page number, offset/limit, next link, or no paging at all.

Deyel documents no paging; the strategy and its parameter names are connection options (``paging`` and
friends in ``conn_fields``), the project's assumption being page-number paging with ``page`` (1-based) and
``pageSize`` (100), the total in ``X-Total-Count``, and a short page being the last.

Whatever the strategy, iteration ends on an empty page, on a short page when the total is unknown, once the
total is reached, when there is no next link, and, against a server that ignores the paging parameters, when
a page comes back larger than asked for or identical to the previous one: it never loops forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError

if TYPE_CHECKING:
    import requests

    from deyel_provider.config import DeyelConfig

log = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("page", "offset", "link", "none")

#: Fetches one page: (endpoint or absolute next URL, query parameters or None) -> response.
Fetch = Callable[[str, "dict[str, Any] | None"], "requests.Response"]


@dataclass(frozen=True)
class Paging:
    """How a collection pages (defaults: the project's documented assumption)."""

    strategy: str = "page"
    page_size: int = 100
    page_param: str = "page"
    page_size_param: str = "pageSize"
    offset_param: str = "offset"
    limit_param: str = "limit"
    total_header: str = "X-Total-Count"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise DeyelConfigError(f"paging must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        if not isinstance(self.page_size, int) or isinstance(self.page_size, bool) or self.page_size < 1:
            raise DeyelConfigError(f"page_size must be a whole number >= 1, got {self.page_size!r}")

    @classmethod
    def from_config(cls, config: DeyelConfig, *, page_size: int | None = None) -> Paging:
        """The connection's paging options, with the page size optionally overridden by the caller."""
        return cls(
            strategy=config.paging,
            page_size=config.page_size if page_size is None else page_size,
            page_param=config.page_param,
            page_size_param=config.page_size_param,
            offset_param=config.offset_param,
            limit_param=config.limit_param,
            total_header=config.total_header,
        )

    @property
    def random_access(self) -> bool:
        """Any page can be asked for directly: pages can be fetched in parallel once the total is known."""
        return self.strategy in ("page", "offset")

    def params_for(self, index: int, size: int) -> dict[str, Any]:
        """Query parameters of the 0-based page ``index`` when pages hold ``size`` instances."""
        if self.strategy == "page":
            return {self.page_param: index + 1, self.page_size_param: size}
        if self.strategy == "offset":
            return {self.offset_param: index * size, self.limit_param: size}
        if self.strategy == "link":
            return {self.page_size_param: size}
        return {}


@dataclass
class Page:
    """One page of a collection: its instances and what the response said about the whole."""

    index: int
    records: list[dict[str, Any]]
    nbytes: int
    total: int | None = None
    #: The next page's URL (link paging), from the ``Link: <url>; rel="next"`` header.
    next_url: str | None = None
    #: A fingerprint of the body, to notice a server that answers every page with the same content.
    digest: int = 0


def parse_page(response: requests.Response, paging: Paging, index: int) -> Page:
    """The JSON array of instances of a page as a :class:`Page`; anything else is a typed error."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python can parse
        raise DeyelBadResponseError(
            "the page is not JSON (or is nested too deeply)", **_where(response)
        ) from None
    if not isinstance(body, list):
        raise DeyelBadResponseError(
            f"expected a JSON array of instances, got {type(body).__name__}; "
            f"a server that wraps pages in an envelope is not supported",
            **_where(response),
        )
    odd = next((n for n, record in enumerate(body) if not isinstance(record, dict)), None)
    if odd is not None:
        raise DeyelBadResponseError(
            f"expected a JSON array of instances (objects), item {odd} is {type(body[odd]).__name__}",
            **_where(response),
        )
    content = response.content
    return Page(
        index=index,
        records=body,
        nbytes=len(content),
        total=_total(response, paging),
        next_url=_next_link(response) if paging.strategy == "link" else None,
        digest=hash(content),
    )


def iter_pages(
    fetch: Fetch,
    endpoint: str,
    params: dict[str, Any] | None,
    paging: Paging,
    *,
    max_workers: int = 1,
) -> Iterator[Page]:
    """Yield the pages of ``endpoint`` in the server's order.

    :param fetch: makes one authenticated GET and returns the response (raising the typed error).
    :param endpoint: the collection, relative to the API base.
    :param params: other query parameters (``search``...), sent with every page.
    :param paging: the strategy and its parameter names.
    :param max_workers: pages in flight at once; used only when pages can be asked for directly (page or
        offset paging) and the server sends the total, else the walk is sequential.
    """
    if max_workers < 1:
        raise DeyelConfigError(f"max_workers must be >= 1, got {max_workers!r}")
    base = dict(params or {})
    size = paging.page_size
    first = parse_page(fetch(endpoint, {**base, **paging.params_for(0, size)}), paging, 0)
    yield first
    if paging.strategy == "none":
        return
    count = len(first.records)
    # A server capping the page size answers with fewer than asked: its size is what counts from now on.
    if first.total is not None and 0 < count < size and count < first.total:
        size = count
    parallel = max_workers > 1 and paging.random_access and first.total is not None and count == size
    if max_workers > 1 and not parallel:
        log.info("fetching pages one at a time: parallel fetching needs page or offset paging and a total")
    if parallel and first.total is not None:
        yield from _parallel(fetch, endpoint, base, paging, size, first.total, max_workers)
        return
    yield from _sequential(fetch, endpoint, base, paging, size, first)


def _sequential(
    fetch: Fetch, endpoint: str, base: dict[str, Any], paging: Paging, size: int, page: Page
) -> Iterator[Page]:
    seen = 0
    visited: set[str] = set()
    while True:
        seen += len(page.records)
        if _is_last(page, seen, size, paging):
            return
        index, digest, next_url = page.index + 1, page.digest, page.next_url
        del page  # only one page is held while the next one is fetched
        if paging.strategy == "link":
            if not next_url or next_url in visited:
                return
            visited.add(next_url)
            response = fetch(next_url, None)
        else:
            response = fetch(endpoint, {**base, **paging.params_for(index, size)})
        page = parse_page(response, paging, index)
        if page.records and page.digest == digest:
            log.warning(
                "page %d is identical to page %d: the server ignores the paging parameters; stopping",
                index + 1,
                index,
            )
            return
        yield page


def _is_last(page: Page, seen: int, size: int, paging: Paging) -> bool:
    count = len(page.records)
    if count == 0:
        return True
    if count > size:
        log.warning(
            "asked for %d instances per page and got %d: the server ignores the page size; "
            "taking this response as the whole collection",
            size,
            count,
        )
        return True
    if page.total is not None:
        return seen >= page.total
    if paging.strategy == "link":
        return page.next_url is None
    return count < size


def _parallel(
    fetch: Fetch,
    endpoint: str,
    base: dict[str, Any],
    paging: Paging,
    size: int,
    total: int,
    max_workers: int,
) -> Iterator[Page]:
    """Pages 2..n with at most ``max_workers`` in flight, yielded in order: memory stays bounded."""
    pages = -(-total // size)

    def get(index: int) -> Page:
        return parse_page(fetch(endpoint, {**base, **paging.params_for(index, size)}), paging, index)

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="deyel-page") as pool:
        in_flight: list[Future[Page]] = []
        next_index = 1
        try:
            while next_index < pages or in_flight:
                while next_index < pages and len(in_flight) < max_workers:
                    in_flight.append(pool.submit(get, next_index))
                    next_index += 1
                page = in_flight.pop(0).result()
                yield page
                if not page.records:
                    # The collection shrank since the total was read: nothing follows an empty page.
                    return
        finally:
            for future in in_flight:
                future.cancel()


def _total(response: requests.Response, paging: Paging) -> int | None:
    raw = response.headers.get(paging.total_header) if paging.total_header else None
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _next_link(response: requests.Response) -> str | None:
    # requests parses RFC 8288 Link headers into response.links.
    return response.links.get("next", {}).get("url") or None


def _where(response: requests.Response) -> dict[str, Any]:
    """Method and path (no host, no query) of a page's request, as the hook's own errors carry them."""
    method = response.request.method if response.request is not None else None
    return {"status": response.status_code, "method": method, "path": urlsplit(response.url or "").path}
