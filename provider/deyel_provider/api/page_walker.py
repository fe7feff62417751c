"""The one rule for "this listing has ended": only proofs are accepted, never a page that merely looks last.

Deyel documents no paging (``docs/deyel-api.md``); servers cap pages below what is asked, send count headers
that count the page, or apply permissions after paging (a page comes back shorter than asked while more
follow). Slicing, the sensor's count, the write-back's key search and ``deyel-probe`` all decide through this
module when a listing has ended, and accept two proofs:

1. **An empty page** at the position after the instances read (or no ``next`` link: the server says so).
   Pages after a short one are asked at its size, so they start where a capping server's page ended and
   inside a shortened one: nothing is skipped. Where the listing may shift between requests (an instance
   that leaves moves the later ones up), the first page is read again: unchanged, nothing left in between
   (:meth:`PageWalker.holds_all`).
2. **A total that agrees with what was counted across pages.** The count header is believed only once it
   has shown it does not count the page it comes with: a total above a page's length, a walk of several
   pages that reaches it, or a page of one asked on purpose whose total is above one. A total equal to a
   short first page is no proof: on a server capping pages below ``page_size`` a header counting the page
   says exactly that.

A page shorter than asked is no proof, even below a cap the server has shown (fewer than asked, then more):
a server that applies permissions per page shortens pages while more follow, and a sparse one passes every
test of a cap in one region and shortens pages in another (the property test of ``tests/test_page_walker.py``
found one). What the answers show is still recorded (:class:`PageEvidence`): a proven cap sizes slices and
marks a page at the cap as full (split, not walked); ``shortens`` is what ``deyel-probe`` reports. Without a
count header the cost is one request more per listing for the empty page, and one for the re-read.

Everything else (a page identical to the one before, a total below what was listed or one that counts the
page, an order that changes between pages where a skip is not affordable) is a typed
:class:`~deyel_provider.exceptions.DeyelError`, never an early end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from deyel_provider.api.instance_ids import DEFAULT_ID_FIELD, id_digest, instance_id, missing_id, not_an_id
from deyel_provider.api.pagination import Page, Paging
from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError, DeyelIncompleteError

#: Asks the listing for page ``index`` (0-based) of ``size`` instances; the caller binds the query.
GetPage = Callable[[int, int], Page]
#: Follows a ``next`` link.
Follow = Callable[[str], Page]
#: The most pages of repeats a walk accepts in a row (a server whose pages overlap, as one that drops
#: instances after paging does when pages are asked at the size it sent) before it is a typed error.
MAX_REPEAT_PAGES = 64


@dataclass(frozen=True)
class PageEvidence:
    """What the server's answers have proven so far (a snapshot, for reports and logs)."""

    largest: int
    cap: int | None
    shortens: bool
    total_counts_listing: bool


