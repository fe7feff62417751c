"""Typed errors raised by the Deyel provider.

Every error carries what a user needs to fix the problem (HTTP status, method, path, the server's Deyel
``errors`` list) and never a secret: paths are stored without their query string, and no header or request
body is ever part of a message.
"""

from __future__ import annotations

import email.utils
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk.exceptions import AirflowException

from deyel_provider.redact import Redactor, sent_credentials

if TYPE_CHECKING:
    from collections.abc import Mapping

    import requests

#: Deyel's error code for "the organisation's API request limit is exceeded" (sent with a 403).
REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"

#: Server errors worth another attempt: the server or a gateway in front of it was briefly unavailable.
#: 500 is in the list but the retry policy replays it only for idempotent methods; 501, 505... never change.
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})

#: Longest server-provided text kept in a message, so a huge or hostile error body stays readable.
_MAX_DETAIL = 300
#: Characters of a non-JSON error body looked at: the cleanup's time is linear in this, whatever the body.
_SCAN = 64 * 1024
#: Deyel errors kept on an exception (and in the refusal file), and the length kept of each text in them.
_MAX_ERRORS = 50
_MAX_ERROR_TEXT = 1000


class DeyelError(AirflowException):
    """Base class of every error raised by the provider.

    ``transient`` says whether the same request may succeed later (the retry policy in
    :mod:`deyel_provider.retry` decides, from it and the method, whether to replay); ``retry_after`` is the
    server's ``Retry-After`` in seconds, when it sent one. Airflow's own task retries apply to every
    ``DeyelError``: the connection may be fixed between two task tries.
    """

    #: The class's default; an instance may differ (a TLS failure is a connection error, yet not transient).
    transient = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str | None = None,
        path: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
        transient: bool | None = None,
    ) -> None:
        #: The message without the method, path and status around it.
        self.detail = message
        self.status = status
        self.method = method
        self.path = urlsplit(path).path if path and ("?" in path or "#" in path) else path
        self.errors: list[dict[str, Any]] = errors or []
        self.retry_after = retry_after
        if transient is not None:
            self.transient = transient
        #: Set by the retry policy on the error it gives up with, so an outer policy does not replay it again.
        self.retries_exhausted = False
        #: Times the retry policy sent the call that ended with this error; above 1, an earlier attempt may
        #: have been applied by the server although its answer was lost (see DeyelHook.update_instance).
        self.attempts = 1
        where = " ".join(part for part in (method, self.path) if part)
        prefix = f"{where}: " if where else ""
        suffix = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{prefix}{message}{suffix}")


class DeyelConfigError(DeyelError):
    """The ``deyel`` connection or an argument is invalid; the message says which field and how to fix it."""


class DeyelAuthError(DeyelError):
    """Deyel refused the credentials or the token (token endpoint error, or a 401 that survived a renewal)."""


class DeyelForbiddenError(DeyelError):
    """403: the API client has no permission for this call."""


class DeyelNotFoundError(DeyelError):
    """404: the form, the instance or the path does not exist."""


class DeyelConflictError(DeyelError):
    """The instance changed since it was read: ``dtLastUpdate`` is stale (optimistic locking)."""


class DeyelRateLimitError(DeyelError):
    """429, or Deyel's 403 ``REQUEST_LIMIT_EXCEEDED``: the organisation's API request limit is exceeded."""

    transient = True


class DeyelServerError(DeyelError):
    """5xx: Deyel failed or is unavailable (transient for 500, 502, 503 and 504)."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("transient", kwargs.get("status") in TRANSIENT_STATUSES)
        super().__init__(message, **kwargs)


class DeyelRequestError(DeyelError):
    """Any other 4xx: the request is malformed (400), not allowed (405), of the wrong media type (415)..."""


class DeyelBadResponseError(DeyelError):
    """The server answered with a body the provider cannot read (not JSON, truncated, wrong shape)."""


class DeyelSchemaError(DeyelBadResponseError):
    """A value does not fit the type declared for its field in a Parquet ``schema``: ``field`` names the
    field, ``position`` the record (1-based, in the order the run writes them), ``instance_id`` its id.
    Nothing is published."""

    def __init__(
        self, message: str, *, field: str, position: int, instance_id: str | None = None, **kwargs: Any
    ) -> None:
        self.field = field
        self.position = position
        self.instance_id = instance_id
        super().__init__(message, **kwargs)


class DeyelIncompleteError(DeyelError):
    """An extraction cannot guarantee every instance exactly once with what the server does: the message
    names what was observed (counts that disagree, a page parameter that is ignored, a form that changes
    faster than it can be read) and the option to change. Nothing is published."""


class DeyelConnectionError(DeyelError):
    """The server could not be reached: wrong URL, DNS, refused connection, TLS failure or timeout.

    Transient except for a TLS failure. ``request_sent`` tells whether the request may have reached the
    server (a read timeout, a connection dropped mid-response): a non-idempotent call is then not replayed.
    """

    transient = True

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: Any) -> None:
        self.request_sent = request_sent
        super().__init__(message, **kwargs)


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
        reason = "TLS verification failed; fix the certificate or set the 'CA bundle path' extra"
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


def _never_connected(exc: requests.RequestException) -> bool:
    """True when the TCP connection was never made, so the request cannot have reached the server."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    return isinstance(cause, NewConnectionError)


