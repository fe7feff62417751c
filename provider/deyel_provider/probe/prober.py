"""The probe's steps: token, API prefix, paging, count header, page-size cap, search; then the id key,
dates and clocks (:mod:`deyel_provider.probe.keys`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from deyel_provider.connection.settings import DeyelConfig
from deyel_provider.exceptions import DeyelAuthError, DeyelError
from deyel_provider.http.bodies import read_capped
from deyel_provider.probe.keys import KeyChecks
from deyel_provider.probe.results import (
    FAIL,
    MIN_INSTANCES,
    OFFSET_PARAMS,
    OK,
    PAGE_PARAMS,
    PREFIXES,
    SIZE_PARAMS,
    TINY,
    TOTAL_HEADERS,
    WARN,
    Answer,
    Finding,
    ProbeFailed,
    ProbeResult,
    record_key,
    record_keys,
    search_field,
    unique,
)
from deyel_provider.probe.short_pages import check_short_pages


class Prober:
    """Runs the probe against one connection's server; :meth:`run` returns what it found."""

    def __init__(
        self,
        config: DeyelConfig,
        session: requests.Session,
        *,
        form: str = "CRM_ACCOUNT",
        grant: Callable[[], Any],
        redact: Callable[[str], str] = str,
        prefixes: Sequence[str] = (),
        page_params: Sequence[str] = (),
        size_params: Sequence[str] = (),
        offset_params: Sequence[str] = (),
        total_headers: Sequence[str] = (),
        page_size: int | None = None,
    ) -> None:
        self.config = config
        self.session = session
        self.form = form
        self._grant = grant
        self._redact = redact
        self.prefixes = unique([config.api_prefix], PREFIXES, prefixes)
        self.page_params = unique([config.page_param], PAGE_PARAMS, page_params)
        self.size_params = unique([config.page_size_param, config.limit_param], SIZE_PARAMS, size_params)
        self.offset_params = unique([config.offset_param], OFFSET_PARAMS, offset_params)
        named = [config.total_header] if config.total_header.strip().lower() != "none" else []
        self.total_headers = unique(named, TOTAL_HEADERS, total_headers)
        self.page_size = page_size or config.page_size
        self.result = ProbeResult()
        self._token = ""
        self._collection = ""
        self._total_value: int | None = None
        #: The answer to the prefix's GET, which asked for a tiny page with the connection's size names.
        self._prefix_answer: Answer | None = None
        #: A page parameter that numbers pages from 0 (the provider numbers them from 1).
        self._zero_based: str | None = None

    # -- plumbing ------------------------------------------------------------------------------------------

    def note(self, level: str, topic: str, text: str) -> None:
        self.result.findings.append(Finding(level, topic, self._redact(text)))

    def get(self, url: str, params: dict[str, Any] | None = None) -> Answer:
        if not self.config.is_own_url(url):
            raise ProbeFailed(
                f"refusing to send the token to {urlsplit(url).netloc}: not the connection's host"
            )
        self.result.gets += 1
        path = urlsplit(url).path
        try:
            response = self.session.get(
                url,
                params=params,
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
                timeout=self.config.timeout,
                allow_redirects=False,
                stream=True,
            )
            read_capped(response, self.config.max_response_bytes, method="GET", path=path)
        except requests.RequestException as exc:
            raise ProbeFailed(self._redact(f"GET {path} failed: {type(exc).__name__}: {exc}")) from None
        except DeyelError as exc:  # an oversized or cut-off body
            raise ProbeFailed(self._redact(f"GET {path} failed: {exc}")) from None
        try:
            body = response.json()
        except (ValueError, RecursionError):
            body = None
        return Answer(response.status_code, response.headers, body, response.url, response.links)

    def listing(self, params: dict[str, Any] | None = None) -> Answer:
        return self.get(self._collection, params)

    def records(self, params: dict[str, Any] | None = None) -> list[dict[str, Any]] | None:
        return self.listing(params).records

    # -- the steps -----------------------------------------------------------------------------------------

    def run(self) -> ProbeResult:
        try:
            self.check_token()
            prefix = self.find_prefix()
            self.result.extras["api_prefix"] = prefix
            self.detect_paging()
            # The undocumented keys and clocks (issue 20): probe/keys.py, once paging is known.
            KeyChecks(self).run()
        except ProbeFailed as exc:
            self.note(FAIL, "stopped", str(exc))
        return self.result

    def check_token(self) -> None:
        config = self.config
        self.result.token_posts += 1
        try:
            token = self._grant()
        except DeyelAuthError as exc:
            self.note(FAIL, "token", f"POST {config.token_url} refused the credentials: {exc}")
            raise ProbeFailed(
                "check Login (the Client ID: the code of the 'Rest API Client' user) and Password (its "
                "password, the Client Secret)"
            ) from None
        except DeyelError as exc:
            status = getattr(exc, "status", None)
            hint = (
                "no token endpoint there: check Host and the 'oauth_path' extra (documented: /oauth/token; "
                "behind a context root, e.g. /DeyelWeb/oauth/token)"
                if status in (404, 405)
                else "check Host, TLS ('verify', 'ca_bundle') and that this machine reaches the server"
            )
            self.note(FAIL, "token", f"POST {config.token_url} failed: {exc}")
            raise ProbeFailed(hint) from None
        self._token = token.access_token
        self.note(OK, "token", f"POST {config.token_path or '/'}: Bearer token valid {token.lifetime:.0f} s")

    def find_prefix(self) -> str:
        tiny = {self.config.page_size_param: TINY, self.config.limit_param: TINY}
        tried: list[str] = []
        for prefix in self.prefixes:
            collection = f"{self.config.base_url}{prefix}/forms/{self.form}/instances"
            answer = self.get(collection, tiny)
            self._prefix_answer = answer
            shown = f"{prefix or '(none)'} -> {answer.status}"
            if answer.records is not None:
                self._collection = collection
                self.note(
                    OK,
                    "api prefix",
                    f"{prefix or '(none)'}: GET {prefix}/forms/{self.form}/instances answers a JSON array",
                )
                return prefix
            message = answer.deyel_error()
            if answer.status == 400 and message is not None:
                # A Deyel error about the parameters: the API is here, and paging detection tells which.
                self._collection = collection
                self.note(
                    OK,
                    "api prefix",
                    f"{prefix or '(none)'} (the tiny page parameters were refused: {message})",
                )
                return prefix
            # A 404 that names the form comes from the API; a bare "Not Found" from a path that is not it.
            no_form = answer.status == 404 and message is not None and self.form in message
            if message is not None and (answer.status in (401, 403) or no_form):
                what = {
                    401: "refused the token",
                    403: "denied access (no permission on the form's application, or REQUEST_LIMIT_EXCEEDED)",
                    404: f"has no form {self.form!r} (pass --form with a form this client may read)",
                }[answer.status]
                self.note(FAIL, "api prefix", f"{prefix or '(none)'} is the API, but it {what}: {message}")
                raise ProbeFailed(
                    f"fix the above, then probe again (GET {prefix}/forms/{self.form}/instances)"
                )
            tried.append(shown)
        self.note(FAIL, "api prefix", f"no candidate answered a JSON array of instances: {', '.join(tried)}")
        raise ProbeFailed(
            "find the path of the REST API on this server (e.g. the context root Deyel is deployed under) "
            "and pass it with --prefix, or check --form"
        )

    def detect_paging(self) -> None:
        size_param = self._honoured_size_param()
        if size_param is None:
            self._without_size_param()
            return
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
        self._total(first, strategy)
        self._cap(strategy)
        check_short_pages(self, strategy)  # issue 20: whether a short page may end a listing here
        self._search(size_param, ref)

    def _ignored(self, answer: Answer | None) -> bool:
        """Whether ``answer``, asked for pages of TINY, holds many more: the size names sent are ignored, and
        on a server without paging each such answer is the whole form (up to max_response_bytes)."""
        return answer is not None and answer.records is not None and len(answer.records) > 2 * TINY

    def _honoured_size_param(self) -> str | None:
        names = self.size_params
        if self._ignored(self._prefix_answer):
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

    def _without_size_param(self) -> None:
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
                self._fixed_size("page", {"paging": "page", "page_param": name}, n, second)
                return
        for name in self._moving(dict.fromkeys(self.offset_params, TINY), records):
            shifted = self.records({name: TINY})
            if shifted is not None and record_keys(shifted) != record_keys(records):
                # What follows the first page, not the shifted one, tells whether more exist.
                answer = self.listing({name: n})
                if answer.records is None:  # refused or failed: unknown, not "nothing follows"
                    self._unanswered(answer, "paging", f"{name}={n} (what follows the first page)")
                self._fixed_size("offset", {"paging": "offset", "offset_param": name}, n, answer.records)
                return
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
        self._search(None, records)

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
    ) -> None:
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
        self._total(first, strategy, more=None if second is None else bool(second))
        if second is not None:
            check_short_pages(self, strategy, size=n)  # issue 20: pages of n, cut after paging?
        self._search(None, first.records or [])

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

    def _next_exists(self, strategy: str, served: int, topic: str) -> bool | None:
        """Whether an instance exists after the first ``served`` ones (None: cannot tell cheaply, or the
        server refused to say: a refusal is not "nothing follows")."""
        extras = self.result.extras
        if strategy == "page" and "page_size_param" in extras:
            params = {extras["page_param"]: served + 1, extras["page_size_param"]: 1}
        elif strategy == "offset" and "limit_param" in extras:
            params = {extras["offset_param"]: served, extras["limit_param"]: 1}
        else:
            return None
        answer = self.listing(params)
        if answer.records is None:
            shown = "&".join(f"{k}={v}" for k, v in params.items())
            self._unanswered(answer, topic, f"{shown} (is there an instance after the first {served}?)")
            return None
        return bool(answer.records)

    def _unanswered(self, answer: Answer, topic: str, asked: str) -> None:
        """Say that a listing asked to tell whether more instances follow did not answer a list."""
        error = answer.deyel_error()
        self.note(
            WARN,
            topic,
            f"GET {asked} answered {answer.status}{f': {error}' if error else ''}, not a list: "
            f"whether more follow is unknown, not taken for no",
        )

    def _total(self, answer: Answer, strategy: str, more: bool | None = None) -> None:
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
            if total <= served:
                follows = more if more is not None else self._next_exists(strategy, served, "total")
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
            self._total_value = total
            self.note(OK, "total", f"{name}: {total} instances")
            return
        self.result.extras["total_header"] = "none"
        self.note(
            WARN,
            "total",
            f"no usable count header ({', '.join(self.total_headers)} looked for): "
            f"extractions cannot prove a slice whole by its count and rely on a short last page",
        )

    def _cap(self, strategy: str) -> None:
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
            else self._next_exists(strategy, served, "page size")
        )
        header, total = extras.get("total_header"), self._total_value
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
            self._total_value = None
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

    def _search(self, size_param: str | None, sample: list[dict[str, Any]]) -> None:
        picked = search_field(sample)
        if picked is None:
            self.note(WARN, "search", "no field with a plain value to filter on in the first instances")
            return
        name, value = picked
        params: dict[str, Any] = {"search": f"{name}=eq:{value}"}
        if size_param:
            params[size_param] = TINY
        answer = self.listing(params)
        shown = params["search"]
        records = answer.records
        if records is None:
            self.note(
                FAIL, "search", f"search={shown} answered {answer.status}: {answer.deyel_error() or ''}"
            )
            return
        stray = [r for r in records if str(r.get(name)) != str(value)]
        if stray or (sample[1:2] and record_key(sample[1]) in (record_keys(records) or [])):
            self.note(
                FAIL,
                "search",
                f"search={shown} is ignored (instances with other values came back): "
                f"incremental and sliced extractions need it",
            )
            return
        self.note(OK, "search", f"search={shown} honoured")
        header = self.result.extras.get("total_header")
        if header and header != "none" and self._total_value is not None:
            raw = answer.headers.get(header)
            if raw is not None and raw.isdigit() and int(raw) == self._total_value:
                self.result.extras["total_header"] = "none"
                self.note(
                    WARN,
                    "total",
                    f"{header} counts the whole form, not the search "
                    f"({raw} with the search too): set total_header none",
                )
