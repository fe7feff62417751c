"""Where a run without a data interval (``@daily`` cron, manual, asset-triggered) starts: the end of the last
published window, kept in Airflow.

Airflow 3.3+ keeps it in the asset's state store (``context["asset_state_store"][asset]``); older versions
have no such store, so the operator reads it from the ``extra`` of the asset's latest event instead (its asset
is then one of its inlets too). It is written only after the output is published: a failed run leaves it
where it was, and the next run reads the same window again.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Asset, Context

#: The key of the watermark in the asset event's extra (versions without an asset state store).
EXTRA_KEY = "watermark"


def has_asset_state() -> bool:
    """Whether this Airflow keeps per-asset state (3.3+)."""
    try:
        from airflow.sdk.execution_time.context import AssetStateStoreAccessors  # noqa: F401
    except ImportError:
        return False
    return True


def watermark_key(form: str, field: str, search: str | None) -> str:
    """One watermark per (form, field, search): a changed search starts from ``start_from`` again."""
    digest = hashlib.sha256((search or "").encode()).hexdigest()[:16]
    return f"deyel_watermark:{form}:{field}:{digest}"


def read_watermark(context: Context, asset: Asset, key: str) -> int | None:
    """The stored end (epoch ms) of the last published window, or None before the first run."""
    stores = context.get("asset_state_store")
    if stores is not None:
        value = stores[asset].get(key)
        return int(value) if isinstance(value, (int, str)) and str(value).lstrip("-").isdigit() else None
    try:
        events = list(context["inlet_events"][asset])
    except (KeyError, TypeError):
        events = []
    for event in reversed(events):
        stored = (event.extra or {}).get(EXTRA_KEY)
        if isinstance(stored, dict) and stored.get("key") == key and isinstance(stored.get("end"), int):
            end = stored["end"]
            return end if isinstance(end, int) else None
    return None


def write_watermark(context: Context, asset: Asset, key: str, end: int, extra: dict[str, Any]) -> None:
    """Store ``end`` for the next run: in the asset's state, and in the event's ``extra`` in any case."""
    extra[EXTRA_KEY] = {"key": key, "end": end}
    stores = context.get("asset_state_store")
    if stores is not None:
        stores[asset].set(key, end)