def parse_errors(
    body: bytes | str | None, redact: Redactor | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Read a Deyel error body into (``errors`` list, one readable message), whatever its shape.

    Understands the documented shapes: ``{"errors": [{"message", "attribute-name"}]}`` (data calls and the
    refresh grant), ``{"error", "error_description"}`` (token endpoint), and ``{"errorCode", "message"}``.
    Anything else (HTML, empty, truncated JSON) yields no list and a short excerpt of the text, so the
    caller can still say something useful. Every text kept has ``redact``'s values replaced by ``***``.
    """
    if not body:
        return [], None
    redact = redact or Redactor()
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return [], _excerpt(text, redact)
    if not isinstance(data, dict):
        return [], _excerpt(text, redact)
    raw_errors = data.get("errors")
    errors = (
        [_clean_error(e, redact) for e in raw_errors[:_MAX_ERRORS] if isinstance(e, dict)]
        if isinstance(raw_errors, list)
        else []
    )
    parts: list[str] = []
    for error in errors:
        message, attribute = error.get("message"), error.get("attribute-name")
        if message:
            parts.append(f"{message} [{attribute}]" if attribute else str(message))
    for key in ("error", "errorCode"):
        if isinstance(data.get(key), str):
            parts.append(data[key])
    for key in ("error_description", "message"):
        if isinstance(data.get(key), str):
            parts.append(data[key])
    joined = "; ".join(dict.fromkeys(str(part) for part in parts))
    return errors, _readable(redact(joined, _SCAN)) or None


def _clean_error(error: dict[Any, Any], redact: Redactor) -> dict[str, Any]:
    """One Deyel error with its texts redacted and bounded; nested values are dropped (never shown)."""
    clean: dict[str, Any] = {}
    for key, value in list(error.items())[:20]:
        if isinstance(value, str):
            clean[redact(str(key), 100)] = redact(value, _MAX_ERROR_TEXT)
        elif value is None or isinstance(value, (bool, int, float)):
            clean[redact(str(key), 100)] = value
    return clean


def _excerpt(text: str, redact: Redactor) -> str:
    """The start of a non-JSON body on one line, with HTML tags dropped, so messages stay readable.

    Linear in a bounded prefix (``_SCAN``): a hostile body of a million ``<`` costs what 64 KiB costs.
    """
    return _readable(_strip_tags(redact(text, _SCAN)))


def _strip_tags(text: str) -> str:
    """``<...>`` runs replaced by a blank, scanning each character once (a regex would backtrack)."""
    out: list[str] = []
    pos = 0
    while True:
        start = text.find("<", pos)
        end = text.find(">", start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            out.append(text[pos:])
            return "".join(out)
        out += [text[pos:start], " "]
        pos = end + 1


def _readable(text: str, limit: int = _MAX_DETAIL) -> str:
    """One printable line of at most ``limit`` characters: control characters and runs of blanks collapse."""
    text = text[:_SCAN]
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


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
    reason = _readable(redact(response.reason, _SCAN)) if isinstance(response.reason, str) else ""
    detail = (detail or reason or "no details in the response") + (f" [{note}]" if note else "")
    codes = {str(e.get("message")) for e in errors} | {str(_json_key(response, "errorCode"))}
    if status == 429 or (status == 403 and REQUEST_LIMIT_EXCEEDED in codes):
        return DeyelRateLimitError(f"rate limited: {detail}", **common)
    if status == 401 or (token_endpoint and status in (400, 403)):
        what = "the token endpoint refused the credentials" if token_endpoint else "unauthorized"
        return DeyelAuthError(f"{what}: {detail}", **common)
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
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        # Not a number and not an HTTP date: ignore it and let the backoff decide.
        return None


def _json_key(response: requests.Response, key: str) -> Any:
    try:
        data = response.json()
    except (ValueError, RecursionError):
        return None
    return data.get(key) if isinstance(data, dict) else None
