"""Parquet output (the ``[parquet]`` extra, pyarrow): typed columns, written a row group at a time.

Memory holds the row group being built (about ``row_group_bytes`` of Arrow data) whatever the total: a
page is converted a slice of rows at a time, each sized before it is built from its rows x the columns
(:data:`CELL_BYTES` each: an absent field is still a cell of every column), so a page of wide, sparse rows
is flushed in small row groups instead of becoming a multi-GiB Arrow table; the rewrite pass does the same.

Types (``schema`` names): ``string``, ``int64``, ``float64``, ``bool``, ``timestamp`` (milliseconds, UTC:
Deyel's dates are epoch milliseconds) and ``json`` (JSON text, Parquet's JSON logical type). A field's type is
declared in ``schema`` or inferred from the first page that holds the field (:func:`infer_type`). Grids and
objects are ``json``: a grid's row keys depend on the Deyel version (``lsAddress/dsCity`` or ``dsCity``), an
empty grid says nothing of them, and a file's struct type cannot change once written; JSON text keeps every
key, and every reader parses it (DuckDB reads the column as ``JSON``).

A value that does not fit its column: in a declared column it is a :class:`DeyelSchemaError` naming the
field, the record's position in the run and its id; an inferred column is widened (:func:`widened`) and the
row groups already written are rewritten to the new type at the end of the run. No value becomes a null.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from deyel_provider.api.instance_ids import DEFAULT_ID_FIELD, LINKS, instance_id
from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError, DeyelSchemaError
from deyel_provider.extract.formats.text import OpenFile, Part, RecordWriter, _encodable_json, _json
from deyel_provider.storage.compression import PARQUET_CODECS

TYPES: tuple[str, ...] = ("string", "int64", "float64", "bool", "timestamp", "json")
#: Arrow data per row group: memory holds about one (plus a page), readers get large enough groups.
DEFAULT_ROW_GROUP_BYTES = 8 * 2**20
#: Arrow bytes a cell costs before its text: 8 (int64, float64, timestamp values) and a validity bit; a
#: string's offset is 4. What a slice of rows is sized with before it is built.
CELL_BYTES = 9
#: The least a slice of a page is sized for: a small ``row_group_bytes`` still converts a page of narrow
#: rows at once (one row group per page), never row by row.
MIN_SLICE_BYTES = 64 * 2**10
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

Types = tuple[tuple[str, str], ...]


def pyarrow_modules() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, or a config error naming the extra to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DeyelConfigError(
            "format='parquet' needs pyarrow: install the provider's [parquet] extra "
            "(pip install 'airflow-provider-deyel[parquet]')"
        ) from None
    return pyarrow, pyarrow.parquet


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


class _Misfit(Exception):
    def __init__(self, index: int, value: Any) -> None:
        self.index = index
        self.value = value


class _Unwritable(_Misfit):
    """Text no Parquet string can hold (a lone surrogate): no type fits it."""


def text_of(value: Any) -> str:
    """A value as a string cell: text as is, booleans ``true``/``false``, the rest as JSON text."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return _encodable_json(value)
    return _json(value)


