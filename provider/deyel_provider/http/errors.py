"""Typed errors from the wire: a failed HTTP answer, or a request that got none.

Messages name status, method and path (never a query, a header or a request body) and carry the Deyel
``errors`` list, with this connection's credentials and tokens replaced by ``***``.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from deyel_provider.exceptions import (
    REQUEST_LIMIT_EXCEEDED,
    DeyelAuthError,
    DeyelConflictError,
    DeyelConnectionError,
    DeyelError,
    DeyelForbiddenError,
    DeyelNotFoundError,
    DeyelRateLimitError,
    DeyelRequestError,
    DeyelServerError,
)
from deyel_provider.http.error_bodies import SCAN, parse_errors, readable
from deyel_provider.http.redact import Redactor, sent_credentials

if TYPE_CHECKING:
    from collections.abc import Mapping

    import requests


def error_from_response(
    response: requests.Response,
    *,
    token_endpoint: bool = False,
    note: str = "",
    redact: Redactor | None = None,
) -> DeyelError:
    """The typed error for a failed response: status, method, path (no query) and the Deyel errors list.

    :param note: appended to the message, e.g. which connection was used.
    :param redact: the connection's credentials; the ones this request carried are added to them, so an
        error page that echoes the request shows ``***`` in their place.
    """
    status = response.status_code
    request = response.request
    method = request.method if request is not None else None
    path = urlsplit(response.url).path or "/"
    redact = (redact or Redactor()).with_values(*sent_credentials(response))
    errors, detail = parse_errors(response.content, redact)
    common: dict[str, Any] = {
        "status": status,
        "method": method,
        "path": path,
        "errors": errors,
        "retry_after": parse_retry_after(response.headers),
    }
    reason = readable(redact(response.reason, SCAN)) if isinstance(response.reason, str) else ""
    said = detail or reason or "no details in the response"
    noted = f" [{note}]" if note else ""
    detail = said + noted
    if response.is_redirect:
        return DeyelRequestError(
            f"redirected to {_location(response, redact)} and not followed: only GET and HEAD follow a "
            f"redirect, and only on the connection's own host; set the base URL to the server's address "
            f"({detail})",
            **common,
        )
    codes = {str(e.get("message")) for e in errors} | {str(_json_key(response, "errorCode"))}
    if status == 429 or (status == 403 and REQUEST_LIMIT_EXCEEDED in codes):
        return DeyelRateLimitError(f"rate limited: {detail}", **common)
    if status == 401 or (token_endpoint and status in (400, 403)):
        what = "the token endpoint refused the credentials" if token_endpoint else "unauthorized"
        hint = _refusal_hint(said) if token_endpoint else ""
        return DeyelAuthError(f"{what}: {said}{hint}{noted}", **common)
    if status == 403:
        return DeyelForbiddenError(f"forbidden: {detail}", **common)
    if status == 404:
        hint = "; check the base URL and the token path" if token_endpoint else ""
        return DeyelNotFoundError(f"not found: {detail}{hint}", **common)
    if status == 409:
        return DeyelConflictError(f"conflict, the instance changed since it was read: {detail}", **common)
    if status >= 500:
        return DeyelServerError(f"server error: {detail}", **common)
    return DeyelRequestError(f"request rejected: {detail}", **common)


def _refusal_hint(said: str) -> str:
    """Deyel documents one refusal, "Invalid client_id", and gives it for a wrong secret too: the message
    says so, unless the server's own words already tell which of the two it refused."""
    text = said.lower()
    if "secret" in text or "password" in text or not ("client_id" in text or "invalid_client" in text):
        return ""
    return (
        " (the server gives this one answer for an unknown Client ID and for a bad Client Secret alike: "
        "check both Login and Password)"
    )


def _location(response: requests.Response, redact: Redactor) -> str:
    """A redirect's target as scheme, host and path: its query and user-info may carry anything."""
    raw = response.headers.get("Location", "")
    try:  # http.client decodes header bytes as latin-1; servers send UTF-8 (requests reads it so too)
        raw = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass
    # Redacted before it is parsed: the parser percent-encodes and lower-cases, which would hide a secret.
    text = redact(unquote(raw), SCAN)
    try:
        target = parse_url(urljoin(response.url or "", text))
    except LocationParseError:
        return "an unreadable Location"
    port = f":{target.port}" if target.port else ""
    return readable(redact(unquote(f"{target.scheme}://{target.host}{port}{target.path or '/'}"), SCAN))


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, given in seconds or as an HTTP date."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        # Not a number and not an HTTP date: ignore it and let the backoff decide.
        return None


