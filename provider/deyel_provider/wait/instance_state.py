"""How many instances of a form match a search, asked as cheaply as the server allows: the one check behind
``DeyelInstanceSensor`` (on a worker) and ``DeyelInstanceTrigger`` (in the triggerer).

A probe is one GET of the first page, long enough to hold ``max_instances`` and (up to 1000) ``min_count``
instances: a match counts only when the server returned an instance for it. The total header
(``total_header`` extra, ``X-Total-Count`` by default) answers a count above a full first page (it then
counts more than the page). Otherwise, while fewer than ``min_count`` were seen, the probe reads on through
:class:`~deyel_provider.api.page_walker.PageWalker`, which ends a listing only on proof (an empty page, or a
total shown to count the search): a total equal to a short page (a header counting the page on a server
capping pages) and a page shortened after paging (permissions applied per page) are not ends, and a total
that counts the page is a typed error naming ``total_header``.

What it returns is small and goes to XCom as it is: the count and at most ``max_instances`` matching
instances, each reduced to its id and the fields asked for. Data belongs in files (``DeyelExtractOperator``),
not in XCom.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from deyel_provider.api.instance_ids import DEFAULT_ID_FIELD, LINKS, instance_id
from deyel_provider.api.instances import instances_endpoint
from deyel_provider.api.page_walker import PageWalker
from deyel_provider.api.pagination import Page, Paging, parse_page
from deyel_provider.api.search import check_search
from deyel_provider.exceptions import DeyelConfigError, DeyelError

if TYPE_CHECKING:
    from deyel_provider.hooks.deyel import DeyelHook

#: The most instances a probe returns (they go to XCom).
MAX_INSTANCES = 100
#: Page size of the counting reads when the server sends no total.
COUNT_PAGE_SIZE = 1000
#: The id of an instance in listings, unless the connection's ``id_field`` says otherwise.
ID_FIELD = DEFAULT_ID_FIELD
#: The key of the id in the sensor's output when the connection's ``id_field`` is ``links`` (Deyel's own
#: name of an instance id): the id from the self link, not the list of links.
LINKS_ID_KEY = DEFAULT_ID_FIELD
#: One page walker per hook: what a poke proved about the server's pages (its count header counts more than
#: a page, its cap) serves the next pokes of the same sensor or trigger, so a waiting sensor does not pay
#: for the proof at every poke.
_WALKERS: WeakKeyDictionary[Any, PageWalker] = WeakKeyDictionary()


@dataclass(frozen=True)
class InstanceQuery:
    """What a sensor waits for: ``min_count`` instances of ``form`` matching ``search``.

    :param form: the form's identifier, e.g. ``CRM_ACCOUNT``.
    :param search: Deyel filter, e.g. ``cdStatus=eq:APPROVED``; empty for every instance.
    :param min_count: how many matches are enough.
    :param max_instances: how many matching instances to return (0 to 100).
    :param fields: fields kept in each returned instance, besides its id.
    """

    form: str
    search: str = ""
    min_count: int = 1
    max_instances: int = 1
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.min_count, int) or isinstance(self.min_count, bool) or self.min_count < 1:
            raise DeyelConfigError(f"min_count must be a whole number >= 1, got {self.min_count!r}")
        bad_max = not isinstance(self.max_instances, int) or isinstance(self.max_instances, bool)
        if bad_max or not 0 <= self.max_instances <= MAX_INSTANCES:
            raise DeyelConfigError(
                f"max_instances must be a whole number from 0 to {MAX_INSTANCES}, got {self.max_instances!r}"
            )
        if isinstance(self.fields, str) or not all(isinstance(f, str) and f for f in self.fields):
            raise DeyelConfigError(f"fields must be a list of field identifiers, got {self.fields!r}")
        check_search(self.search)

    @classmethod
    def build(
        cls,
        form: str,
        search: str | None = None,
        min_count: int = 1,
        max_instances: int = 1,
        fields: Sequence[str] | None = None,
    ) -> InstanceQuery:
        """From arguments as DAG authors and serialised triggers give them (None, lists)."""
        if fields is not None and isinstance(fields, str):
            raise DeyelConfigError(f"fields must be a list of field identifiers, got {fields!r}")
        if search is not None and not isinstance(search, str):
            # Only a rendered search is a str; anything else (an unresolved XComArg) is a mistake to name.
            raise DeyelConfigError(f"search must be a text filter (field=op:value), got {search!r}")
        return cls(form, (search or "").strip(), min_count, max_instances, tuple(fields or ()))


@dataclass(frozen=True)
class ProbeResult:
    """The answer of one probe: the count (exact, or a lower bound) and the first matching instances."""

    count: int
    exact: bool
    instances: tuple[dict[str, Any], ...]
    #: The server's clock when it answered the first request (its ``Date`` header), epoch ms; None without.
    server_ms: int | None = None

    def satisfies(self, query: InstanceQuery) -> bool:
        return self.count >= query.min_count

    def to_xcom(self, query: InstanceQuery) -> dict[str, Any]:
        """The sensor's XCom, the same in both modes: plain JSON values."""
        return {
            "form": query.form,
            "search": query.search,
            "count": self.count,
            "count_exact": self.exact,
            "instances": [dict(i) for i in self.instances],
        }


