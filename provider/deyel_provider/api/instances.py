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


def instances_endpoint(form: str) -> str:
    """The collection path of a form's instances; the form name is checked, not trusted."""
    # "." and ".." survive percent-encoding and would be resolved as dot segments (the request would go to
    # /forms/instances or /instances).
    if not isinstance(form, str) or form.strip() in ("", ".", "..") or "/" in form:
        raise DeyelConfigError(f"form must be a form identifier such as 'CRM_ACCOUNT', got {form!r}")
    return f"/forms/{quote(form.strip(), safe='')}/instances"


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


class FormInstances:
    """One form's instances, one at a time, through ``request`` (the hook's :meth:`DeyelHook.request`).

    :param request: makes an authenticated call and returns the response, or raises the typed error.
    :param form: the form's identifier, e.g. ``CRM_ACCOUNT``.
    """

    def __init__(self, request: Callable[..., requests.Response], form: str) -> None:
        self._request = request
        self.form = form
        self.collection = instances_endpoint(form)

    def get(
        self, instance_id: str | int, *, on_retry: Callable[[BaseException], None] | None = None
    ) -> dict[str, Any]:
        """One instance, ``dtLastUpdate`` included (what an update must send back)."""
        path = instance_path(self.collection, instance_id)
        return json_object(self._request("GET", path, on_retry=on_retry), "an instance")

    def create(
        self, values: Mapping[str, Any], *, on_retry: Callable[[BaseException], None] | None = None
    ) -> dict[str, Any]:
        """Create an instance and return it as the server answers (its id, ``dtLastUpdate``).

        Not replayed after a failure the server may have acted on (a 5xx, a timeout, a lost answer): a second
        POST would create a second instance. That failure is raised; look the instance up before creating it
        again.
        """
        body = field_values(values)
        created = self._request("POST", self.collection, json=body, on_retry=on_retry)
        return json_object(created, "the created instance")

    def update(
        self,
        instance_id: str | int,
        values: Mapping[str, Any],
        *,
        partial: bool = True,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> None:
        """PATCH the fields given, or PUT every field when ``partial=False``.

        Deyel's optimistic lock wants the ``dtLastUpdate`` read before (:meth:`get`) in ``values``; a stale
        one raises :class:`~deyel_provider.exceptions.DeyelConflictError`. With it, a replay is safe, so the
        PATCH is retried like the PUT; a replay refused as stale is settled by :func:`settle_update`.
        """
        body = field_values(values)
        path = instance_path(self.collection, instance_id)
        method = "PATCH" if partial else "PUT"
        settle_update(
            lambda: self._request(
                method, path, json=body, retry_unsafe="dtLastUpdate" in body, on_retry=on_retry
            ),
            lambda: self.get(instance_id, on_retry=on_retry),
            body,
        )

    def delete(self, instance_id: str | int) -> None:
        """Delete an instance; a 404 on a replay counts as success (:func:`settle_delete`)."""
        path = instance_path(self.collection, instance_id)
        settle_delete(lambda: self._request("DELETE", path))
