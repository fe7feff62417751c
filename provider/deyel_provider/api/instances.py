"""Form-instance calls made safe to replay: paths with encoded ids, and what a replayed write's error means.

The retry policy replays a write whose answer was lost (a 504 from a gateway, a dropped connection). If the
first attempt was applied, the replay meets its own work: Deyel's optimistic lock answers 409 to a replayed
PUT/PATCH (``dtLastUpdate`` moved on) and 404 to a replayed DELETE. Those answers describe the first attempt's
success, not a failure; only a re-read tells which, so that is what :func:`settle_update` does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests

from deyel_provider.api.instance_ids import BASE_SERVER_KEYS, names_a_segment
from deyel_provider.exceptions import (
    DeyelBadResponseError,
    DeyelConfigError,
    DeyelConflictError,
    DeyelNotFoundError,
    DeyelRequestError,
)
from deyel_provider.http.redact import quoted

log = logging.getLogger(__name__)

#: Keys the server owns in an instance: not values the caller sets, so not compared after a replay (the
#: connection's ``id_field`` joins them where it is known: ``instance_ids.server_keys``).
SERVER_KEYS = BASE_SERVER_KEYS


def instance_path(collection: str, instance_id: str | int) -> str:
    """The path of one instance under ``collection``; the id is encoded into one path segment."""
    if isinstance(instance_id, bool) or not isinstance(instance_id, (str, int)):
        kind = type(instance_id).__name__
        raise DeyelConfigError(f"instance_id must be a string or an integer, got {kind}")
    text = str(instance_id).strip()
    if not names_a_segment(text):
        raise DeyelConfigError(f"instance_id must name an instance (its idObjectValue), got {quoted(text)}")
    return f"{collection}/{quote(text, safe='')}"


def field_values(values: Any) -> dict[str, Any]:
    """The caller's values as a JSON object, refused early when they cannot be one."""
    if not isinstance(values, Mapping) or not all(isinstance(key, str) for key in values):
        raise DeyelConfigError("values must be a mapping of field identifiers (strings) to JSON values")
    return dict(values)


def json_object(response: requests.Response, what: str) -> dict[str, Any]:
    """The response body as a JSON object, or :class:`DeyelBadResponseError` saying what was expected."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        method = response.request.method if response.request is not None else None
        raise DeyelBadResponseError(
            f"expected {what} as a JSON object in the answer", method=method, path=response.url
        )
    return body


def holds(instance: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """True when ``instance`` already has every value the caller sent (server-owned keys aside)."""
    for key, value in values.items():
        if key in SERVER_KEYS:
            continue
        # Compare JSON to JSON: a tuple sent is the list read back.
        if key not in instance or instance[key] != json.loads(json.dumps(value)):
            return False
    return True


def settle_update(
    send: Callable[[], object], read: Callable[[], dict[str, Any]], values: Mapping[str, Any]
) -> None:
    """Send a PUT/PATCH; when its replay is refused as stale, decide from the instance whether it was applied.

    A 409 (or the 400 some servers use for a stale ``dtLastUpdate``) on the first attempt is a real conflict
    and is raised as is. On a replay, the instance is read again: if it holds the values sent, the first
    attempt went through and the call succeeds; otherwise :class:`DeyelConflictError` says so.
    """
    try:
        send()
    except (DeyelConflictError, DeyelRequestError) as refused:
        stale = isinstance(refused, DeyelConflictError) or refused.status == 400
        if not stale or refused.attempts <= 1:
            raise
        if holds(read(), values):
            log.info(
                "Deyel %s %s: the replay was refused as stale, and the instance holds the values sent: "
                "the first attempt was applied (its answer was lost)",
                refused.method,
                refused.path,
            )
            return
        if not isinstance(refused, DeyelConflictError):
            raise
        error = DeyelConflictError(
            f"conflict on attempt {refused.attempts}: an earlier attempt of this call may have been applied "
            f"(its answer was lost), and the instance now differs from the values sent; read it again "
            f"before updating. Server: {refused.detail}",
            status=refused.status,
            method=refused.method,
            path=refused.path,
            errors=refused.errors,
        )
        error.attempts, error.retries_exhausted = refused.attempts, True
        raise error from refused


def settle_delete(send: Callable[[], object]) -> None:
    """Send a DELETE; a 404 on a replay means an earlier attempt deleted the instance: success."""
    try:
        send()
    except DeyelNotFoundError as missing:
        if missing.attempts <= 1:
            raise
        log.info(
            "Deyel %s %s: not found on attempt %d: an earlier attempt deleted it (its answer was lost)",
            missing.method,
            missing.path,
            missing.attempts,
        )