def probe(hook: DeyelHook, query: InstanceQuery) -> ProbeResult:
    """Count the matches of ``query`` (see the module's docstring); errors are the hook's typed errors."""
    endpoint = instances_endpoint(query.form)
    paging = hook.paging()
    base: dict[str, Any] = {"search": query.search} if query.search else {}
    size = max(1, query.max_instances, min(query.min_count, COUNT_PAGE_SIZE))
    first = _read(hook, endpoint, {**base, **paging.params_for(0, size)}, paging)
    id_field = hook.config.id_field
    instances = tuple(_reduced(r, query.fields, id_field) for r in first.records[: query.max_instances])
    served = len(first.records)
    total = first.total
    if not paging.pages:
        count, exact = served, True
    elif total is not None and served >= size and total > served:
        count, exact = total, True  # a full page and a total above it: the header counts beyond the page
    elif served >= query.min_count:
        # Enough already: no request is spent proving the count exact (the header's word when it agrees).
        count, exact = served, total is not None and total == served
    else:
        count, exact = _count_on(hook, endpoint, base, paging, first, size, query.min_count)
    return ProbeResult(count, exact, instances, first.server_ms)


def _count_on(
    hook: DeyelHook, endpoint: str, base: dict[str, Any], paging: Paging, first: Page, asked: int, wanted: int
) -> tuple[int, bool]:
    """Read on after ``first`` until ``wanted`` matches are seen (a lower bound) or the end is proven."""
    walker = _WALKERS.get(hook)
    if walker is None or walker.paging != paging:
        walker = _WALKERS[hook] = PageWalker(paging, id_field=hook.config.id_field)
    seen: set[str] = set()
    pages = walker.walk(
        first,
        asked,
        lambda index, size: _read(hook, endpoint, {**base, **paging.params_for(index, size)}, paging),
        lambda url: _read(hook, url, None, paging),
    )
    for page in pages:
        seen.update(walker.ids(page))
        if len(seen) >= wanted:
            pages.close()
            return len(seen), False
    return len(seen), True


def _read(hook: DeyelHook, endpoint: str, params: dict[str, Any] | None, paging: Paging) -> Page:
    return parse_page(hook.request("GET", endpoint, params=params), paging)


def _reduced(record: Mapping[str, Any], fields: Sequence[str], id_field: str = ID_FIELD) -> dict[str, Any]:
    """The instance's id under the server's own key, and the fields asked for. With ``id_field: links`` the
    id itself (the self link's last segment) under :data:`LINKS_ID_KEY`, not the raw list of links: DAG
    code reads one id whatever the server (docs/operators.md)."""
    if id_field == LINKS:
        key, ident = LINKS_ID_KEY, instance_id(record, LINKS)
    else:
        key, ident = id_field, record.get(id_field)
    out: dict[str, Any] = {key: ident}
    out.update({name: record.get(name) for name in fields if name != key})
    return out


def is_not_yet(error: DeyelError) -> bool:
    """Whether a failed probe only means "not yet": a transient failure the retry policy gave up on.

    Refused credentials, a missing form, a refused search or permission are not: waiting would not fix them.
    """
    return bool(error.transient)