class PageWalker:
    """Decides, for every listing read through one connection in one task, whether it has ended.

    Thread-safe: a sliced read asks from several threads, and what one answer proves serves all.

    :param paging: the connection's paging options (strategy, page size, total header).
    :param id_field: the key holding an instance's id, to tell repeats from new instances.
    :param key: instead of ``id_field``, a function giving each instance's identity (the probe, which does
        not know the id key yet).
    :param warn: a logger to warn, once, that ``page_size`` is above the server's cap (the task log's);
        None: no warning (the probe asks small pages on purpose).
    """

    def __init__(
        self,
        paging: Paging,
        *,
        id_field: str = DEFAULT_ID_FIELD,
        key: Callable[[dict[str, Any]], str] | None = None,
        warn: Any = None,
    ) -> None:
        self.paging = paging
        self._warn = warn
        self._cap_warned = False
        self.id_field = id_field
        self._key = key
        self._lock = threading.Lock()
        self._largest = 0
        self._cap: int | None = None
        #: A cap seen but not proven (a total said more, or the re-read was inconclusive): plans only.
        self._cap_hint: int | None = None
        self._shortens = False
        self._counts_listing = False
        #: The last walk's last total (None: no header), for callers' messages.
        self.last_total: int | None = None

    # -- what is known ---------------------------------------------------------------------------------------

    @property
    def evidence(self) -> PageEvidence:
        with self._lock:
            return PageEvidence(self._largest, self._cap, self._shortens, self._counts_listing)

    @property
    def capacity(self) -> int:
        """The most instances a response is expected to hold (for planning slices, never as a proof)."""
        with self._lock:
            known = [c for c in (self._cap, self._cap_hint) if c is not None]
        return min([self.paging.page_size, *known])

    @property
    def header(self) -> str:
        return self.paging.total_header

    def observe(self, page: Page) -> None:
        """Learn from an answer: the largest page sent, and a total above the page (it counts more)."""
        count = len(page.records)
        with self._lock:
            if self._cap is not None and count > self._cap:
                # A page above the proven cap: the server's page lengths follow no cap; trust none.
                self._shortens = True
            self._largest = max(self._largest, count)
            if page.total is not None and page.total > count:
                self._counts_listing = True

    def mark_shortens(self) -> None:
        """A page shorter than asked was followed by more where the server's page sizes say it cannot be."""
        with self._lock:
            self._shortens = True

    def followed(
        self, count: int, asked: int, following: int, again: Callable[[], Page], first_ids: list[str]
    ) -> None:
        """A page of ``count`` of ``asked`` was followed by more instances: it was cut, by a cap or otherwise.

        :param following: how many the next page, asked at ``count``, held: all of them proves the cap.
        :param again: asks the first page again at ``count`` instances (only when the next page was short):
            a cap serves it whole, a server that shortens pages does not.
        :param first_ids: the ids of the first page, to compare.
        """
        if count >= asked:
            return
        with self._lock:
            if self._shortens:
                return
            if self._cap is not None:
                if count < self._cap:
                    self._shortens = True  # shorter than the proven cap, yet more followed
                return
            if self._largest > count:
                # The server has sent more than this in one page, so it does not cap here; yet it cut it.
                self._shortens = True
                return
            if following == count:
                self._cap = count  # a page of that size served in full: the server caps there
        if self._cap == count:
            self._cap_seen()
            return
        reread = again()
        self.observe(reread)
        ids = self.ids(reread)
        with self._lock:
            if self._largest > count:
                # Another slice's page, seen meanwhile (its worker proves it), held more than this: no cap.
                self._shortens = True
            elif ids == first_ids:
                self._cap = count if self._cap is None else min(self._cap, count)
            elif len(ids) < count:
                self._shortens = True  # fewer than a cap would serve: pages are shortened after paging
            else:
                self._cap_hint = count  # the listing moved meanwhile: a plan, not a proof
        self._cap_seen()

    def hint_cap(self, count: int) -> None:
        """A short page with a total above it: the server may cap there (used to plan, never as proof)."""
        with self._lock:
            if self._cap_hint is None or count < self._cap_hint:
                self._cap_hint = count
        self._cap_seen()

    def _cap_seen(self) -> None:
        """Warn once that ``page_size`` asks more than the server sends: the reads go on at its cap knowingly
        (slices are planned to fit it), instead of being capped in silence."""
        with self._lock:
            if self._warn is None or self._cap_warned or self._shortens:
                return
            proven = self._cap is not None
            cap = self._cap if proven else self._cap_hint
            asked = self.paging.page_size
            if cap is None or cap >= asked:
                return
            self._cap_warned = True
        how = "served the next page in full at that size" if proven else "its count said more follow"
        self._warn.warning(
            "page_size=%d is above what the server sends per response, %d (it sent %d when %d were asked, "
            "and %s): reading at %d per request; set page_size=%d (or the connection's page_size) to ask "
            "what the server gives",
            asked,
            cap,
            cap,
            asked,
            how,
            cap,
            cap,
        )

    # -- the count header ----------------------------------------------------------------------------------

    def total_is_proof(self, page: Page, get: GetPage) -> bool:
        """Whether ``page``'s total, equal to its length, proves it holds the whole listing (proof 2).

        A total above one page's length already showed the header counts more than pages; otherwise one
        page of a single instance is asked: a header counting the page says 1, one counting the listing
        says more, and a page count is confirmed on the page asked again. A header that counts the page is a
        typed error naming ``total_header``.
        """
        count = len(page.records)
        with self._lock:
            if self._counts_listing:
                return True
        if count < 2:
            return False  # a page of one cannot tell the two apart: the pages decide
        single = get(0, 1)
        self.observe(single)
        if single.total is None:
            return False  # no header this time: the pages decide
        if single.total > len(single.records):
            return True
        # A total of 1 for a page of one is a page count only if the listing still holds two or more: a
        # writer deleting meanwhile shrinks a listing to one just as well. The page asked again tells them
        # apart (a listing that shrank: the pages decide, never a false "counts the page").
        again = get(0, count)
        self.observe(again)
        if again.total is not None and again.total == len(again.records) >= 2:
            raise self.counts_page(len(again.records))
        return False

    def counts_page(self, count: int) -> DeyelIncompleteError:
        return DeyelIncompleteError(
            f"the server's '{self.header}' header says {count} for a page of {count} instances and 1 for a "
            f"page of one: it counts the page sent, not the matches, so it cannot prove a listing complete "
            f"(on a server capping pages below page_size it would end every listing after one page); set "
            f"the connection's total_header to 'none'"
        )

    def disagree(self, total: int, count: int, where: str = "") -> DeyelIncompleteError:
        return DeyelIncompleteError(
            f"the server's '{self.header}' says {total} instances{where} but the pages held {count}: the "
            f"total cannot prove a listing complete (it counts something else than the search as the pages "
            f"see it: the whole form, the page, or instances a permission hides); if that header does not "
            f"count the search, set the connection's total_header to 'none'"
        )

    # -- one page, or a walk -------------------------------------------------------------------------------

    def ids(self, page: Page) -> list[str]:
        if self._key is not None:
            return [self._key(record) for record in page.records]
        out = []
        for record in page.records:
            ident = instance_id(record, self.id_field)
            if ident is None:
                raise DeyelIncompleteError(
                    f"{missing_id(self.id_field)}; repeats cannot be told apart without the instance id"
                )
            out.append(ident)
        # One response is a consistent snapshot: an id twice in it is no id (cheap; the page is in memory).
        if len(set(out)) != len(out):
            raise DeyelConfigError(not_an_id(self.id_field))
        return out

    def holds_all(self, first: Page, asked: int, get: GetPage, follow: Follow | None = None) -> bool:
        """Whether ``first`` (page 0, ``asked`` instances asked) holds every instance of its listing.

        False means "not proven": more may follow (the caller splits or pages). For a listing that only
        loses instances between requests (a slice in the past), True is a proof: an empty next page counts
        only once the first page, asked again, is unchanged (an instance that left meanwhile would have
        moved another onto the first page, unread).
        """
        if not self.paging.pages:
            return True
        count = len(first.records)
        self.observe(first)
        total = first.total
        if total is not None:
            if count > total:
                raise self.disagree(total, count)
            if count < total:
                # More follow, or the total counts what the pages cannot show (an empty page with a total
                # above zero is no end either): split, and let the parts' totals disagree if they do.
                if 0 < count < asked:
                    self.hint_cap(count)
                return False
            if count and self.total_is_proof(first, get):
                return True
        if count == 0:
            return True
        with self._lock:
            cap = self._cap if not self._shortens else None
        if count >= min(asked, cap or asked):
            return False  # a full page (at what was asked, or at the proven cap): more may follow
        return self._next_is_empty(first, asked, get, follow)

    def _next_is_empty(self, first: Page, asked: int, get: GetPage, follow: Follow | None) -> bool:
        """Read on from the first page's end until a page brings new instances (False) or none (proof 1)."""
        count = len(first.records)
        first_ids = self.ids(first)
        seen = set(first_ids)
        page = first
        for index in range(1, MAX_REPEAT_PAGES + 1):
            if self.paging.strategy == "link":
                if not page.next_url or follow is None:
                    return True  # the server listed the whole listing in what was read
                page = follow(page.next_url)
            else:
                # Page ``index`` at the first page's size starts where it ended on a capping server, and
                # inside it (never past it) on a server that shortened it: nothing is skipped either way.
                page = get(index, count)
            self.observe(page)
            ids = self.ids(page)
            if not ids:
                again = get(0, asked)
                return self.ids(again) == first_ids
            if ids == first_ids:
                return False  # the first page again: an ignored page parameter, told by the caller's paging
            if not seen.issuperset(ids):
                if index == 1:
                    self.followed(count, asked, len(ids), lambda: get(0, count), first_ids)
                else:
                    self.mark_shortens()
                return False
            # Only instances already read: pages overlap, so the server shortened the first one.
            self.mark_shortens()
        raise self._endless(count)

    def walk(
        self,
        first: Page,
        asked: int,
        get: GetPage,
        follow: Follow | None = None,
        *,
        stable_order: bool = False,
    ) -> Generator[Page, None, None]:
        """``first`` and the pages after it, up to a proven end (the caller may stop earlier).

        Pages after a short first page are asked at its size, so they start where it ended on a capping
        server and inside it on one that shortens pages: repeats are possible (callers count ids), skips not.
        The walk ends at an empty page, or a total shown to count the search that the pages reached.
        A page identical to the one before (an ignored page parameter) and a total below the instances
        listed are typed errors; ``last_total`` tells the caller a total above them once the walk ended.

        :param stable_order: the caller cannot afford a skipped instance (a missing key is created): a page
            repeating instances of earlier ones, on a server not known to shorten pages, means the order
            changes between requests (which skips others), a typed error.
        """
        self.last_total = None
        cut, size = len(first.records), asked
        page = first
        seen: set[bytes] = set()  # digests of the ids read: their length is the server's
        previous: list[str] | None = None
        repeats = 0
        for index in range(1, 1_000_000):
            before = self.evidence
            self.observe(page)
            ids = self.ids(page)
            if previous is not None and ids and ids == previous:
                raise DeyelBadResponseError(
                    f"the server answered two pages with the same {len(ids)} instances: it ignores the "
                    f"page parameter; set the connection's paging options (paging, page_param, offset_param) "
                    f"to what the server understands"
                )
            digests = [id_digest(i) for i in ids]
            fresh = [d for d in digests if d not in seen]
            seen.update(digests)
            yield page
            if not ids or not self.paging.pages:
                return
            total = page.total
            if total is not None:
                self.last_total = total
                if len(seen) > total:
                    raise (self.counts_page(total) if total == len(ids) else self.disagree(total, len(seen)))
                if len(seen) == total and (index > 1 or self.total_is_proof(page, get)):
                    return
            if index == 1 and len(ids) != asked:
                size = len(ids)  # page on at the size the server sent: its pages start there
            elif index == 2 and cut < asked and not before.shortens:
                # Repeats after a short first page: pages shortened after paging overlap, a capped listing
                # in a changing order repeats; the first page asked again at its size tells which.
                following = len(ids) if len(fresh) == len(ids) else -1
                self.followed(cut, asked, following, lambda: get(0, cut), self.ids(first))
            if stable_order and index > 1 and len(fresh) < len(ids) and not self.evidence.shortens:
                raise DeyelIncompleteError(
                    f"page {index} repeated {len(ids) - len(fresh)} instances of earlier pages: the "
                    f"listing's order changes between requests (or the listing moved), so others may have "
                    f"been skipped; retry when the form is quiet, or set a batch_size whose matches fit "
                    f"one page of the server"
                )
            if not fresh:
                repeats += 1
                if repeats > MAX_REPEAT_PAGES:
                    raise self._endless(size)
            else:
                repeats = 0
            previous = ids
            if self.paging.strategy == "link":
                if not page.next_url or follow is None:
                    return
                page = follow(page.next_url)
            else:
                page = get(index, size)
        raise self._endless(size)  # pragma: no cover - a million pages

    def _endless(self, size: int) -> DeyelIncompleteError:
        return DeyelIncompleteError(
            f"{MAX_REPEAT_PAGES} pages of {size} in a row brought no instance not already read, and no "
            f"empty page came: the server's pages overlap without end; set the connection's paging options "
            f"to what the server understands"
        )
