"""Parquet column types: declared (``schema``), inferred from a page, widened when a value does not fit, and
the conversion of Python values to Arrow arrays that refuses any value its type cannot hold exactly.

Types (``schema`` names): ``string``, ``int64``, ``float64``, ``bool``, ``timestamp`` (milliseconds, UTC:
Deyel's dates are epoch milliseconds) and ``json`` (JSON text, Parquet's JSON logical type). Grids and
objects are ``json``: a grid's row keys depend on the Deyel version, an empty grid says nothing of them, and
a file's struct type cannot change once written; JSON text keeps every key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from deyel_provider.api.instance_ids import DEFAULT_ID_FIELD, LINKS
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.formats.base import (
    encodable_json,
    json_line,
    json_text,
    packed_floats_written_otherwise,
)

TYPES: tuple[str, ...] = ("string", "int64", "float64", "bool", "timestamp", "json")
#: Columns of an empty run's file when nothing declares any: every Deyel instance has these two (the id under
#: the connection's ``id_field``, see :func:`empty_run_columns`).
EMPTY_RUN_COLUMNS: tuple[tuple[str, str], ...] = (("idObjectValue", "string"), ("dtLastUpdate", "timestamp"))


def empty_run_columns(id_field: str = DEFAULT_ID_FIELD) -> tuple[tuple[str, str], ...]:
    """An empty run's columns on a server whose listings hold the id under ``id_field``."""
    first = ("links", "json") if id_field == LINKS else (id_field, "string")
    return (first, ("dtLastUpdate", "timestamp"))


