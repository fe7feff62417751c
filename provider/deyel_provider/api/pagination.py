"""How a Deyel collection pages (page number, offset/limit, next link, or none), and one page's parsing.

Deyel documents no paging; the strategy and its parameter names are connection options (``paging`` and
friends in ``conn_fields``), the project's assumption being page-number paging with ``page`` (1-based) and
``pageSize`` (100), the total in ``X-Total-Count``. Walking pages by offset is not safe while the form
changes (an edit shifts every later instance by one slot): :mod:`deyel_provider.read.slicing` reads a form
through time slices instead, and pages only inside a slice that one millisecond fills.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from deyel_provider.connection.fields import DEFAULTS
from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError
from deyel_provider.http.json_body import response_body, response_json

if TYPE_CHECKING:
    import requests

    from deyel_provider.connection.settings import DeyelConfig

log = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("page", "offset", "link", "none")
_DICT_TYPE = frozenset({dict})

#: Fetches one page: (endpoint or absolute next URL, query parameters or None) -> response.
Fetch = Callable[[str, "dict[str, Any] | None"], "requests.Response"]


@dataclass(frozen=True)
class Paging:
    """How a collection pages (defaults: the connection's, the project's documented assumption)."""

    strategy: str = DEFAULTS["paging"]
    page_size: int = DEFAULTS["page_size"]
    page_param: str = DEFAULTS["page_param"]
    page_size_param: str = DEFAULTS["page_size_param"]
    offset_param: str = DEFAULTS["offset_param"]
    limit_param: str = DEFAULTS["limit_param"]
    total_header: str = DEFAULTS["total_header"]

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
    def pages(self) -> bool:
        """Whether the server pages at all (``none``: one response holds every match)."""
        return self.strategy != "none"

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

    records: list[dict[str, Any]]
    total: int | None = None
    #: The next page's URL (link paging), from the ``Link: <url>; rel="next"`` header.
    next_url: str | None = None
    #: The server's clock when it answered (its ``Date`` header, whole seconds), epoch ms; None without one.
    server_ms: int | None = None
    #: Whether the records are plain as parsed (:func:`~deyel_provider.http.json_body.response_body`):
    #: msgspec writes every value in them as ``json`` does. False unless the parse said so.
    plain: bool = False
    #: The reader's clock when it sent the request (epoch ms), where the reader notes it: the server answered
    #: at or after it. None elsewhere.
    asked_ms: int | None = None


def parse_page(response: requests.Response, paging: Paging, *, plain: bool = False) -> Page:
    """The JSON array of instances of a page as a :class:`Page`; anything else is a typed error.

    :param plain: learn whether the page is plain (``Page.plain``) while parsing it: only a JSON Lines
        writer uses that, and it costs a Python call per float in the body (msgspec's ``float_hook``), which
        a float-heavy page pays several times over in parse time; without it ``Page.plain`` is False.
    """
    if response.status_code != 200:
        # A listing is answered 200; a 201, 202, 204 or 206 (from a proxy, a queue, a cache) is not the
        # collection's state and must not be taken for it (an empty 202 would read as an empty form).
        raise DeyelBadResponseError(
            f"a listing was answered {response.status_code} instead of 200; its body is not read as "
            f"the form's instances",
            **_where(response),
        )
    try:
        body, plain = response_body(response) if plain else (response_json(response), False)
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
    # Every item a dict (what both parsers build for an object) in one C pass; else the first that is not.
    all_dicts = _DICT_TYPE.issuperset(map(type, body))
    odd = None if all_dicts else next((n for n, r in enumerate(body) if not isinstance(r, dict)), None)
    if odd is not None:
        raise DeyelBadResponseError(
            f"expected a JSON array of instances (objects), item {odd} is {type(body[odd]).__name__}",
            **_where(response),
        )
    return Page(
        records=body,
        total=_total(response, paging),
        next_url=_next_link(response) if paging.strategy == "link" else None,
        server_ms=_server_ms(response),
        plain=plain,
    )


def _total(response: requests.Response, paging: Paging) -> int | None:
    # "none" (the form cannot send an empty value: it means the default): no header counts.
    named = paging.total_header and paging.total_header.strip().lower() != "none"
    raw = response.headers.get(paging.total_header) if named else None
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _server_ms(response: requests.Response) -> int | None:
    raw = response.headers.get("Date")
    try:
        moment = email.utils.parsedate_to_datetime(raw) if raw else None
    except (TypeError, ValueError):
        return None
    return int(moment.timestamp() * 1000) if moment is not None and moment.tzinfo is not None else None


def _next_link(response: requests.Response) -> str | None:
    # requests parses RFC 8288 Link headers into response.links. A relative reference is relative to the
    # URL that was answered (RFC 8288 section 3.2), not to the API prefix: joined there it would double it.
    link = response.links.get("next", {}).get("url")
    return urljoin(response.url, link) if link else None


def _where(response: requests.Response) -> dict[str, Any]:
    """Method and path (no host, no query) of a page's request, as the hook's own errors carry them."""
    method = response.request.method if response.request is not None else None
    return {"status": response.status_code, "method": method, "path": urlsplit(response.url or "").path}
