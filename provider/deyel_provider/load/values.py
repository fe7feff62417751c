"""Field values between a warehouse and Deyel: what a source's value means in Deyel, and when two are equal.

Deyel types a field by its Hungarian prefix (``deyel-api.md``): ``cd``/``ds`` text, ``qt``/``nu`` numbers,
``cb`` booleans, ``dt`` dates as epoch-millisecond **strings**, ``ls`` grids (arrays of rows). A load reads
values from JSON, CSV text or Parquet columns, so:

- :func:`deyel_value` turns what Python readers produce into what Deyel stores: a ``datetime`` (naive means
  UTC) or ``date`` into epoch-ms text, a number in a ``dt``, ``cd`` or ``ds`` field into its text, a
  ``Decimal`` into a number, a NaN into null, a ``UUID`` into its text, a ``time`` into ``HH:MM:SS`` text
  (``HH:MM:SS.ffffff`` with microseconds). A value with no obvious Deyel form (``bytes``, ``timedelta``,
  a set, any other object) raises :class:`UnsupportedValue`, which the reader turns into a typed error
  naming the record and field while the keys are checked, before any write;
- :func:`csv_value` types a CSV cell by its column's prefix (as the extraction writes them: empty is null,
  ``true``/``false``, grids as JSON text); a cell that does not parse stays text, for Deyel to refuse;
- :func:`same` compares a source value with the stored one loosely enough that a rerun writes nothing:
  ``1000`` equals ``1000.0`` and Deyel 8.0's ``"1000"``, ``true`` equals ``"true"``, null equals an empty
  text, and a date's number equals its text. Numbers are compared exactly (integers as integers, text as
  ``Decimal``), so a change past a float's 53 bits (``9007199254740993`` to ``...992``) is seen; only
  when one side is a float is the comparison made in floats (the source's precision is then a float's).
"""

from __future__ import annotations

import calendar
import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from deyel_provider.api.instances import SERVER_KEYS

_KINDS = (("cd", "text"), ("ds", "text"), ("qt", "number"), ("nu", "number"), ("cb", "boolean"))
_MORE_KINDS = (("dt", "date"), ("ls", "grid"))


class UnsupportedValue(ValueError):
    """A source value that has no Deyel form (the reader names the record and field)."""


#: Deepest nesting of a source value, the record's own object being the first level (Deyel's deepest value
#: is a grid of rows of scalars: 2 levels). Deeper is :class:`TooDeep`, never a ``RecursionError``.
MAX_DEPTH = 64


class TooDeep(UnsupportedValue):
    """A source value nested past :data:`MAX_DEPTH` levels."""


def field_kind(field: str) -> str | None:
    """The type a field's prefix declares (``qtEmployee``: number), or None when it declares none.

    Grid columns (``lsAddress/dsCity``) are typed by their own name.
    """
    name = field.rsplit("/", 1)[-1]
    for prefix, kind in (*_KINDS, *_MORE_KINDS):
        if name.startswith(prefix) and name[len(prefix) : len(prefix) + 1].isupper():
            return kind
    return None


def epoch_ms_text(moment: date) -> str:
    """Deyel's date value, epoch milliseconds as text (naive datetimes are UTC; a date: its midnight UTC)."""
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000)


def deyel_value(field: str, value: Any, depth: int = 0) -> Any:
    """``value`` of ``field`` as Deyel stores it (see the module docstring); ``depth``: the lists and
    objects ``value`` is inside of, below the record (past :data:`MAX_DEPTH` levels: :class:`TooDeep`)."""
    if isinstance(value, (datetime, date)):
        return epoch_ms_text(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and field_kind(field) in ("date", "text")
    ):
        return text_of(value)  # a warehouse's numeric code or epoch number, in a text or date field
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, time):
        return value.isoformat()  # HH:MM:SS, or HH:MM:SS.ffffff: no digit is dropped
    if isinstance(value, list | dict) and depth >= MAX_DEPTH:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [deyel_value(field, row, depth + 1) for row in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise UnsupportedValue("an object whose names are not all text")
        return {k: deyel_value(k, v, depth + 1) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float)):
        return value
    # bytes (which encoding? base64?), timedelta (which unit?), sets, objects: the source must say.
    raise UnsupportedValue(f"a {type(value).__name__} value, which has no Deyel form")


def csv_value(field: str, cell: str) -> Any:
    """A CSV cell of column ``field`` as a Deyel value (see the module docstring)."""
    if cell == "":
        return None
    kind = field_kind(field)
    if kind == "number":
        try:
            number = float(cell)
        except ValueError:
            return cell
        if not math.isfinite(number):
            return cell
        stripped = cell.strip().lstrip("+-")
        return int(cell) if stripped.isdigit() else number
    if kind == "boolean" and cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    if kind == "grid" and cell.lstrip().startswith("["):
        try:
            return json.loads(cell)
        except ValueError:
            return cell
    return cell


def text_of(value: Any) -> str:
    """A scalar as Deyel writes it in text: ``true``, ``1000`` (for ``1000.0`` too), the string itself."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Any) -> int | float | Decimal | None:
    """A number as itself, a numeric text (Deyel 8.0 sends numbers so) as an exact ``Decimal``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _same_number(a: int | float | Decimal, b: int | float | Decimal) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        # A float's side has a float's precision already: more digits on the other side mean nothing.
        try:
            return float(a) == float(b)
        except OverflowError:
            return False
    return a == b  # int and Decimal compare exactly


def same(wanted: Any, stored: Any) -> bool:
    """Whether the stored value already is the wanted one (see the module docstring)."""
    if wanted is None or wanted == "":
        return stored is None or stored == ""
    if stored is None:
        return False
    if isinstance(wanted, dict) or isinstance(stored, dict):
        return (
            isinstance(wanted, dict)
            and isinstance(stored, dict)
            and wanted.keys() == stored.keys()
            and all(same(wanted[k], stored[k]) for k in wanted)
        )
    if isinstance(wanted, list) or isinstance(stored, list):
        return (
            isinstance(wanted, list)
            and isinstance(stored, list)
            and len(wanted) == len(stored)
            and all(same(a, b) for a, b in zip(wanted, stored, strict=True))
        )
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return text_of(wanted).lower() == text_of(stored).lower()
    if isinstance(wanted, str) and isinstance(stored, str):
        return wanted == stored
    a, b = _number(wanted), _number(stored)
    if a is not None and b is not None:
        return _same_number(a, b)
    return text_of(wanted) == text_of(stored)


def differences(
    values: Mapping[str, Any], instance: Mapping[str, Any], fields: Iterable[str]
) -> dict[str, Any]:
    """The ``fields`` of ``values`` that ``instance`` does not hold yet, with the values to write."""
    return {
        field: values[field]
        for field in fields
        if field in values and field not in SERVER_KEYS and not same(values[field], instance.get(field))
    }
