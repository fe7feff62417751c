"""The probe's paging step: which page-size, page, offset or link parameters this server honours, or that it
does not page. Whether a count header counts the matches and whether pages are capped is asked of the pages
themselves (:mod:`deyel_provider.probe.counts`, on the shared page walker), and whether a short page can be
trusted by :mod:`deyel_provider.probe.short_pages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from deyel_provider.probe.counts import CountChecks
from deyel_provider.probe.results import (
    FAIL,
    MIN_INSTANCES,
    OK,
    TINY,
    WARN,
    Answer,
    ProbeFailed,
    ProberChecks,
    record_keys,
)
from deyel_provider.probe.short_pages import check_short_pages

if TYPE_CHECKING:
    from deyel_provider.probe.results import ProbeSession


@dataclass(frozen=True)
class SearchSample:
    """What the search step asks with: the honoured page-size parameter (None: none) and the instances to
    pick a field from."""

    size_param: str | None
    sample: list[dict[str, Any]]


class PagingChecks(ProberChecks):
    """Finds how the server of a prober (its API prefix known) pages; the extras go to its result."""

    def __init__(self, prober: ProbeSession) -> None:
        super().__init__(prober)
        #: The count header and the page-size cap (what follows a page is asked of the server).
        self.counts = CountChecks(prober)
        #: A page parameter that numbers pages from 0 (the provider numbers them from 1).
        self._zero_based: str | None = None

    def run(self) -> SearchSample:
        """Find the paging extras (or fail the probe naming what to pass); return what the search step asks
        with."""
        size_param = self._honoured_size_param()
        if size_param is None:
            return self._without_size_param()
        ref = self.records({size_param: 2 * TINY}) or []
        first = self.listing({size_param: TINY})
        head = record_keys(first.records) or []
        if ref[:TINY] and head != record_keys(ref[:TINY]):
            self.note(
                WARN,
                "order",
                "two identical requests listed different instances first: the listing "
                "order is not stable, so paging can skip or repeat instances",
            )
        strategy = (
            self._link(first, size_param, ref) or self._page(size_param, ref) or self._offset(size_param, ref)
        )
        if strategy is None and self._zero_based:
            self.note(
                FAIL,
                "paging",
                f"pages are numbered from 0 ({self._zero_based}=1 answers instances {TINY + 1} to "
                f"{2 * TINY}); the provider numbers them from 1",
            )
            raise ProbeFailed(
                "0-based page numbers are not supported: use offset paging if the server offers it"
            )
        if strategy is None:
            self.note(
                FAIL,
                "paging",
                f"{size_param} limits a page to {TINY}, but no page parameter "
                f"({', '.join(self.page_params)}), offset parameter ({', '.join(self.offset_params)}) or "
                f"next link moves past the first page; extractions would read it again and again",
            )
            raise ProbeFailed(
                "find this server's page parameter and pass it with --page-param (or --offset-param)"
            )
        self.counts.total(first, strategy)
        self.counts.cap(strategy)
        check_short_pages(self.prober, strategy)  # issue 20: whether a short page may end a listing here
        return SearchSample(size_param, ref)

    def _ignored(self, answer: Answer | None) -> bool:
        """Whether ``answer``, asked for pages of TINY, holds many more: the size names sent are ignored, and
        on a server without paging each such answer is the whole form (up to max_response_bytes)."""
        return answer is not None and answer.records is not None and len(answer.records) > 2 * TINY

    def _honoured_size_param(self) -> str | None:
        names = self.size_params
        if self._ignored(self.prober._prefix_answer):
            # The connection's size names were ignored: ask with all the others at once before one by one.
            sent = (self.config.page_size_param, self.config.limit_param)
            names = [name for name in names if name not in sent]
            if not names or self._ignored(self.listing(dict.fromkeys(names, TINY))):
                return None
        counts: list[int] = []
        for name in names:
            small = self.records({name: TINY})
            if small is None:
                continue
            counts.append(len(small))
            if len(small) == TINY and len(self.records({name: TINY + 1}) or []) == TINY + 1:
                return name
        if counts and max(counts) < MIN_INSTANCES and min(counts) == max(counts):
            self.note(
                FAIL,
                "paging",
                f"the form holds {max(counts)} instance(s): too few to tell how the server pages",
            )
            raise ProbeFailed(f"probe a form with at least {MIN_INSTANCES} instances (--form)")
        return None

    def _without_size_param(self) -> SearchSample:
        """No page-size parameter is honoured: no paging, or pages of a fixed size."""
        whole = self.listing()
        records = whole.records or []
        n = len(records)
        if whole.links.get("next"):
            self.note(
                FAIL,
                "paging",
                f"pages of {n} with a next link, whatever page size is asked "
                f"({', '.join(self.size_params)} tried)",
            )
            raise ProbeFailed("find this server's page-size parameter and pass it with --size-param")
        # Every page name at once, then every offset name: one listing each where none is honoured.
        page_names = self._moving(dict.fromkeys(self.page_params, 2), records)
        for name in page_names:
            second = self.records({name: 2})
            if second is not None and record_keys(second) != record_keys(records):
                # Page 2 moves; page 1 must be the first page, or page 2 is the third (0-based) or an offset.
                if record_keys(self.records({name: 1})) != record_keys(records):
                    self._zero_based = self._zero_based or name
                    continue
                return self._fixed_size("page", {"paging": "page", "page_param": name}, n, second)
        for name in self._moving(dict.fromkeys(self.offset_params, TINY), records):
            shifted = self.records({name: TINY})
            if shifted is not None and record_keys(shifted) != record_keys(records):
                # What follows the first page, not the shifted one, tells whether more exist.
                answer = self.listing({name: n})
                if answer.records is None:  # refused or failed: unknown, not "nothing follows"
                    self.counts.unanswered(answer, "paging", f"{name}={n} (what follows the first page)")
                return self._fixed_size(
                    "offset", {"paging": "offset", "offset_param": name}, n, answer.records
                )
        if self._zero_based:
            self.note(
                FAIL,
                "paging",
                f"pages are numbered from 0, or {self._zero_based} is not a page number: "
                f"{self._zero_based}=2 moves past the first page but {self._zero_based}=1 does not answer "
                f"it; the provider numbers pages from 1",
            )
            raise ProbeFailed(
                "0-based page numbers are not supported: use offset paging if the server offers it"
            )
        if n < MIN_INSTANCES:
            self.note(FAIL, "paging", f"the form holds {n} instance(s): too few to tell how the server pages")
            raise ProbeFailed(f"probe a form with at least {MIN_INSTANCES} instances (--form)")
        self._no_paging(whole, n)
        self.result.extras.update({"paging": "none", "total_header": "none"})
        self.note(OK, "total", "none needed: one response holds every instance")
        return SearchSample(None, records)

    def _moving(self, params: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
        """The names of ``params`` worth trying one by one: none if, sent together, they change nothing."""
        together = self.records(params)
        return list(params) if together is None or record_keys(together) != record_keys(records) else []

    def _no_paging(self, whole: Answer, n: int) -> None:
        """Every request answered the same ``n`` instances: all of them, unless a count header says more.

        A server with pages of a fixed size and a page parameter not among the candidates looks the same;
        taken for "none", an extraction would read its first page alone and succeed."""
        tried = f"page ({', '.join(self.page_params)}), offset ({', '.join(self.offset_params)})"
        for name, total in self._counts(whole):
            if total > n:
                self.note(
                    FAIL,
                    "paging",
                    f"pages of {n}: {name} says {total} instances match, but every request answers the "
                    f"same {n}, whatever {tried} or size parameter is sent",
                )
                raise ProbeFailed(
                    "the page parameter is not among the candidates: find it and pass --page-param (or "
                    "--offset-param) to probe again"
                )
            if total == n:
                self.note(
                    OK,
                    "paging",
                    f"none: every request answers all {n} instances ({name}: {total}), whatever page, "
                    f"size or offset parameter is sent",
                )
                return
        self.note(
            WARN,
            "paging",
            f"none, not proven: every request answers the same {n} instances, whatever {tried} or size "
            f"parameter is sent, and no count header ({', '.join(self.total_headers)}) says how many match; "
            f"if this server pages by {n} through another parameter, pass it with --page-param or an "
            f"extraction reads the first {n} alone",
        )

    def _counts(self, answer: Answer) -> list[tuple[str, int]]:
        """The count headers of an answer that hold a number."""
        found = []
        for name in self.total_headers:
            raw = answer.headers.get(name, "").strip()
            if raw.isdigit():
                found.append((name, int(raw)))
        return found

    def _fixed_size(
        self, strategy: str, extras: dict[str, Any], n: int, second: list[dict[str, Any]] | None
    ) -> SearchSample:
        """``second``: what follows the first page (None: unknown, the request was refused or failed)."""
        self.result.extras.update(extras)
        if second is None:
            self.result.extras["page_size"] = n
            self.note(
                WARN,
                "paging",
                f"{strategy}, every first page holds {n} instances whatever size is asked "
                f"({', '.join(self.size_params)} tried); whether more follow is unknown: page_size must be "
                f"{n}, or a short page would end an extraction early",
            )
        elif second:
            self.result.extras["page_size"] = n
            self.note(
                WARN,
                "paging",
                f"{strategy}, but every page holds {n} instances whatever size is asked "
                f"({', '.join(self.size_params)} tried): page_size must be {n}, or a short page would "
                f"end an extraction early",
            )
        else:
            self.note(
                WARN,
                "paging",
                f"{strategy}, pages of a fixed size of at least {n} (the whole form "
                f"fits in one): the size parameter is ignored; set page_size to the server's page size",
            )
            self.result.extras["page_size"] = n
        first = self.listing()
        # A count header equal to the page counts the page unless the second page came back empty.
        self.counts.total(first, strategy, more=None if second is None else bool(second))
        if second is not None:
            check_short_pages(self.prober, strategy, size=n)  # issue 20: pages of n, cut after paging?
        return SearchSample(None, first.records or [])

    def _link(self, first: Answer, size_param: str, ref: list[dict[str, Any]]) -> str | None:
        link = first.links.get("next", {}).get("url")
        if not link:
            return None
        target = urljoin(first.url, link)
        if not self.config.is_own_url(target):
            # Not followed: the token goes to the connection's host alone.
            self.note(
                WARN,
                "paging",
                f"the Link header's next link leads to another host ({urlsplit(target).netloc}): "
                f"not followed; trying page and offset parameters",
            )
            return None
        if not self._continues(self.get(target).records, ref):
            self.note(
                WARN,
                "paging",
                "the Link header's next link does not lead to the following instances: not usable; "
                "trying page and offset parameters",
            )
            return None
        self.note(
            OK,
            "paging",
            f'link: {size_param}={TINY} pages, and the Link header\'s rel="next" '
            f"leads to the next {TINY} instances",
        )
        self.result.extras.update({"paging": "link", "page_size_param": size_param})
        return "link"

    @staticmethod
    def _continues(records: list[dict[str, Any]] | None, ref: list[dict[str, Any]]) -> bool:
        """Whether ``records`` start with the instances after the first page of ``ref`` (the first ``2 *
        TINY``, or fewer when the server caps pages below that)."""
        wanted = record_keys(ref[TINY : 2 * TINY]) or []
        got = record_keys(records)
        return bool(wanted) and got is not None and got[: len(wanted)] == wanted

    def _page(self, size_param: str, ref: list[dict[str, Any]]) -> str | None:
        head = record_keys(ref[:TINY])
        for name in self.page_params:
            if name == size_param:
                continue
            second = self.records({name: 2, size_param: TINY})
            if not self._continues(second, ref):
                moved = second is not None and record_keys(second) != head
                if moved and self._continues(self.records({name: 1, size_param: TINY}), ref):
                    self._zero_based = self._zero_based or name
                continue
            # An offset answers the same at 2 (with pages of TINY): page numbers answer the first page at 1.
            if record_keys(self.records({name: 1, size_param: TINY})) != head:
                self.note(
                    WARN,
                    "paging",
                    f"{name}=2&{size_param}={TINY} answers instances {TINY + 1} to {2 * TINY}, but {name}=1 "
                    f"does not answer the first {TINY}: not a page number (an offset?)",
                )
                continue
            self.note(
                OK,
                "paging",
                f"page: {name}=1 and {name}=2 with {size_param}={TINY} answer instances 1 to {TINY} and "
                f"{TINY + 1} to {2 * TINY}",
            )
            self.result.extras.update({"paging": "page", "page_param": name, "page_size_param": size_param})
            return "page"
        return None

    def _offset(self, size_param: str, ref: list[dict[str, Any]]) -> str | None:
        for name in self.offset_params:
            if name == size_param:
                continue
            if self._continues(self.records({name: TINY, size_param: TINY}), ref):
                self.note(
                    OK,
                    "paging",
                    f"offset: {name}={TINY}&{size_param}={TINY} answers instances {TINY + 1} to {2 * TINY}",
                )
                self.result.extras.update(
                    {"paging": "offset", "offset_param": name, "limit_param": size_param}
                )
                return "offset"
        return None