#: The type a field null in its whole first page takes, from its Hungarian prefix (Deyel's naming rule).
_NULL_FIELD_TYPES = {"dt": "timestamp", "cb": "bool", "qt": "int64", "nu": "float64", "ls": "json"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Integers a float64 holds exactly.
_EXACT_IN_FLOAT = 2**53
#: Epoch milliseconds of years 0001 to 9999: what readers (DuckDB, pandas) can read as a timestamp.
_TIMESTAMP_MIN, _TIMESTAMP_END = -62135596800000, 253402300800000
#: JSON's number grammar, ASCII digits only; linear (no nested repetition), on at most 64 characters.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_NoneType = type(None)
#: Canonical integer text (:func:`int_text`) of at most 15 digits: every epoch millisecond of years 0001-9999
#: has at most 15, and a cast of it to int64 cannot overflow. RE2 (pyarrow.compute): ``[0-9]`` is ASCII only,
#: ``$`` the end of the text.
_TIMESTAMP_TEXT = r"^(?:0|-?[1-9][0-9]{0,14})$"
#: Canonical integer text of at most 18 digits: within int64 whatever the digits.
_INT64_TEXT = r"^(?:0|-?[1-9][0-9]{0,17})$"
_json_cell = msgspec.json.Encoder().encode
_msgpack_cells = msgspec.msgpack.Encoder().encode

Types = tuple[tuple[str, str], ...]


def check_schema(schema: Mapping[str, str] | None, fields: Sequence[str] | None = None) -> dict[str, str]:
    """The declared types, or a config error naming the entry to fix."""
    if schema is None:
        return {}
    if not isinstance(schema, Mapping):
        raise DeyelConfigError(
            "schema must map field names to types, e.g. {'qtEmployee': 'int64'}, "
            f"got {type(schema).__name__}"
        )
    for name, kind in schema.items():
        if not isinstance(name, str) or not name:
            raise DeyelConfigError(f"schema keys are field names (non-empty text), got {name!r}")
        if kind not in TYPES:
            raise DeyelConfigError(f"schema[{name!r}] = {kind!r} is not a type; use one of {list(TYPES)}")
    if fields is not None:
        missing = [name for name in schema if name not in fields]
        if missing:
            raise DeyelConfigError(f"schema declares {missing}, which are not in fields; add them to fields")
    return dict(schema)


def hungarian_prefix(name: str) -> str:
    """Deyel's type prefix of a field identifier (``dt`` of ``dtLastUpdate``), or ``""``."""
    if (
        len(name) > 2
        and name[:2].isascii()
        and name[:2].isalpha()
        and name[:2].islower()
        and name[2].isupper()
    ):
        return name[:2]
    return ""


def int_text(value: str) -> int | None:
    """The integer a canonical decimal text stands for (``"1540782000000"``, ``"-5"``), else None.

    Canonical (no sign, space, underscore, leading zero or non-ASCII digit) so that the text written back for
    the number, where a column widens to ``string``, is the text Deyel sent.
    """
    if not 0 < len(value) <= 20:
        return None
    digits = value[1:] if value[0] == "-" else value
    if not digits or not digits.isascii() or not digits.isdigit() or (digits[0] == "0" and value != "0"):
        return None
    return int(value)


def float_text(value: str) -> float | None:
    """The number a JSON number text stands for (Deyel 8.0 sends numbers as text), else None."""
    if len(value) > 64 or not _NUMBER.fullmatch(value):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    if "." not in value and "e" not in value and "E" not in value and not exact_in_float(int(value)):
        return None  # integer text a float64 would round: as a native integer would be
    return number


def exact_in_float(value: int) -> bool:
    """Whether a float64 holds the integer ``value`` exactly (past 2**53 only some do)."""
    try:
        return abs(value) <= _EXACT_IN_FLOAT or float(value) == value
    except OverflowError:  # beyond float64's range altogether
        return False


def _in_int64(value: int) -> bool:
    return _INT64_MIN <= value <= _INT64_MAX


def _in_timestamp(value: int) -> bool:
    return _TIMESTAMP_MIN <= value < _TIMESTAMP_END


def infer_type(name: str, values: Iterable[Any]) -> str:
    """A field's type from its values in the first page that holds it.

    - all null: from the prefix (``dt`` timestamp, ``cb`` bool, ``qt`` int64, ``nu`` float64, ``ls`` json),
      else string;
    - any grid or object: json; all booleans: bool;
    - numbers: integers int64 (``dt``: timestamp), with fractions float64;
    - text (Deyel 8.0 sends every value as text): ``dt`` with integer text timestamp, ``qt``/``nu`` with
      numbers int64 or float64, ``cb`` with ``true``/``false`` bool; any other text stays string (codes such
      as ``"00123"`` keep their zeros);
    - anything else (mixed kinds, integers beyond 64 bits, integers a float64 would round beside fractions,
      ``dt`` epoch milliseconds outside the years 0001-9999): string.
    """
    present = [value for value in values if value is not None]
    prefix = hungarian_prefix(name)
    if not present:
        return _NULL_FIELD_TYPES.get(prefix, "string")
    kinds = set(map(type, present))
    if list in kinds or dict in kinds:
        return "json"
    if kinds == {bool}:
        return "bool"
    if kinds <= {int, float}:
        ints = [value for value in present if type(value) is int]
        if kinds == {int}:
            if prefix == "dt":
                return "timestamp" if all(map(_in_timestamp, ints)) else "string"
            return "int64" if all(map(_in_int64, ints)) else "string"
        return "float64" if all(map(exact_in_float, ints)) else "string"
    if kinds == {str}:
        if prefix in ("dt", "qt", "nu"):
            numbers = [int_text(value) for value in present]
            fits = _in_timestamp if prefix == "dt" else _in_int64
            if all(number is not None and fits(number) for number in numbers):
                return "timestamp" if prefix == "dt" else "int64"
            if prefix != "dt" and all(float_text(value) is not None for value in present):
                return "float64"
        if prefix == "cb" and all(value in ("true", "false") for value in present):
            return "bool"
    return "string"


def widened(current: str, value: Any, largest_int: int) -> str:
    """The type an inferred column takes when ``value`` does not fit ``current``.

    int64 becomes float64 for a fractional number while every integer written so far is exact in a float64
    (within 2**53); anything else becomes string, earlier values rewritten as their text (numbers as JSON
    writes them, booleans ``true``/``false``, timestamps as the epoch milliseconds Deyel sent). string and
    json take any value: non-text values as their JSON text.
    """
    if current == "int64" and largest_int <= _EXACT_IN_FLOAT:
        if type(value) is float and math.isfinite(value):
            return "float64"
        if type(value) is str and float_text(value) is not None:
            return "float64"
    return "string"


@dataclass
class Column:
    name: str
    type: str | None  # None: declared in fields, type not known until the first page
    declared: bool = False
    #: The largest absolute integer written so far (int64 columns): whether a float64 still holds them all.
    largest_int: int = 0


class Misfit(Exception):
    def __init__(self, index: int, value: Any) -> None:
        self.index = index
        self.value = value


class Unwritable(Misfit):
    """Text no Parquet string can hold (a lone surrogate): no type fits it."""


def text_of(value: Any) -> str:
    """A value as a string cell: text as is, booleans ``true``/``false``, the rest as JSON text."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return encodable_json(value)
    return json_text(value)


class Converters:
    """Python values to Arrow arrays, one function per type; each raises :class:`Misfit` at the first
    value its type cannot hold exactly."""

    def __init__(self, pa: Any) -> None:
        import pyarrow.compute

        self.pa = pa
        self.pc = pyarrow.compute
        self.arrow = {
            "string": pa.string(),
            "int64": pa.int64(),
            "float64": pa.float64(),
            "bool": pa.bool_(),
            "timestamp": pa.timestamp("ms", tz="UTC"),
            "json": pa.json_(),
        }
        self.by_type: dict[str, Callable[[list[Any], Column], Any]] = {
            "string": self.string,
            "int64": self.int64,
            "float64": self.float64,
            "bool": self.bool,
            "timestamp": self.timestamp,
            "json": self.json,
        }

    def string(self, values: list[Any], column: Column) -> Any:
        if set(map(type, values)) <= {str, _NoneType}:
            try:
                return self.pa.array(values, self.arrow["string"])
            except UnicodeEncodeError:
                pass
        out = []
        for index, value in enumerate(values):
            if type(value) is str:
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise Unwritable(index, value) from None
            out.append(None if value is None else text_of(value))
        return self.pa.array(out, self.arrow["string"])

    def json(self, values: list[Any], column: Column) -> Any:
        cells = _json_cells(values)
        if cells is None:  # a float msgspec writes otherwise, a lone surrogate...: each cell on its own
            cells = [None if value is None else _json_text_cell(value) for value in values]
        return self.pa.array(cells, self.arrow["json"])

    def int64(self, values: list[Any], column: Column) -> Any:
        kinds = set(map(type, values))
        if kinds <= {int, _NoneType}:
            try:
                array = self.pa.array(values, self.arrow["int64"])
            except OverflowError:
                pass  # an integer past int64: found below
            else:
                column.largest_int = max(column.largest_int, self._largest(array))
                return array
        elif kinds <= {str, _NoneType}:
            array = self._int_texts(values, _INT64_TEXT)
            if array is not None:
                column.largest_int = max(column.largest_int, self._largest(array))
                return array
        return self._int64_values(values, column)

    def _largest(self, array: Any) -> int:
        """The largest absolute value of an int64 array (0 if it has none)."""
        least, most = self.pc.min_max(array).values()
        return max(abs(least.as_py() or 0), abs(most.as_py() or 0))

    def _int_texts(self, values: list[Any], pattern: str) -> Any:
        """int64 array of text cells (and nulls) all matching ``pattern`` (canonical integer text short enough
        for int64: what :func:`int_text` reads), else None."""
        try:
            texts = self.pa.array(values, self.arrow["string"])
        except UnicodeEncodeError:
            return None
        if not self.pc.all(self.pc.match_substring_regex(texts, pattern), min_count=0).as_py():
            return None
        return texts.cast(self.arrow["int64"])

    def _int64_values(self, values: list[Any], column: Column) -> Any:
        """int64 cells one value at a time: :class:`Misfit` at the first value that is not one."""
        if set(map(type, values)) <= {int, _NoneType}:
            ints = values
        else:
            ints = []
            for index, value in enumerate(values):
                kind = type(value)
                if value is None or kind is int:
                    ints.append(value)
                elif kind is str and (number := int_text(value)) is not None:
                    ints.append(number)
                elif kind is float and value.is_integer() and abs(value) <= _EXACT_IN_FLOAT:
                    ints.append(int(value))
                else:
                    raise Misfit(index, value)
        for index, value in enumerate(ints):
            if value is not None and not _in_int64(value):
                raise Misfit(index, values[index])
        largest = max((abs(value) for value in ints if value is not None), default=0)
        column.largest_int = max(column.largest_int, largest)
        return self.pa.array(ints, self.arrow["int64"])

    def float64(self, values: list[Any], column: Column) -> Any:
        kinds = set(map(type, values))
        if kinds <= {float, _NoneType}:
            return self.pa.array(values, self.arrow["float64"])
        out: list[Any] = []
        for index, value in enumerate(values):
            kind = type(value)
            if value is None or kind is float:
                out.append(value)
            elif kind is int and exact_in_float(value):
                out.append(float(value))
            elif kind is str and (number := float_text(value)) is not None:
                out.append(number)
            else:
                raise Misfit(index, value)
        return self.pa.array(out, self.arrow["float64"])

    def bool(self, values: list[Any], column: Column) -> Any:
        if set(map(type, values)) <= {bool, _NoneType}:
            return self.pa.array(values, self.arrow["bool"])
        out: list[bool | None] = []
        for index, value in enumerate(values):
            if value is None or type(value) is bool:
                out.append(value)
            elif value == "true" or value == "false":
                out.append(value == "true")
            else:
                raise Misfit(index, value)
        return self.pa.array(out, self.arrow["bool"])

    def timestamp(self, values: list[Any], column: Column) -> Any:
        kinds = set(map(type, values))
        array = None
        if kinds <= {int, _NoneType}:
            try:
                array = self.pa.array(values, self.arrow["int64"])
            except OverflowError:
                pass  # an integer past int64: found below
        elif kinds <= {str, _NoneType}:
            array = self._int_texts(values, _TIMESTAMP_TEXT)
        if array is not None:
            least, most = self.pc.min_max(array).values()
            if least.as_py() is None or (_TIMESTAMP_MIN <= least.as_py() and most.as_py() < _TIMESTAMP_END):
                return array.cast(self.arrow["timestamp"])
        return self._timestamp_values(values)

    def _timestamp_values(self, values: list[Any]) -> Any:
        """Timestamp cells one value at a time: :class:`Misfit` at the first value that is not one."""
        out: list[int | None] = []
        for index, value in enumerate(values):
            kind = type(value)
            if value is None:
                out.append(None)
                continue
            number = int_text(value) if kind is str else value if kind is int else None
            if number is None or not _in_timestamp(number):
                raise Misfit(index, value)
            out.append(number)
        return self.pa.array(out, self.arrow["timestamp"])


def _json_cells(values: list[Any]) -> list[Any] | None:
    """The JSON text of each value (UTF-8 bytes; None stays None) in one msgspec call per value, where the
    bytes are ``json_text``'s (the rule of :func:`~deyel_provider.extract.formats.base.json_line`, checked
    over the whole column at once); None where a cell may differ: the caller takes each on its own."""
    try:
        if packed_floats_written_otherwise(_msgpack_cells(values)):
            return None
        cells: list[Any] = list(map(_json_cell, values))
    except (TypeError, ValueError, OverflowError, msgspec.MsgspecError, RecursionError):
        return None  # a lone surrogate, an integer past 64 bits, a type JSON has no form for, deep nesting
    if None in values:
        cells = [None if value is None else cell for value, cell in zip(values, cells, strict=True)]
    return cells


def _json_text_cell(value: Any) -> Any:
    """One JSON cell: msgspec's bytes where they are ``json_text``'s, else :func:`encodable_json`."""
    line = json_line(value)
    return encodable_json(value) if line is None else line
