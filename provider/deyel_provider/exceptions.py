"""Typed errors raised by the Deyel provider (the classes; :mod:`deyel_provider.http.errors` makes them from
answers and transport failures, :mod:`deyel_provider.http.error_bodies` reads the server's error text).

Every error carries what a user needs to fix the problem (HTTP status, method, path, the server's Deyel
``errors`` list) and never a secret: paths are stored without their query string, and no header or request
body is ever part of a message.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from deyel_provider.compat import AirflowException

#: Deyel's error code for "the organisation's API request limit is exceeded" (sent with a 403).
REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"

#: Server errors worth another attempt: the server or a gateway in front of it was briefly unavailable.
#: 500 is in the list but the retry policy replays it only for idempotent methods; 501, 505... never change.
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})


class DeyelError(AirflowException):
    """Base class of every error raised by the provider.

    ``transient`` says whether the same request may succeed later (the retry policy in
    :mod:`deyel_provider.http.retry` decides, from it and the method, whether to replay); ``retry_after`` is
    the
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
    """A value does not fit the type declared for its field in a Parquet ``schema``, or a field would be a
    CSV or Parquet column past ``max_columns``: ``field`` names the field, ``position`` the record (1-based,
    in the order the run writes them), ``instance_id`` its id (when known). Nothing is published."""

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


class DeyelWatermarkError(DeyelError):
    """A stored watermark (or a run's recorded window) cannot be trusted: it fails its MAC, is not the shape
    this provider writes, lies after the server's present, or this run's window is no longer recorded. The
    message names how to reset it (docs/extraction.md, "Resetting a watermark"). Nothing is published."""


class DeyelSnapshotError(DeyelError):
    """A stored id snapshot (``DeyelDeletedInstancesOperator``) cannot be trusted: it fails its MAC, lists
    another connection, form or search, or cannot be decoded. Nothing is reported and the file is left as
    it is; the message says how to start a new one."""


# The server's clock (issue 20): a Date header that cannot be trusted to end a window.
class DeyelClockSkewError(DeyelIncompleteError):
    """The server's ``Date`` header is further from the worker's clock than the connection's
    ``max_clock_skew_seconds``: it is not trusted to end a window or move a watermark. Nothing is published
    and no watermark moves; the message gives both clocks."""


class DeyelSourceError(DeyelConfigError):
    """The records given to a load cannot be loaded as they are: the source is missing or unreadable, a record
    lacks the key, two records share a key. The message names the record (line) and what to fix; nothing was
    written."""


class DeyelRejectedError(DeyelError):
    """A load finished with more records refused by Deyel than ``max_rejects`` allows; the rejects file (when
    one was asked for) lists each with Deyel's errors. Every other record was written."""


class DeyelConnectionError(DeyelError):
    """The server could not be reached: wrong URL, DNS, refused connection, TLS failure or timeout.

    Transient except for a TLS failure. ``request_sent`` tells whether the request may have reached the
    server (a read timeout, a connection dropped mid-response): a non-idempotent call is then not replayed.
    """

    transient = True

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: Any) -> None:
        self.request_sent = request_sent
        super().__init__(message, **kwargs)


# One load at a time per (Deyel server, form) (issue 21): the load lease.
class DeyelLeaseError(DeyelError):
    """A load could not take or keep its lease on the form (one load of a form at a time, so that two loads
    never both create the same key): its lock folder or Redis could not be used, or the Redis lease key is
    held without the provider's lease. Nothing was written without the lease; the message names the backend
    and what to fix (``cache``, ``DEYEL_LOCK_DIR``, ``cache_url``, the key)."""


class DeyelBusyError(DeyelLeaseError):
    """Another load of the same form held the lease for longer than ``lock_timeout``: this load wrote
    nothing. Run it again when the other has ended, or give it a longer ``lock_timeout``."""


class DeyelLeaseLostError(DeyelLeaseError):
    """The load's lease ran out or was taken while the load ran (its process was paused past
    ``cache_lock_lease``, or the lock was removed): another load may hold it now, so this one stopped before
    its next write. What it wrote before is kept; a rerun converges."""
