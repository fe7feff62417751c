"""The probe's short-page step: does this server send pages shorter than asked while more follow?

The provider never ends a listing on a short page alone (:mod:`deyel_provider.api.page_walker`): without a
count header it reads on to an empty page. Whether the server's short pages could be trusted still tells a
user what to expect: a server that applies permissions after paging (it pages, then removes what the user
may not see) sends short pages while more follow, and its count header, if any, usually counts the
instances before the removal, which makes extractions fail naming ``total_header``. This step reads the
first pages of the form at a small size, and after the first short page it meets asks for the next one
anyway; the walker records what that shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from deyel_provider.api.page_walker import PageWalker
from deyel_provider.api.pagination import Page, Paging
from deyel_provider.probe.results import OK, WARN, ProbeFailed, found_paging, record_key

if TYPE_CHECKING:
    from deyel_provider.probe.results import ProbeSession

#: The page size of the check (smaller when the server caps below it): small pages meet a short one soon.
SIZE = 10
#: The most pages read before the check concludes that pages come back whole.
PAGES = 4


class _Unanswered(Exception):
    """A listing of the check was not answered with instances: the check says so and stops."""


def check_short_pages(prober: ProbeSession, strategy: str, *, size: int | None = None) -> None:
    """Note whether this server's short pages can be trusted (topic ``short page``).

    :param prober: the probe, with the paging extras found so far.
    :param strategy: ``page``, ``offset`` or ``link`` (``none`` has nothing to check).
    :param size: the page size to check with: the server's fixed page size where it ignores the size asked;
        by default SIZE, or the cap found when it is smaller.
    """
    extras, config = prober.result.extras, prober.config
    size = size or min(SIZE, int(extras.get("page_size") or SIZE))
    paging = found_paging(extras, config, strategy, size)
    walker = PageWalker(paging, key=record_key)

    def answered(params: dict[str, Any] | None, url: str | None = None) -> Page:
        answer = prober.get(url) if url else prober.listing(params)
        if answer.records is None:
            raise _Unanswered(f"answered {answer.status}")
        link = answer.links.get("next", {}).get("url")
        return Page(answer.records, next_url=urljoin(answer.url, link) if link else None)

    def get(index: int, count: int) -> Page:
        return answered(paging.params_for(index, count))

    try:
        verdict = _walk(walker, paging, get, lambda url: answered(None, url), size)
    except (_Unanswered, ProbeFailed) as exc:
        prober.note(WARN, "short page", f"not checked: a page of the check {exc}")
        return
    if walker.evidence.shortens:
        prober.note(
            WARN,
            "short page",
            f"{verdict}: this server shortens pages after paging (permissions applied per page?), so its "
            f"short pages cannot be trusted; the provider reads every listing on to an empty page anyway "
            f"(a count header that counts what the pages show spares those requests; one that also counts "
            f"what they hide makes extractions fail naming total_header: then set it to none)",
        )
    else:
        prober.note(
            OK,
            "short page",
            f"{verdict}: no page was shortened while more followed (the provider still ends a listing "
            f"only at an empty page or an agreeing count)",
        )


def _walk(walker: PageWalker, paging: Paging, get: Any, follow: Any, size: int) -> str:
    """Read up to PAGES pages of ``size`` (no larger than the cap found before: a whole page is ``size``);
    at the first short one, ask for the next anyway. Returns what was seen; ``walker`` holds the verdict."""
    page = get(0, size)
    seen: set[str] = set()
    for index in range(PAGES):
        walker.observe(page)
        ids = walker.ids(page)
        if not ids:
            return f"the form ended after {index} full pages of {size}"
        seen.update(ids)
        if len(ids) < size:
            nxt = _next(paging, page, index, size, get, follow)
            if nxt is None or seen.issuperset(walker.ids(nxt)):
                return f"page {index + 1} held {len(ids)} of {size} asked and nothing followed"
            # More followed a short page at a size the server serves whole (no larger than its cap):
            # pages are shortened after paging.
            walker.mark_shortens()
            return f"page {index + 1} held {len(ids)} of {size} asked and more instances followed"
        if index == PAGES - 1:
            break
        nxt = _next(paging, page, index, size, get, follow)
        if nxt is None:
            return f"the form ended after {index + 1} full pages of {size}"
        page = nxt
    return f"the first {PAGES} pages of {size} came back full"


def _next(paging: Paging, page: Page, index: int, size: int, get: Any, follow: Any) -> Page | None:
    if paging.strategy == "link":
        return follow(page.next_url) if page.next_url else None
    return get(index + 1, size)
