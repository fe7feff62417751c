"""The probe's steps: token, API prefix, paging (:mod:`deyel_provider.probe.paging`, with the count header
and page-size cap in :mod:`deyel_provider.probe.counts`), search; then the id key, dates and clocks
(:mod:`deyel_provider.probe.keys`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

from deyel_provider.connection.settings import DeyelConfig
from deyel_provider.exceptions import DeyelAuthError, DeyelError
from deyel_provider.http.bodies import read_capped
from deyel_provider.probe.keys import KeyChecks
from deyel_provider.probe.paging import PagingChecks
from deyel_provider.probe.results import (
    FAIL,
    OFFSET_PARAMS,
    OK,
    PAGE_PARAMS,
    PREFIXES,
    SIZE_PARAMS,
    TINY,
    TOTAL_HEADERS,
    WARN,
    Answer,
    Candidates,
    Finding,
    ProbeFailed,
    ProbeResult,
    record_key,
    record_keys,
    search_field,
    unique,
)


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
        candidates: Candidates | None = None,
        page_size: int | None = None,
    ) -> None:
        """:param candidates: names to try after the connection's own and the common ones (``--prefix``...).
        :param page_size: the page size whose cap is checked; default: the connection's."""
        self.config = config
        self.session = session
        self.form = form
        self._grant = grant
        self._redact = redact
        given = candidates or Candidates()
        self.prefixes = unique([config.api_prefix], PREFIXES, given.prefixes)
        self.page_params = unique([config.page_param], PAGE_PARAMS, given.page_params)
        self.size_params = unique(
            [config.page_size_param, config.limit_param], SIZE_PARAMS, given.size_params
        )
        self.offset_params = unique([config.offset_param], OFFSET_PARAMS, given.offset_params)
        named = [config.total_header] if config.total_header.strip().lower() != "none" else []
        self.total_headers = unique(named, TOTAL_HEADERS, given.total_headers)
        self.page_size = page_size or config.page_size
        self.result = ProbeResult()
        self._token = ""
        self._collection = ""
        self._total_value: int | None = None
        #: The answer to the prefix's GET, which asked for a tiny page with the connection's size names.
        self._prefix_answer: Answer | None = None

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
        """How this server pages (:mod:`deyel_provider.probe.paging`), then whether it honours ``search``."""
        paging = PagingChecks(self)
        found = paging.run()
        self._total_value = paging.counts.total_value
        self._search(found.size_param, found.sample)

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
