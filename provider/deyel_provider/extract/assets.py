"""The assets an extraction declares: its outlets and inlets, and the default asset named after its output."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

from deyel_provider.extract import watermark as wm

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

_TEMPLATE_START = re.compile(r"{{|{%")


def templated(*values: Any) -> bool:
    """Whether any of ``values`` is a Jinja template (rendered only when the task runs)."""
    return any(isinstance(value, str) and _TEMPLATE_START.search(value) for value in values)


def declared_assets(
    asset: Asset | None, incremental_field: str | None, outlets: Any, inlets: Any
) -> tuple[list[Any], list[Any]]:
    """The task's outlets and inlets with its asset: emitted on success, and, without an asset state store
    (Airflow < 3.3), read back for the watermark from the asset's latest event."""
    # Airflow takes one asset or a list of them.
    outlets = list(outlets) if isinstance(outlets, (list, tuple)) else [outlets] if outlets else []
    inlets = list(inlets) if isinstance(inlets, (list, tuple)) else [inlets] if inlets else []
    if asset is not None and asset not in outlets:
        outlets.append(asset)
    if asset is not None and incremental_field and not wm.has_asset_state() and asset not in inlets:
        inlets.append(asset)
    return outlets, inlets


def default_asset(output: str | ObjectStoragePath) -> Asset | None:
    """The output's location up to its first template, as an Asset a downstream DAG can be scheduled on."""
    text = str(output).strip()
    match = _TEMPLATE_START.search(text)
    if match:
        text = text[: match.start()].rsplit("/", 1)[0]
    if "://" not in text:
        if not text.startswith("/"):
            return None  # a relative local path has no stable location to name
        text = "file://" + text
    text = text.rstrip("/")
    rest = text.partition("://")[2]
    return Asset(text) if rest.strip("/") else None
