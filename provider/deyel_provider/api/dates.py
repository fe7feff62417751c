"""Dates where Deyel documents no format: the literal of a date in ``search`` values (the connection's
``date_literal``), and telling epoch seconds or ISO text from the epoch milliseconds an incremental field
must hold. Used by the slicing, the change trigger and ``deyel-probe``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from deyel_provider.exceptions import DeyelConfigError

#: How dates are written inside ``search`` values (the connection's ``date_literal`` extra).
DATE_LITERALS: tuple[str, ...] = ("epoch_ms", "iso")
#: A value that read as epoch seconds lies within this many ms before the server's present (and read as
#: milliseconds lies in 1970) is taken for seconds: no form is stamped in 1970, and small test values are
#: not mistaken for seconds.
SECONDS_WINDOW_MS = 40 * 365 * 86_400_000


#: Units finer than the millisecond an epoch value may be in by mistake, and how many make one millisecond.
FINER_UNITS: tuple[tuple[str, int], ...] = (("microseconds", 1000), ("nanoseconds", 1_000_000))
#: The range of moments a date literal can be written for: 0001-01-01 to 9999-12-31 (``datetime``'s).
MIN_LITERAL_MS = -62_135_596_800_000
MAX_LITERAL_MS = 253_402_300_799_999


def search_literal(moment: int, kind: str = "epoch_ms") -> str:
    """An epoch-ms moment as the server reads dates in ``search`` (the connection's ``date_literal``).

    :raises DeyelConfigError: for a moment no date can be written for (a value in micro- or nanoseconds
        given as milliseconds lies tens of thousands of years ahead)."""
    if not MIN_LITERAL_MS <= moment <= MAX_LITERAL_MS:
        unit = finer_unit(moment, None)
        said = f" (it reads as epoch {unit})" if unit else ""
        raise DeyelConfigError(
            f"the moment {moment} is no epoch-millisecond date (years 1 to 9999){said}: a watermark, start "
            f"or incremental field in another unit; give epoch milliseconds"
        )
    if kind == "iso":
        stamp = datetime.fromtimestamp(moment / 1000, UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(moment)


def iso_moment(moment: int | None) -> str | None:
    """An epoch-ms moment as ISO 8601 UTC for people (``2026-01-01T00:00:00.000Z``); None stays None."""
    if moment is None:
        return None
    return (
        datetime.fromtimestamp(moment / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def in_seconds(value: int, present_ms: int) -> bool:
    """Whether an epoch value is seconds, not milliseconds: read as seconds it lies in the last decades
    before ``present_ms`` (or a day after it), read as milliseconds in 1970."""
    return -86_400_000 <= present_ms - value * 1000 <= SECONDS_WINDOW_MS


def finer_unit(value: int, present_ms: int | None) -> str | None:
    """The finer unit (``microseconds``, ``nanoseconds``) an epoch value is in when, read in it, it lies in
    the last decades before ``present_ms`` (or a day after it; this machine's clock when None); else None."""
    if present_ms is None:
        present_ms = int(time.time() * 1000)
    for name, per_ms in FINER_UNITS:
        if -86_400_000 <= present_ms - value // per_ms <= SECONDS_WINDOW_MS:
            return name
    return None


def is_iso(raw: Any) -> bool:
    """Whether ``raw`` is ISO 8601 date text (what some servers send for dates)."""
    if not isinstance(raw, str) or not 10 <= len(raw.strip()) <= 40:
        return False
    try:
        datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
