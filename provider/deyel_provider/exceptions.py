"""Typed errors raised by the Deyel provider.

Every error carries what a user needs to fix the problem (HTTP status, method, path, the server's Deyel
``errors`` list) and never a secret: paths are stored without their query string, and no header or request
body is ever part of a message.
"""

from __future__ import annotations

import email.utils
import json
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk.exceptions import AirflowException

if TYPE_CHECKING:
    from collections.abc import Mapping

    import requests

#: Deyel's error code for "the organisation's API request limit is exceeded" (sent with a 403).
REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"


class DeyelError(AirflowException):
    """Base class of every error raised by the provider."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str | None = None,
        path: str | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.errors: list[dict[str, Any]] = errors or []
        where = " ".join(part for part in (method, path) if part)
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

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class DeyelServerError(DeyelError):
    """5xx: Deyel failed or is unavailable."""


class DeyelRequestError(DeyelError):
    """Any other 4xx: the request is malformed (400), not allowed (405), of the wrong media type (415)..."""


class DeyelBadResponseError(DeyelError):
    """The server answered with a body the provider cannot read (not JSON, truncated, wrong shape)."""


class DeyelConnectionError(DeyelError):
    """The server could not be reached: wrong URL, DNS, refused connection, TLS failure or timeout."""


def parse_errors(body: bytes | str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Read a Deyel error body into (``errors`` list, one readable message), whatever its shape.

    Understands the documented shapes: ``{"errors": [{"message", "attribute-name"}]}`` (data calls and the
    refresh grant), ``{"error", "error_description"}`` (token endpoint), and ``{"errorCode", "message"}``.
    Anything else (HTML, empty, truncated JSON) yields no list and a short excerpt of the text, so the
    caller can still say something useful.
    """
    if not body:
        return [], None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return [], _excerpt(text)
    if not isinstance(data, dict):
        return [], _excerpt(text)
    raw_errors = data.get("errors")
    errors = [e for e in raw_errors if isinstance(e, dict)] if isinstance(raw_errors, list) else []
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
    return errors, "; ".join(dict.fromkeys(parts)) or None


def _excerpt(text: str, limit: int = 200) -> str:
    """The start of a non-JSON body on one line, with HTML tags dropped, so messages stay readable."""
    flat = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def error_from_response(
    response: requests.Response, *, token_endpoint: bool = False, note: str = ""
) -> DeyelError:
    """The typed error for a failed response: status, method, path (no query) and the Deyel errors list.

    :param note: appended to the message, e.g. which connection was used.
    """
    status = response.status_code
    request = response.request
    method = request.method if request is not None else None
    path = urlsplit(response.url).path or "/"
    errors, detail = parse_errors(response.content)
    common: dict[str, Any] = {"status": status, "method": method, "path": path, "errors": errors}
    detail = (detail or response.reason or "no details in the response") + (f" [{note}]" if note else "")
    codes = {str(e.get("message")) for e in errors} | {str(_json_key(response, "errorCode"))}
    if status == 429 or (status == 403 and REQUEST_LIMIT_EXCEEDED in codes):
        return DeyelRateLimitError(
            f"rate limited: {detail}", retry_after=parse_retry_after(response.headers), **common
        )
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
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _json_key(response: requests.Response, key: str) -> Any:
    try:
        data = response.json()
    except ValueError:
        return None
    return data.get(key) if isinstance(data, dict) else None
