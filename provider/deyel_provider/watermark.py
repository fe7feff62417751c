"""Where a run without a data interval (``@daily`` cron, manual, asset-triggered) starts: the end of the last
published window, kept in Airflow.

Airflow 3.3+ keeps it in the asset's state store (``context["asset_state_store"][asset]``); older versions
have no such store, so the operator reads it from the ``extra`` of the asset's latest event instead (its asset
is then one of its inlets too). It is written only after the output is published: a failed run leaves it
where it was, and the next run reads the same window again. It also names the run that published it, so
clearing or retrying that run reads the same window again instead of an empty one (its changes would then be
in no file).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Watermark:
    """The last published window: ``[start, end)`` in epoch ms, and the run that published it."""

    start: int | None
    end: int
    run_id: str | None

    def as_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "run_id": self.run_id}

    @classmethod
    def from_json(cls, value: Any) -> Watermark | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(None, value, None)
        if not isinstance(value, dict) or not isinstance(value.get("end"), int):
            return None
        start, run_id = value.get("start"), value.get("run_id")
        return cls(
            start if isinstance(start, int) else None,
            value["end"],
            run_id if isinstance(run_id, str) else None,
        )


def read_watermark(context: Context, asset: Asset, key: str) -> Watermark | None:
    """The last published window, or None before the first run."""
    stores = context.get("asset_state_store")
    if stores is not None:
        return Watermark.from_json(stores[asset].get(key))
    try:
        events = list(context["inlet_events"][asset])
    except (KeyError, TypeError):
        events = []
    for event in reversed(events):
        stored = (event.extra or {}).get(EXTRA_KEY)
        if isinstance(stored, dict) and stored.get("key") == key:
            return Watermark.from_json(stored)
    return None


def write_watermark(context: Context, asset: Asset, key: str, mark: Watermark, extra: dict[str, Any]) -> None:
    """Store ``mark`` for the next run: in the asset's state, and in the event's ``extra`` in any case."""
    extra[EXTRA_KEY] = {"key": key, **mark.as_json()}
    stores = context.get("asset_state_store")
    if stores is not None:
        stores[asset].set(key, mark.as_json())