class _Converters:
    """Python values to Arrow arrays, one function per type; each raises :class:`_Misfit` at the first
    value its type cannot hold exactly."""

    def __init__(self, pa: Any) -> None:
        self.pa = pa
        self.arrow = {
            "string": pa.string(),
            "int64": pa.int64(),
            "float64": pa.float64(),
            "bool": pa.bool_(),
            "timestamp": pa.timestamp("ms", tz="UTC"),
            "json": pa.json_(),
        }
        self.by_type: dict[str, Callable[[list[Any], _Column], Any]] = {
            "string": self.string,
            "int64": self.int64,
            "float64": self.float64,
            "bool": self.bool,
            "timestamp": self.timestamp,
            "json": self.json,
        }

    def string(self, values: list[Any], column: _Column) -> Any:
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
                    raise _Unwritable(index, value) from None
            out.append(None if value is None else text_of(value))
        return self.pa.array(out, self.arrow["string"])

    def json(self, values: list[Any], column: _Column) -> Any:
        out = [None if value is None else _encodable_json(value) for value in values]
        return self.pa.array(out, self.arrow["json"])

    def int64(self, values: list[Any], column: _Column) -> Any:
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
                    raise _Misfit(index, value)
        largest = max((abs(value) for value in ints if value is not None), default=0)
        if largest > _INT64_MAX:
            index = next(i for i, value in enumerate(ints) if value is not None and not _in_int64(value))
            raise _Misfit(index, values[index])
        column.largest_int = max(column.largest_int, largest)
        return self.pa.array(ints, self.arrow["int64"])

    def float64(self, values: list[Any], column: _Column) -> Any:
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
                raise _Misfit(index, value)
        return self.pa.array(out, self.arrow["float64"])

    def bool(self, values: list[Any], column: _Column) -> Any:
        if set(map(type, values)) <= {bool, _NoneType}:
            return self.pa.array(values, self.arrow["bool"])
        out: list[bool | None] = []
        for index, value in enumerate(values):
            if value is None or type(value) is bool:
                out.append(value)
            elif value == "true" or value == "false":
                out.append(value == "true")
            else:
                raise _Misfit(index, value)
        return self.pa.array(out, self.arrow["bool"])

    def timestamp(self, values: list[Any], column: _Column) -> Any:
        out: list[int | None] = []
        for index, value in enumerate(values):
            kind = type(value)
            if value is None:
                out.append(None)
                continue
            number = int_text(value) if kind is str else value if kind is int else None
            if number is None or not _in_timestamp(number):
                raise _Misfit(index, value)
            out.append(number)
        return self.pa.array(out, self.arrow["timestamp"])


@dataclass
class _Column:
    name: str
    type: str | None  # None: declared in fields, type not known until the first page
    declared: bool = False
    #: The largest absolute integer written so far (int64 columns): whether a float64 still holds them all.
    largest_int: int = 0


