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

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import IO, Any

from deyel_provider.api.instance_ids import DEFAULT_ID_FIELD, instance_id
from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError, DeyelSchemaError
from deyel_provider.extract.formats.base import OpenFile, Part, RecordWriter, json_text
from deyel_provider.extract.formats.parquet_types import (
    Column,
    Converters,
    Misfit,
    Types,
    Unwritable,
    check_schema,
    empty_run_columns,
    infer_type,
    text_of,
    widened,
)
from deyel_provider.storage.compression import PARQUET_CODECS

#: Arrow data per row group: memory holds about one (plus a page), readers get large enough groups.
DEFAULT_ROW_GROUP_BYTES = 8 * 2**20
#: Arrow bytes a cell costs before its text: 8 (int64, float64, timestamp values) and a validity bit; a
#: string's offset is 4. What a slice of rows is sized with before it is built.
CELL_BYTES = 9
#: The least a slice of a page is sized for: a small ``row_group_bytes`` still converts a page of narrow
#: rows at once (one row group per page), never row by row.
MIN_SLICE_BYTES = 64 * 2**10


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
        self._columns = {name: Column(name, declared.get(name), name in declared) for name in names}
        self._convert = Converters(self.pa)
        # pyarrow imports pandas (where installed) at its first array made from a list: made here, before
        # the read freezes the heap (read/collector.py), or the full collections of a whole read walk
        # pandas' objects.
        self.pa.array([], self.pa.string())
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

    def _write(self, part: Part, records: Sequence[dict[str, Any]], *, plain: bool = False) -> None:
        if self.fields is None and not all(map(frozenset(self._columns).issuperset, records)):
            columns = self._columns
            for name in self._new_fields(records, columns, len(columns)):
                columns[name] = Column(name, None)
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

    def _array(self, column: Column, records: Sequence[dict[str, Any]]) -> Any:
        name = column.name
        values = self._values(name, records)
        while True:
            assert column.type is not None
            try:
                return self._convert.by_type[column.type](values, column)
            except Unwritable as misfit:
                position = self.records + self._offset + misfit.index + 1
                raise DeyelBadResponseError(
                    f"field {name!r} of record {position} holds a lone surrogate (legal in JSON, e.g. "
                    f'"\\ud800", but not writable as UTF-8 text): Parquet strings cannot hold it; extract '
                    f"this form with format='jsonl', which keeps it escaped"
                ) from None
            except Misfit as misfit:
                if column.declared:
                    raise self._schema_error(column, records, misfit) from None
                column.type = widened(column.type, misfit.value, column.largest_int)

    @staticmethod
    def _values(name: str, records: Sequence[dict[str, Any]]) -> list[Any]:
        """Column ``name`` of ``records`` (None where a record lacks it)."""
        try:
            return list(map(itemgetter(name), records))  # every record has the field: at C speed
        except KeyError:
            return [record.get(name) for record in records]

    def _schema_error(
        self, column: Column, records: Sequence[dict[str, Any]], misfit: Misfit
    ) -> DeyelSchemaError:
        position = self.records + self._offset + misfit.index + 1
        ident = instance_id(records[misfit.index], self._id_field)
        ident = None if ident is None else self._redact(ident)[:80]
        value = self._redact(
            json_text(misfit.value) if not isinstance(misfit.value, str) else repr(misfit.value)
        )
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
