"""The ``search=f=op:v[,f=op:v...]`` filter of the instances collection: parsing and matching."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from deyel_provider.emulator.records import FINER_UNITS

OPERATORS = frozenset({"eq", "neq", "like", "sw", "nsw", "ew", "new", "gt", "gte", "lt", "lte", "in", "nin"})
# A null field satisfies only the negated operators.
_NEGATIVE = frozenset({"neq", "nsw", "new", "nin"})
_RANGE_OPERATORS = frozenset({"eq", "gt", "gte", "lt", "lte"})
# A comma starts a new clause only when "field=op:" follows, so commas inside values survive.
_CLAUSE_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w/]*=[A-Za-z]+:)")
_CLAUSE = re.compile(r"\s*(?P<field>[A-Za-z_][\w/]*)=(?P<op>[A-Za-z]+):(?P<value>.*)", re.DOTALL)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

Getter = Callable[[str], Any]


class SearchError(ValueError):
    """A search expression the server refuses (answered with 400)."""


def _kind(field: str) -> str:
    name = field.rsplit("/", 1)[-1]
    if name.startswith("dt"):
        return "date"
    if name.startswith(("qt", "nu")):
        return "number"
    if name.startswith("cb"):
        return "bool"
    return "string"


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Any) -> Decimal | float:
    """A number exactly, as a database compares it (``007`` is ``7``; 2**53 + 1 is not 2**53); a NaN or an
    infinity stays a float (a Decimal NaN cannot be ordered)."""
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    return number if number.is_finite() else float(number)


def _record_value(kind: str, value: Any) -> Any:
    """The comparable form of a stored value, or None when it cannot be compared."""
    try:
        if kind == "date":
            return int(str(value))
        if kind == "number":
            return _number(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    if kind == "bool":
        return _as_text(value).lower()
    return _as_text(value)


@dataclass(frozen=True)
class Clause:
    field: str
    op: str
    raw: str
    kind: str
    # The literal (or, for in/nin, the literals) in comparable form.
    value: Any

    def matches(self, stored: Any) -> bool:
        if stored is None:
            return self.op in _NEGATIVE
        if self.op in ("like", "sw", "nsw", "ew", "new"):
            text = _as_text(stored).lower()
            needle = self.raw.lower()
            if self.op == "like":
                return needle in text
            if self.op in ("sw", "nsw"):
                return text.startswith(needle) == (self.op == "sw")
            return text.endswith(needle) == (self.op == "ew")
        actual = _record_value(self.kind, stored)
        if actual is None:
            return self.op in _NEGATIVE
        return self.compare(actual)

    def compare(self, actual: Any) -> bool:
        """Whether a stored value in comparable form (see ``_record_value``) satisfies the clause."""
        op = self.op
        if op == "eq":
            return bool(actual == self.value)
        if op == "neq":
            return bool(actual != self.value)
        if op == "in":
            return actual in self.value
        if op == "nin":
            return actual not in self.value
        if op == "gt":
            return bool(actual > self.value)
        if op == "gte":
            return bool(actual >= self.value)
        if op == "lt":
            return bool(actual < self.value)
        return bool(actual <= self.value)


@dataclass(frozen=True)
class Search:
    clauses: tuple[Clause, ...]

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(clause.field.split("/", 1)[0] for clause in self.clauses)

    @functools.cached_property
    def stamps_only(self) -> bool:
        """Whether every clause (at least one) is a range of dtLastUpdate, so ``matches_stamp`` decides."""
        return bool(self.clauses) and all(
            c.field == "dtLastUpdate" and c.op in _RANGE_OPERATORS for c in self.clauses
        )

    def matches_stamp(self, stored: Any) -> bool:
        """``matches`` of a search that ``stamps_only``, given the instance's dtLastUpdate: what a listing
        asks of every instance changed through the API, without a getter and a lookup per clause."""
        actual = None if stored is None else _record_value("date", stored)
        if actual is None:
            return False  # a null or unreadable value satisfies no range
        for clause in self.clauses:
            if not clause.compare(actual):
                return False
        return True

    def matches(self, get: Getter) -> bool:
        for clause in self.clauses:
            grid, _, column = clause.field.partition("/")
            if not column:
                if not clause.matches(get(grid)):
                    return False
                continue
            # A grid column matches when any row does; a grid with no rows is a null value.
            rows = get(grid) or []
            cells = [row.get(clause.field, row.get(column)) for row in rows if isinstance(row, dict)]
            if not any(clause.matches(cell) for cell in cells or [None]):
                return False
        return True

    def updated_bounds(self) -> tuple[int, int, bool] | None:
        """Inclusive (low, high) epoch-ms bounds of the dtLastUpdate range clauses, and whether those clauses
        are the whole search; None when no clause bounds dtLastUpdate."""
        ranged = [c for c in self.clauses if c.field == "dtLastUpdate" and c.op in _RANGE_OPERATORS]
        if not ranged:
            return None
        low, high = -(2**63), 2**63 - 1
        for c in ranged:
            v = c.value
            if c.op in ("eq", "gte"):
                low = max(low, v)
            if c.op in ("eq", "lte"):
                high = min(high, v)
            if c.op == "gt":
                low = max(low, v + 1)
            if c.op == "lt":
                high = min(high, v - 1)
        return low, high, len(ranged) == len(self.clauses)


def _parse_date(raw: str, date_format: str) -> int:
    raw = raw.strip()
    if date_format == "epoch_ms":
        return int(raw)
    parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // _ONE_MS


def _literal(kind: str, raw: str, field: str, date_format: str, scale: float = 1) -> Any:
    try:
        if kind == "date":
            return _parse_date(raw, date_format) * (scale if date_format == "epoch_ms" else 1)
        if kind == "number":
            return _number(raw)
    except ValueError:
        expected = "epoch milliseconds" if date_format == "epoch_ms" else "an ISO 8601 date"
        expected = expected if kind == "date" else "a number"
        raise SearchError(f"Invalid value '{raw}' for field '{field}': expected {expected}") from None
    return raw.lower() if kind == "bool" else raw


def parse_search(
    text: str,
    *,
    in_separator: str,
    date_format: str,
    known_fields: Collection[str] | None = None,
    updated_unit: str = "ms",
) -> Search:
    """Parse a search expression; ``known_fields`` (top-level names) makes unknown fields an error.

    ``updated_unit`` ``s``: an epoch literal of dtLastUpdate counts seconds, as a server storing seconds
    compares it (a millisecond bound then lies 50,000 years ahead)."""
    if not text.strip():
        return Search(clauses=())
    clauses = []
    for part in _CLAUSE_SPLIT.split(text):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            raise SearchError(f"Malformed search clause '{part}': expected field=operator:value")
        field, op, raw = match["field"], match["op"].lower(), match["value"]
        if op not in OPERATORS:
            raise SearchError(f"Unknown search operator '{match['op']}' for field '{field}'")
        if known_fields is not None and field.split("/", 1)[0] not in known_fields:
            raise SearchError(f"Unknown field '{field}' in search")
        kind = _kind(field)
        scale: float = 1
        if field == "dtLastUpdate" and updated_unit == "s":
            scale = 1000
        elif field == "dtLastUpdate" and updated_unit in FINER_UNITS:
            scale = 1 / FINER_UNITS[updated_unit]  # a literal in that unit, compared with stored ms
        value: Any
        if op in ("in", "nin"):
            value = frozenset(
                _literal(kind, item, field, date_format, scale) for item in raw.split(in_separator)
            )
        elif op in ("like", "sw", "nsw", "ew", "new"):
            value = raw
        else:
            value = _literal(kind, raw, field, date_format, scale)
        clauses.append(Clause(field=field, op=op, raw=raw, kind=kind, value=value))
    return Search(clauses=tuple(clauses))