def deyel_error_body(response: requests.Response) -> bool:
    """Whether a failed response's body has Deyel's error shape (``docs/deyel-api.md`` 4-5): JSON with an
    ``errors`` list, or an ``errorCode``. A proxy's or a servlet container's own page (HTML, empty) has
    neither, so its status says nothing about the API behind it."""
    return isinstance(_json_key(response, "errors"), list) or isinstance(
        _json_key(response, "errorCode"), str
    )


def _json_key(response: requests.Response, key: str) -> Any:
    try:
        data = response.json()
    except (ValueError, RecursionError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def connection_error(
    exc: requests.RequestException, url: str, timeout: float, conn_id: str, *, method: str | None = None
) -> DeyelConnectionError:
    """A clear message for a request that got no HTTP answer (what went wrong and what to check).

    :param url: the requested URL; only its scheme, host and path are kept (a query may carry secrets).
    """
    import requests

    parts = urlsplit(url)
    sent = True
    transient = True
    if isinstance(exc, requests.exceptions.SSLError):
        reason = (
            PLAIN_HTTP_PORT
            if parts.scheme == "https" and _speaks_plain_http(exc)
            else "TLS verification failed; fix the certificate or set the 'CA bundle path' extra"
        )
        transient = sent = False
    elif isinstance(exc, requests.exceptions.ConnectTimeout):
        reason = f"could not connect within {timeout:g} s (the 'Request timeout' extra)"
        sent = False
    elif isinstance(exc, requests.exceptions.Timeout):
        reason = f"no answer within {timeout:g} s (the 'Request timeout' extra)"
    elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
        reason = "the connection broke while the response was being read"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        sent = not _never_connected(exc)
        reason = (
            "could not connect; check the Host (base URL) and that the server is up"
            if not sent
            else "the connection was dropped before the response was complete"
        )
    else:
        reason = f"request failed ({type(exc).__name__})"
    return DeyelConnectionError(
        f"{parts.scheme}://{parts.netloc}: {reason} [connection {conn_id!r}]",
        method=method,
        path=parts.path or "/",
        request_sent=sent,
        transient=transient,
    )


#: A TLS handshake answered in plain HTTP: a wrong scheme or port, never a certificate matter.
PLAIN_HTTP_PORT = (
    "this port speaks plain HTTP, not TLS (it answered the TLS handshake in plain HTTP; not a certificate "
    "problem): use the server's https port in the Base URL, or http:// if the server only serves plain HTTP"
)
#: What TLS libraries say when the answer to a ClientHello is not TLS but plain HTTP ("HTTP/1.1 400..."):
#: OpenSSL 1.1 and 3.0/3.1 "wrong version number", OpenSSL 3.2+ "record layer failure", BoringSSL and
#: LibreSSL "http request".
_PLAIN_HTTP_SIGNS = ("wrong version number", "wrong_version_number", "record layer failure", "http request")


def _speaks_plain_http(exc: BaseException) -> bool:
    """True when an SSLError (or one it wraps) says the server answered the handshake in plain HTTP."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 10:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if any(sign in str(current).lower() for sign in _PLAIN_HTTP_SIGNS):
            return True
        reason = getattr(current, "reason", None)
        nested = [*current.args, reason, current.__cause__, current.__context__]
        pending.extend(item for item in nested if isinstance(item, BaseException))
    return False


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the TCP connection was never made, so the request cannot have reached the server."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    return isinstance(cause, NewConnectionError)


def names_form(error: DeyelError, form: str) -> bool:
    """True when the server's errors name ``form``: the API answered (a wrong path's 404 names nothing)."""
    return any(form in str(item.get("message", "")) for item in error.errors)


def api_prefix_hint(url: str, status: int | None, api_prefix: str, found: str | None, form: str) -> str:
    """The Test button's red message for a GET the API did not answer: the likely fix, named."""
    where = _without_query(url)
    prefix = api_prefix.strip("/")
    state = "missing" if not prefix else f"wrong (api_prefix is {'/' + prefix!r})"
    answered = f"answered {status}" if status is not None else "did not answer like Deyel's API"
    if found is not None:
        fix = (
            f"set api_prefix to {found or '(empty)'!r}: GET {found}/forms/{form}/instances answers as the API"
        )
    else:
        fix = (
            "set api_prefix to the path of Deyel's REST API on this server, e.g. /DeyelWeb/api "
            "(deyel-probe --conn-id <id> finds it)"
        )
    return f"GET {where} {answered}: the API prefix is probably {state}; {fix}"


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