class ParquetWriter(RecordWriter):
    """Parquet files with typed columns, one row group per ``row_group_bytes`` of Arrow data.

    Columns: ``fields`` in order, else the declared ``schema`` fields, then the others in first-seen order.
    A schema change (a widened type, a new field) re-types the row group being built in memory, ends the
    current file's segment when row groups were written to it already, and marks the parts written before
    for :meth:`rewrite` (one row group at a time).

    :param schema: declared types, ``{"dtLastUpdate": "timestamp", ...}``; other fields are inferred.
    :param compression: ``snappy``, ``zstd``, ``gzip`` or ``none``.
    :param row_group_bytes: Arrow bytes per row group (capped at ``max_file_bytes`` when splitting).
    :param max_columns: distinct columns the file may have (``DeyelSchemaError`` past it).
    :param redact: applied to the text of server values in error messages.
    :param id_field: where an instance's id is (the connection's ``id_field``): named in errors, and the
        first column of an empty run.
    """

    def __init__(
        self,
        open_file: OpenFile,
        fields: Sequence[str] | None = None,
        *,
        max_file_bytes: int | None = None,
        schema: Mapping[str, str] | None = None,
        compression: str | None = "snappy",
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        id_field: str = DEFAULT_ID_FIELD,
        **options: Any,
    ) -> None:
        super().__init__(open_file, fields, max_file_bytes=max_file_bytes, **options)
        self._id_field = id_field
        self.pa, self.pq = pyarrow_modules()
        compression = compression or "snappy"
        if compression not in PARQUET_CODECS:
            raise DeyelConfigError(
                f"Parquet compression must be one of {list(PARQUET_CODECS)}, got {compression!r}"
            )
        if row_group_bytes <= 0:
            raise DeyelConfigError(f"row_group_bytes must be > 0, got {row_group_bytes!r}")
        self.compression = compression
        declared = check_schema(schema, self.fields)
        names = self.fields if self.fields is not None else list(declared)
        self._columns = {name: _Column(name, declared.get(name), name in declared) for name in names}
        self._convert = _Converters(self.pa)
        self._row_group_bytes = min(row_group_bytes, max_file_bytes) if max_file_bytes else row_group_bytes
        self._offset = 0  # of the slice being converted, in its page (for the positions errors name)
        self._pending: list[Any] = []  # record batches of the row group being built, in self._pending_types
        self._pending_types: Types = ()
        self._pending_bytes = 0
        self._file: Any = None  # the pyarrow ParquetWriter of the current part's last file

    # -- the run's schema ---------------------------------------------------------------------------------

    @property
    def types(self) -> Types:
        """The columns and their types so far (the final schema once the run is written)."""
        known = tuple((c.name, c.type) for c in self._columns.values() if c.type is not None)
        return known or empty_run_columns(self._id_field)

    def arrow_schema(self, types: Types | None = None) -> Any:
        types = self.types if types is None else types
        return self.pa.schema([(name, self._convert.arrow[kind]) for name, kind in types])

    # -- writing ------------------------------------------------------------------------------------------

    def _write(self, part: Part, records: Sequence[dict[str, Any]]) -> None:
        if self.fields is None:
            columns = self._columns
            for name in self._new_fields(records, columns, len(columns)):
                columns[name] = _Column(name, None)
        for column in self._columns.values():
            if column.type is None:
                column.type = infer_type(column.name, (record.get(column.name) for record in records))
        step = self._rows_within(self._row_group_bytes)
        for start in range(0, len(records), step):
            self._offset = start
            self._add(part, records[start : start + step])
        self._offset = 0

    def _rows_within(self, budget: int, width: int | None = None) -> int:
        """Rows whose cells, at ``width`` columns (default: the columns so far), fit ``budget`` bytes (at
        least :data:`MIN_SLICE_BYTES`)."""
        width = len(self._columns) if width is None else width
        return max(1, max(budget, MIN_SLICE_BYTES) // (max(1, width) * CELL_BYTES))

    def _add(self, part: Part, records: Sequence[dict[str, Any]]) -> None:
        """Convert a slice of a page (sized by :meth:`_rows_within`) and add it to the row group."""
        arrays = [self._array(column, records) for column in self._columns.values()]
        types = self.types
        batch = self.pa.RecordBatch.from_arrays(arrays, schema=self.arrow_schema(types))
        if self._pending and self._pending_bytes + batch.nbytes > self._row_group_bytes:
            self._flush(part)  # row groups of at most row_group_bytes (unless one slice alone is more)
        if self._pending and self._pending_types != types:
            pending_rows = sum(b.num_rows for b in self._pending)
            if pending_rows > self._rows_within(self._row_group_bytes, len(types)):
                # Conformed to the new, wider schema the row group would outgrow its budget (a few
                # columns of many rows, then hundreds of new columns): written as it is instead.
                self._flush(part)
            else:
                self._pending = [self._conform(b, dict(self._pending_types), types) for b in self._pending]
                self._pending_bytes = sum(b.nbytes for b in self._pending)
        if self._file is not None and part.layout[-1] != types:
            # This file's schema is fixed: its row groups are rewritten at the end; the next ones go to a
            # new segment of the same part. Closed now, read back by name: hundreds of schema changes must
            # not hold hundreds of descriptors.
            self._file.close()
            self._file = None
            part.files[-1].close()
        self._pending.append(batch)
        self._pending_types = types
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= self._row_group_bytes:
            self._flush(part)

    def _array(self, column: _Column, records: Sequence[dict[str, Any]]) -> Any:
        name = column.name
        values = [record.get(name) for record in records]
        while True:
            assert column.type is not None
            try:
                return self._convert.by_type[column.type](values, column)
            except _Unwritable as misfit:
                position = self.records + self._offset + misfit.index + 1
                raise DeyelBadResponseError(
                    f"field {name!r} of record {position} holds a lone surrogate (legal in JSON, e.g. "
                    f'"\\ud800", but not writable as UTF-8 text): Parquet strings cannot hold it; extract '
                    f"this form with format='jsonl', which keeps it escaped"
                ) from None
            except _Misfit as misfit:
                if column.declared:
                    raise self._schema_error(column, records, misfit) from None
                column.type = widened(column.type, misfit.value, column.largest_int)

    def _schema_error(
        self, column: _Column, records: Sequence[dict[str, Any]], misfit: _Misfit
    ) -> DeyelSchemaError:
        position = self.records + self._offset + misfit.index + 1
        ident = instance_id(records[misfit.index], self._id_field)
        ident = None if ident is None else self._redact(ident)[:80]
        value = self._redact(_json(misfit.value) if not isinstance(misfit.value, str) else repr(misfit.value))
        shown = value if len(value) <= 60 else value[:57] + "..."
        which = f" ({self._id_field} {ident!r})" if ident is not None else ""
        return DeyelSchemaError(
            f"field {column.name!r} is declared {column.type!r} in schema, but record {position} of this run"
            f"{which} holds {shown}, which is not a {column.type}: declare the field as 'string' (or 'json') "
            f"in schema, or correct the value in Deyel",
            field=column.name,
            position=position,
            instance_id=ident,
        )

    def _flush(self, part: Part) -> None:
        if not self._pending:
            return
        table = self.pa.Table.from_batches(self._pending)
        self._pending, self._pending_bytes = [], 0
        if self._file is None:
            self._open_segment(part)
        self._file.write_table(table, row_group_size=max(1, table.num_rows))

    def _open_segment(self, part: Part) -> None:
        if len(part.layout) == len(part.files):  # the part's last file holds a finished segment
            part.files.append(self._open_file(part.number))
        types = self._pending_types or self.types
        part.layout.append(types)
        self._file = self.pq.ParquetWriter(
            part.files[-1].stream, self.arrow_schema(types), compression=self.compression
        )

    def _finish(self, part: Part) -> None:
        for column in self._columns.values():
            if column.type is None:  # declared in fields, never seen: typed by its prefix
                column.type = infer_type(column.name, ())
        self._flush(part)
        if self._file is None and not part.layout:
            self._open_segment(part)  # an empty run: a file with the schema and no row group
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- bringing earlier parts to the final schema --------------------------------------------------------

    def needs_rewrite(self, part: Part) -> bool:
        return len(part.layout) > 1 or part.layout[0] != self.types

    def rewrite(self, part: Part, sources: Iterable[IO[bytes]], sink: IO[bytes]) -> None:
        final = self.types
        with self.pq.ParquetWriter(sink, self.arrow_schema(final), compression=self.compression) as out:
            for source, types in zip(sources, part.layout, strict=True):
                parquet = self.pq.ParquetFile(source)
                # Slices sized for the final width: a row group of a few columns may hold many rows.
                step = self._rows_within(self._row_group_bytes, len(final))
                for index in range(parquet.num_row_groups):
                    group = parquet.read_row_group(index)
                    for start in range(0, group.num_rows, step):
                        table = self._conform(group.slice(start, step), dict(types), final)
                        out.write_table(table, row_group_size=max(1, table.num_rows))

    def _conform(self, data: Any, old: dict[str, str], final: Types) -> Any:
        """``data`` (a record batch or table of the ``old`` types) with the ``final`` columns and types."""
        arrays = []
        for name, kind in final:
            if name not in old:
                arrays.append(self.pa.nulls(data.num_rows, self._convert.arrow[kind]))
                continue
            array = data.column(name)
            if old[name] == kind:
                arrays.append(array)
            elif kind == "float64" and old[name] == "int64":
                arrays.append(array.cast(self.pa.float64()))
            elif kind == "string":
                if old[name] == "timestamp":
                    array = array.cast(self.pa.int64())  # back to the epoch ms Deyel sent
                texts = [None if value is None else text_of(value) for value in array.to_pylist()]
                arrays.append(self.pa.array(texts, self.pa.string()))
            else:  # pragma: no cover - widened() never returns another pair
                raise AssertionError(f"no widening from {old[name]} to {kind}")
        schema = self.arrow_schema(final)
        if isinstance(data, self.pa.RecordBatch):
            arrays = [a.combine_chunks() if isinstance(a, self.pa.ChunkedArray) else a for a in arrays]
            return self.pa.RecordBatch.from_arrays(arrays, schema=schema)
        return self.pa.Table.from_arrays(arrays, schema=schema)
