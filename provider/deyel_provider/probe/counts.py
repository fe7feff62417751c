"""The probe's count header and page-size cap: does a count header count the matches or only the page sent,
and does the server serve the page size asked or cap pages below it?

Both questions turn on whether instances follow a page; that is asked of the server as the page walker
(:mod:`deyel_provider.api.page_walker`) ends a listing, with a page at the position after the instances read:
empty, nothing follows; a refusal is "unknown", never "nothing follows".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deyel_provider.api.page_walker import PageWalker
from deyel_provider.api.pagination import Page
from deyel_provider.probe.results import OK, TINY, WARN, Answer, ProberChecks, found_paging, record_key

if TYPE_CHECKING:
    from deyel_provider.probe.results import ProbeSession


class CountChecks(ProberChecks):
    """The count header and the cap of a prober whose paging strategy is known; extras go to its result."""

    def __init__(self, prober: ProbeSession) -> None:
        super().__init__(prober)
        #: The usable count header's value for the whole form (None: none usable).
        self.total_value: int | None = None

    def next_exists(self, strategy: str, served: int, topic: str) -> bool | None:
        """Whether an instance exists after the first ``served`` ones: the page walker's end of a listing, an
        empty page at that position, asked one instance long (None: cannot tell cheaply, or the server
        refused to say: a refusal is not "nothing follows")."""
        extras = self.result.extras
        size_name = {"page": "page_size_param", "offset": "limit_param"}.get(strategy)
        if size_name is None or size_name not in extras:
            return None
        paging = found_paging(extras, self.config, strategy, 1)
        params = paging.params_for(served, 1)
        answer = self.listing(params)
        if answer.records is None:
            shown = "&".join(f"{k}={v}" for k, v in params.items())
            self.unanswered(answer, topic, f"{shown} (is there an instance after the first {served}?)")
            return None
        return bool(PageWalker(paging, key=record_key).ids(Page(answer.records)))

    def unanswered(self, answer: Answer, topic: str, asked: str) -> None:
        """Say that a listing asked to tell whether more instances follow did not answer a list."""
        error = answer.deyel_error()
        self.note(
            WARN,
            topic,
            f"GET {asked} answered {answer.status}{f': {error}' if error else ''}, not a list: "
            f"whether more follow is unknown, not taken for no",
        )

    def total(self, answer: Answer, strategy: str, more: bool | None = None) -> None:
        """Find the count header; ``more``: whether instances follow ``answer`` (None: ask the server)."""
        served = len(answer.records or [])
        if more is None and strategy == "link":
            more = bool(answer.links.get("next"))
        for name in self.total_headers:
            raw = answer.headers.get(name)
            if raw is None:
                continue
            try:
                total = int(raw)
            except ValueError:
                self.note(WARN, "total", f"{name}: {raw!r} is not a number")
                continue
            # A total above its page's length counts more than pages (the walker's rule); one no larger may
            # count the page alone, unless nothing follows it.
            walker = PageWalker(found_paging(self.result.extras, self.config, strategy, TINY), key=record_key)
            walker.observe(Page(answer.records or [], total=total))
            if not walker.evidence.total_counts_listing:
                follows = more if more is not None else self.next_exists(strategy, served, "total")
                if follows is None:  # unknown: a header of the page would end extractions after one page
                    self.result.extras["total_header"] = "none"
                    self.note(
                        WARN,
                        "total",
                        f"{name} says {total}, no more than the page sent, and whether more follow is "
                        f"unknown: it may count the page; unusable",
                    )
                    return
                if follows:
                    self.result.extras["total_header"] = "none"
                    self.note(
                        WARN, "total", f"{name} counts the page sent ({total}), not the matches: unusable"
                    )
                    return
            self.result.extras["total_header"] = name
            self.total_value = total
            self.note(OK, "total", f"{name}: {total} instances")
            return
        self.result.extras["total_header"] = "none"
        self.note(
            WARN,
            "total",
            f"no usable count header ({', '.join(self.total_headers)} looked for): "
            f"extractions cannot prove a slice whole by its count and rely on a short last page",
        )

    def cap(self, strategy: str) -> None:
        extras = self.result.extras
        if "page_size" in extras:  # a fixed page size was found already
            return
        size_param = str(extras.get("page_size_param") or extras["limit_param"])
        asked = self.page_size
        answer = self.listing({size_param: asked})
        served = len(answer.records or [])
        if served >= asked:
            self.note(OK, "page size", f"{asked} instances per page served as asked")
            extras["page_size"] = asked
            return
        # What follows is asked of the server: a count header may overstate the total.
        more = (
            bool(answer.links.get("next"))
            if strategy == "link"
            else self.next_exists(strategy, served, "page size")
        )
        header, total = extras.get("total_header"), self.total_value
        if more is None:  # unknown: the count header decides, and is never discredited by an unknown
            more = total > served if total is not None and header != "none" else None
        if more is None and served:
            self.note(
                WARN,
                "page size",
                f"asked {asked} per page, got {served}, and whether more follow is unknown (no usable count "
                f"header): page_size set to {served}, which holds whether or not the server caps pages there",
            )
            extras["page_size"] = served
            return
        if not more and total is not None and total > served and header != "none":
            extras["total_header"] = "none"
            self.total_value = None
            self.note(
                WARN,
                "total",
                f"{header} says {total}, but nothing follows the first {served}: it overstates the total; "
                f"unusable",
            )
        if more:
            self.note(
                WARN,
                "page size",
                f"asked {asked} per page, got {served} while more match: the server "
                f"caps pages at {served}; page_size must not exceed it",
            )
            extras["page_size"] = served
        else:
            self.note(OK, "page size", f"the whole form ({served}) fits in one page of {asked}; no cap seen")
            extras["page_size"] = asked
