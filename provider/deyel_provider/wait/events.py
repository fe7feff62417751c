"""A trigger's typed failure as plain values (a ``TriggerEvent`` is serialised), raised again on the worker
by the sensor that deferred to it."""

from __future__ import annotations

from typing import Any

from deyel_provider import exceptions
from deyel_provider.exceptions import DeyelError


def error_event(error: DeyelError) -> dict[str, Any]:
    """A typed failure as plain values; :func:`raise_error_event` raises it again on the worker."""
    return {
        "status": "error",
        "error_class": type(error).__name__,
        "detail": error.detail,
        "http_status": error.status,
        "method": error.method,
        "path": error.path,
    }


def raise_error_event(event: dict[str, Any]) -> None:
    """Raise the typed error an :func:`error_event` describes (``DeyelError`` for an unknown class)."""
    found = getattr(exceptions, str(event.get("error_class")), None)
    error_class = found if isinstance(found, type) and issubclass(found, DeyelError) else DeyelError
    raise error_class(
        str(event.get("detail") or "the trigger failed"),
        status=event.get("http_status"),
        method=event.get("method"),
        path=event.get("path"),
    )
