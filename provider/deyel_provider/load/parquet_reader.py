"""Reading a Parquet source: rows decoded in runs bounded by ``max_batch_bytes``, each row's size computed
from its column chunks read as dictionaries (as stored) before any value is decoded, and a column chunk that
decompresses like a bomb refused before it is read (see :mod:`deyel_provider.load.sources`)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import IO, Any

from deyel_provider.exceptions import DeyelConfigError, DeyelSourceError
from deyel_provider.load.records import Reader, Record

#: Rows decoded at most at once from a Parquet file (fewer when their worst case passes a batch's bytes).
_PARQUET_BATCH = 1000
#: Bytes counted per value besides its text (a Python object's cost, and a bound on many tiny values).
_VALUE_BYTES = 16
#: A Parquet column chunk decompressing to more than this many times its stored size (and past
#: ``max_batch_bytes``) is taken for a bomb; real columns compress a few times, at most tens.
_MAX_EXPANSION = 100


class ParquetReader(Reader):
    """The records of a Parquet file, one per row."""

    def read(self, raw: IO[bytes]) -> Iterator[Record]:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise DeyelConfigError(
                "reading a Parquet source needs pyarrow (pip install pyarrow); or give the records as "
                "JSON Lines or CSV"
            ) from None
        try:
            metadata = pq.ParquetFile(raw).metadata
            # Text columns read as dictionaries, as stored: a value repeated by the file's dictionary
            # (1 MB x 2000 rows in a few KB of file) is decoded only once its row's size is known.
            texts = [
                metadata.schema.column(i).path
                for i in range(metadata.num_columns)
                if metadata.schema.column(i).physical_type == "BYTE_ARRAY"
                and metadata.schema.column(i).logical_type.type != "DECIMAL"
            ]
            # Without Arrow's extension types (the JSON type restored from the file's Arrow schema would be
            # decoded whole, ignoring read_dictionary); a JSON value comes back as the same text.
            file = pq.ParquetFile(raw, metadata=metadata, read_dictionary=texts, **_no_extensions())
            number = 0
            # Fixed-width binary columns decode to their width per value whatever they are encoded as (the
            # schema's length, 0 for other columns).
            widths = [metadata.schema.column(i).length or 0 for i in range(metadata.num_columns)]
            for group in range(metadata.num_row_groups):
                rows = self._parquet_run(metadata.row_group(group), group, widths)
                for batch in file.iter_batches(batch_size=rows, row_groups=[group]):
                    # Decoded from dictionaries in Arrow (a dictionary's to_pylist is 3 times slower).
                    plain = _plain_schema(batch.schema)
                    for start, sizes in self._parquet_slices(batch, number):
                        run = pa.Table.from_batches([batch.slice(start, len(sizes))])
                        decoded = run.cast(plain).to_pylist()
                        del run  # each value is held once at a time, in Python
                        for row, size in zip(decoded, sizes, strict=True):
                            number += 1
                            yield Record(f"row {number}", self.values_of(row, f"row {number}"), size)
                        del decoded  # before the next run is decoded
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise DeyelSourceError(f"{self.name} is not a readable Parquet file: {exc}") from None

    def _parquet_run(self, group: Any, index: int, widths: list[int]) -> int:
        """Rows of row group ``index`` decoded at once: its metadata's worst case within ``max_batch_bytes``.

        A column chunk that decompresses past ``max_batch_bytes`` and :data:`_MAX_EXPANSION` times its stored
        size is refused here, before anything of it is read. A row of a nested column holds at most the
        chunk's values less one per other row."""
        worst = 0  # bytes one row can decode to in Arrow, all columns
        for c in range(group.num_columns):
            chunk = group.column(c)
            stored, size = chunk.total_compressed_size, chunk.total_uncompressed_size
            if size > max(self.max_batch_bytes, _MAX_EXPANSION * stored):
                raise DeyelSourceError(
                    f"{self.name}: column {chunk.path_in_schema} of row group {index} decompresses from "
                    f"{stored} to {size} bytes, past max_batch_bytes={self.max_batch_bytes} and more than "
                    f"{_MAX_EXPANSION} times its stored size: refused as a decompression bomb (raise "
                    f"max_batch_bytes if the file is genuine)"
                )
            values = max(1, chunk.num_values - group.num_rows + 1)
            worst += values * (_VALUE_BYTES + widths[c])
        return max(1, min(_PARQUET_BATCH, self.max_batch_bytes // max(1, worst)))

    def _parquet_slices(self, batch: Any, before: int) -> Iterator[tuple[int, list[int]]]:
        """Runs of the batch's rows (first row, each row's bytes) within ``max_batch_bytes``, every row
        checked against ``max_record_bytes`` before any is decoded; ``before``: rows of the file before."""
        sizes = sum((_row_bytes(column) for column in batch.columns), _zeros(batch.num_rows)).tolist()
        start, held = 0, 0
        for row, size in enumerate(sizes):
            if size > self.max_record_bytes:
                raise self._too_large(f"row {before + row + 1}", f"{size} bytes decoded")
            if row > start and held + size > self.max_batch_bytes:
                yield start, sizes[start:row]
                start, held = row, 0
            held += size
        if start < batch.num_rows:
            yield start, sizes[start:]


@cache
def _no_extensions() -> dict[str, bool]:
    """``arrow_extensions_enabled=False`` where pyarrow takes it (a keyword of ``ParquetFile`` since 19.0)."""
    import inspect

    import pyarrow.parquet as pq

    takes = "arrow_extensions_enabled" in inspect.signature(pq.ParquetFile).parameters
    return {"arrow_extensions_enabled": False} if takes else {}


def _plain_schema(schema: Any) -> Any:
    """``schema`` with each dictionary type (how text columns are read) replaced by its values' type."""
    import pyarrow as pa

    def plain(kind: Any) -> Any:
        if pa.types.is_dictionary(kind):
            return plain(kind.value_type)
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            field = kind.value_field
            make = pa.list_ if pa.types.is_list(kind) else pa.large_list
            return make(field.with_type(plain(field.type)))
        if pa.types.is_struct(kind):
            return pa.struct([field.with_type(plain(field.type)) for field in kind])
        return kind

    return pa.schema([field.with_type(plain(field.type)) for field in schema], metadata=schema.metadata)


def _zeros(rows: int) -> Any:
    import numpy

    return numpy.zeros(rows, dtype=numpy.int64)


def _row_bytes(array: Any) -> Any:
    """Each row's decoded bytes in an Arrow array (numpy int64): text bytes plus :data:`_VALUE_BYTES` per
    value, computed on dictionaries and offsets without decoding a value."""
    import numpy
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array.type, pa.BaseExtensionType):  # e.g. arrow.json, the grids our extraction writes
        array = array.storage
    kind = array.type
    if pa.types.is_dictionary(kind):
        dictionary = array.dictionary
        if isinstance(dictionary.type, pa.BaseExtensionType):
            dictionary = dictionary.storage
        taken = pc.take(pa.array(_value_bytes(dictionary)), array.indices).fill_null(0)
        return taken.to_numpy(zero_copy_only=False).astype(numpy.int64)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind):
        values = array.flatten()
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        per_row = numpy.bincount(parents, weights=_row_bytes(values), minlength=len(array))
        return per_row.astype(numpy.int64) + _VALUE_BYTES
    if pa.types.is_struct(kind):
        return sum((_row_bytes(field) for field in array.flatten()), _zeros(len(array))) + _VALUE_BYTES
    return _value_bytes(array)


def _value_bytes(array: Any) -> Any:
    """Each value's bytes in a flat Arrow array: its text's (or a fixed binary's width), plus 16."""
    import numpy
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_fixed_size_binary(kind):
        return _zeros(len(array)) + kind.byte_width + _VALUE_BYTES
    texts = (pa.types.is_string, pa.types.is_binary, pa.types.is_large_string, pa.types.is_large_binary)
    if any(is_text(kind) for is_text in texts):
        lengths = pc.binary_length(array).fill_null(0)
        return lengths.to_numpy(zero_copy_only=False).astype(numpy.int64) + _VALUE_BYTES
    return _zeros(len(array)) + _VALUE_BYTES
