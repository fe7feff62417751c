"""Dates where Deyel documents no format: the literal of a date in ``search`` values (the connection's
``date_literal``), and telling epoch seconds or ISO text from the epoch milliseconds an incremental field
must hold. Used by the slicing, the change trigger and ``deyel-probe``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: How dates are written inside ``search`` values (the connection's ``date_literal`` extra).
DATE_LITERALS: tuple[str, ...] = ("epoch_ms", "iso")
#: A value that read as epoch seconds lies within this many ms before the server's present (and read as
#: milliseconds lies in 1970) is taken for seconds: no form is stamped in 1970, and small test values are
#: not mistaken for seconds.
SECONDS_WINDOW_MS = 40 * 365 * 86_400_000


def search_literal(moment: int, kind: str = "epoch_ms") -> str:
    """An epoch-ms moment as the server reads dates in ``search`` (the connection's ``date_literal``)."""
    if kind == "iso":
        stamp = datetime.fromtimestamp(moment / 1000, UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(moment)


def in_seconds(value: int, present_ms: int) -> bool:
    """Whether an epoch value is seconds, not milliseconds: read as seconds it lies in the last decades
    before ``present_ms`` (or a day after it), read as milliseconds in 1970."""
    return -86_400_000 <= present_ms - value * 1000 <= SECONDS_WINDOW_MS


def is_iso(raw: Any) -> bool:
    """Whether ``raw`` is ISO 8601 date text (what some servers send for dates)."""
    if not isinstance(raw, str) or not 10 <= len(raw.strip()) <= 40:
        return False
    try:
        datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
