"""The records of a load: a JSON Lines, CSV or Parquet file (a path or any ``ObjectStoragePath``), or a list
of dicts from XCom; read in chunks, so memory holds one chunk whatever the file's size.

Before anything is written, :func:`check_keys` reads the whole source once: every record has a key, no two
share one (a typed :class:`~deyel_provider.exceptions.DeyelSourceError` naming the lines otherwise). It keeps
8 bytes per record (a hash of its key) and sorts them in runs, so a source of millions of records is checked
in tens of MB; a hash that repeats is confirmed by comparing the keys themselves in a second pass.

Values become Deyel values as they are read (:mod:`deyel_provider.load.values`): CSV cells are typed by their
column's prefix; dates, decimals, NaNs, UUIDs and times from Parquet or Python become what Deyel stores, and
a value with no Deyel form (``bytes``, ``timedelta``) is a ``DeyelSourceError`` naming its record and field,
raised by :func:`check_keys`' pass, before any write.

A key must be expressible in Deyel's search grammar (``f=op:v[,f=op:v...]``, ``deyel-api.md``): a comma
separates filters and the grammar documents no escape, so a key holding one (``a,dsCompany=eq:b``) could
be searched as two filters, never found, and created again on every run. :func:`check_keys` refuses it.
``=`` and ``:`` inside a value are fine: a filter's value is everything after its ``op:``.

Bounded whatever the file holds (a hostile or broken source must not exhaust the worker's memory):

- **A record** is at most ``max_record_bytes`` (default 1 MiB): a JSON Lines line, a CSV record's lines
  (bytes as stored), a Parquet row's decoded values (text bytes plus 16 per value). Lines are read with that
  limit (``readline(limit)``), so a longer one is refused having held at most the limit; a Parquet row's size
  is computed from its column chunks read as dictionaries (as stored), before any value is decoded.
- **A batch** (the records one search matches, :meth:`Source.chunks`) ends before it would pass
  ``max_batch_bytes`` (default 16 MiB, the connection's default ``max_response_bytes``: the search of a batch
  answers with those records' instances in one body). Parquet is decoded in runs of rows bounded by it too.
- **A Parquet column chunk** that the file's metadata says decompresses past ``max_batch_bytes`` and more than
  100 times its stored size is refused before it is read (a decompression bomb).
- **Nesting**: a value nested deeper than :data:`MAX_DEPTH` (64) levels is refused (Deyel's deepest value is a
  grid of rows of scalars: 2 levels), never a ``RecursionError``.

Each is a :class:`~deyel_provider.exceptions.DeyelSourceError` naming the line or row, the bound and the
option, raised by :func:`check_keys` before any request.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import IO, TYPE_CHECKING, Any

from deyel_provider.exceptions import DeyelConfigError, DeyelSourceError
from deyel_provider.load.key_types import KeyType, NotAKey, key_text, normalise, written_value
from deyel_provider.load.values import MAX_DEPTH, TooDeep, UnsupportedValue, csv_value, deyel_value
from deyel_provider.storage.paths import as_storage_path

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

SOURCE_FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
#: Hashes sorted at once when looking for repeated keys (8 MB per run).
_RUN = 1 << 20
#: Repeated keys named in the error (the rest are counted).
_NAMED = 5
#: Rows decoded at most at once from a Parquet file (fewer when their worst case passes a batch's bytes).
_PARQUET_BATCH = 1000
#: Bytes counted per value besides its text (a Python object's cost, and a bound on many tiny values).
_VALUE_BYTES = 16
#: A Parquet column chunk decompressing to more than this many times its stored size (and past
#: ``max_batch_bytes``) is taken for a bomb; real columns compress a few times, at most tens.
_MAX_EXPANSION = 100
#: Default ``max_record_bytes``: far above a form instance's fields (a few KB; a grid of hundreds of rows).
DEFAULT_MAX_RECORD_BYTES = 1 << 20
#: Default ``max_batch_bytes``: the default ``max_response_bytes``, which a batch's search answer must fit.
DEFAULT_MAX_BATCH_BYTES = 16 << 20
#: What separates the filters of Deyel's ``search`` (``f=op:v,f=op:v``): a key holding it cannot be searched.
SEARCH_SEPARATOR = ","


@dataclass(frozen=True)
class Record:
    """One record of the source: where it is (``line 12``, ``record 3``), for messages, and its values."""

    where: str
    values: dict[str, Any]
    #: Bytes it took in the source (0 for a list's records, already in memory).
    size: int = 0


class Source:
    """Where the records come from; :meth:`records` reads them from the start each time it is called.

    :param source: a local path or URL (``s3://...``, ``file://...``), an ``ObjectStoragePath``, or a list of
        dicts (an XCom value, for small loads).
    :param format: ``jsonl``, ``csv`` or ``parquet``; default: from the file's suffix.
    :param conn_id: the object store's Airflow connection, if it needs one.
    :param max_record_bytes: the most bytes of one record (see the module docstring).
    :param max_batch_bytes: the most bytes of the records of one batch, and of a Parquet run of rows.
    """

    def __init__(
        self,
        source: Any,
        *,
        format: str | None = None,
        conn_id: str | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        for name, value in (("max_record_bytes", max_record_bytes), ("max_batch_bytes", max_batch_bytes)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1 << 40:
                raise DeyelConfigError(f"{name} must be a whole number of bytes, 1 to 2**40; got {value!r}")
        if max_record_bytes > max_batch_bytes:
            raise DeyelConfigError(
                f"max_record_bytes ({max_record_bytes}) must not pass max_batch_bytes ({max_batch_bytes}): "
                f"a batch holds at least one record"
            )
        self.max_record_bytes = max_record_bytes
        self.max_batch_bytes = max_batch_bytes
        self._rows: Sequence[Any] | None = None
        self.path: ObjectStoragePath | None = None
        if isinstance(source, str) and source.lstrip()[:1] in ("[", "{"):
            raise DeyelSourceError(
                "source looks like a rendered list or dict, not a path: pass the task's output (an XComArg) "
                "itself, or render templates as native objects (the DAG's render_template_as_native_obj=True)"
            )
        if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
            self._rows, self.name, self.format = source, "the source list", "list"
            return
        if isinstance(source, Mapping) or source is None or isinstance(source, bytes):
            raise DeyelSourceError(
                f"source must be a path or URL of a JSON Lines, CSV or Parquet file, or a list of dicts; "
                f"got {type(source).__name__}"
            )
        try:
            self.path = as_storage_path(source, conn_id)
        except DeyelConfigError as exc:
            raise DeyelSourceError(
                f"source must name a file (a path or URL ending in its name, e.g. .../customers.jsonl), "
                f"got {str(source)!r}"
            ) from exc
        self.name = str(self.path)
        if format is None:
            suffix = self.path.suffix.lower()
            if suffix not in _SUFFIXES:
                raise DeyelConfigError(
                    f"cannot tell the format of {self.name!r} from its suffix: pass source_format, one of "
                    f"{list(SOURCE_FORMATS)}"
                )
            format = _SUFFIXES[suffix]
        if format not in SOURCE_FORMATS:
            raise DeyelConfigError(f"source_format must be one of {list(SOURCE_FORMATS)}, got {format!r}")
        self.format = format

    def __repr__(self) -> str:
        return f"Source({self.name!r}, format={self.format!r})"

    def records(self) -> Iterator[Record]:
        """Every record, in order, with Deyel values; an unreadable one is a ``DeyelSourceError``."""
        if self._rows is not None:
            for number, row in enumerate(self._rows, 1):
                yield Record(f"record {number}", self._object(row, f"record {number}"))
            return
        assert self.path is not None
        try:
            raw = self.path.open("rb")
        except FileNotFoundError:
            raise DeyelSourceError(f"source {self.name} does not exist") from None
        except (OSError, ValueError) as exc:
            raise DeyelSourceError(f"cannot open the source {self.name}: {exc}") from None
        with raw:
            if self.format == "jsonl":
                yield from self._jsonl(raw)
            elif self.format == "csv":
                yield from self._csv(raw)
            else:
                yield from self._parquet(raw)

    def chunks(self, size: int) -> Iterator[list[Record]]:
        """The records in lists of ``size``, each ended early rather than pass ``max_batch_bytes``."""
        chunk: list[Record] = []
        held = 0
        for record in self.records():
            if chunk and held + record.size > self.max_batch_bytes:
                yield chunk
                chunk, held = [], 0
            chunk.append(record)
            held += record.size
            if len(chunk) >= size:
                yield chunk
                chunk, held = [], 0
        if chunk:
            yield chunk

    def _too_large(self, where: str, size: str) -> DeyelSourceError:
        return DeyelSourceError(
            f"{self.name}: {where} is {size}, past max_record_bytes={self.max_record_bytes}: split the "
            f"record in the source, or raise max_record_bytes if a record of Deyel's can really be that large"
        )

    def _line(self, readline: Callable[[int], bytes], number: int) -> bytes:
        """The next line (its ending removed; ``b""`` at the end), read holding at most the record's limit."""
        line = readline(self.max_record_bytes + 2)
        if not line:
            return line
        body = line.rstrip(b"\r\n")
        if len(body) > self.max_record_bytes:
            raise self._too_large(f"line {number}", f"more than {self.max_record_bytes} bytes long")
        return body or b"\n"  # an empty line is not the end

    def _object(self, row: Any, where: str) -> dict[str, Any]:
        if not isinstance(row, Mapping) or not all(isinstance(k, str) for k in row):
            raise DeyelSourceError(
                f"{self.name}: {where} is {type(row).__name__}, not an object of field names to values"
            )
        values: dict[str, Any] = {}
        for field, value in row.items():
            try:
                values[field] = deyel_value(field, value)  # refuses nesting past MAX_DEPTH as it goes
            except TooDeep:
                raise self._too_deep(where) from None
            except UnsupportedValue as exc:
                raise DeyelSourceError(
                    f"{self.name}: {where} holds in {field!r} {exc} (a text, number, boolean, date or grid); "
                    f"convert it in the source, e.g. to text"
                ) from None
        return values

    def _too_deep(self, where: str) -> DeyelSourceError:
        return DeyelSourceError(
            f"{self.name}: {where} holds a value nested deeper than {MAX_DEPTH} levels (a Deyel value is at "
            f"most a grid of rows: 2 levels); flatten it in the source"
        )

    def _jsonl(self, raw: IO[bytes]) -> Iterator[Record]:
        # readline, not iteration: Airflow 3.0's ObjectStoragePath file wrapper does not iterate. With a
        # limit: a line past max_record_bytes is refused having read only that much of it.
        number = 0
        readline = raw.readline  # once: Airflow's file wrapper finds it by __getattr__ on each access
        while line := self._line(readline, number + 1):
            number += 1
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                row = json.loads(line)
            except RecursionError:
                raise self._too_deep(where) from None
            except ValueError as exc:
                raise DeyelSourceError(f"{self.name}: {where} is not JSON ({str(exc)[:120]})") from None
            yield Record(where, self._object(row, where), len(line))

    def _csv_lines(self, raw: IO[bytes], held: list[int]) -> Iterator[str]:
        """The file's lines as text, for the ``csv`` reader; ``held[0]`` counts the bytes of the record being
        read (the caller zeroes it after each record), refused past ``max_record_bytes``."""
        number = 0
        readline = raw.readline  # once: Airflow's file wrapper finds it by __getattr__ on each access
        while line := readline(self.max_record_bytes + 2):
            number += 1
            held[0] += len(line)
            if held[0] > self.max_record_bytes:
                where = f"the record reaching line {number}"
                raise self._too_large(where, f"more than {self.max_record_bytes} bytes long")
            try:
                yield line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DeyelSourceError(f"{self.name}: line {number} is not UTF-8 text") from None

    def _csv_rows(self, raw: IO[bytes]) -> Iterator[tuple[list[str], int, int]]:
        """Each CSV record's cells, the line it ends on and its bytes.

        Lines come through :meth:`_csv_lines`, which bounds a record's bytes whatever ``csv`` allows. The
        ``csv`` module's own cell limit is process-wide (128 KiB by default), so it is raised to the record
        limit only for the duration of each read, never across a ``yield``: other code of the process does
        not see it changed."""
        held = [0]
        reader = csv.reader(self._csv_lines(raw, held))
        while True:
            limit = csv.field_size_limit(max(csv.field_size_limit(), self.max_record_bytes))
            try:
                cells = next(reader, None)
            except csv.Error as exc:
                raise DeyelSourceError(f"{self.name}: line {reader.line_num} is not CSV ({exc})") from None
            finally:
                csv.field_size_limit(limit)
            if cells is None:
                return
            yield cells, reader.line_num, held[0]
            held[0] = 0

    def _csv(self, raw: IO[bytes]) -> Iterator[Record]:
        rows = self._csv_rows(raw)
        header = next(rows, None)
        if header is None:
            return
        names = header[0]
        for cells, line, size in rows:
            if not cells:
                continue  # a blank line, as csv.DictReader skips it
            where = f"line {line}"
            if len(cells) > len(names):
                raise DeyelSourceError(f"{self.name}: {where} has more cells than the header")
            try:
                values = {f: csv_value(f, cell) for f, cell in zip(names, cells, strict=False)}
            except RecursionError:  # a grid cell's JSON
                raise self._too_deep(where) from None
            if _too_nested(values):
                raise self._too_deep(where)
            yield Record(where, values, size)

    def _parquet(self, raw: IO[bytes]) -> Iterator[Record]:
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
                            yield Record(f"row {number}", self._object(row, f"row {number}"), size)
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

    def header(self) -> list[str] | None:
        """A CSV file's columns (to check the key column before reading rows); None for other formats."""
        if self.format != "csv" or self.path is None:
            return None
        try:
            with self.path.open("rb") as raw:
                first = next(self._csv_rows(raw), None)
                return first[0] if first is not None else []
        except FileNotFoundError:
            raise DeyelSourceError(f"source {self.name} does not exist") from None


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


def _too_nested(record: Mapping[str, Any]) -> bool:
    """Whether a value of a CSV record (its grids' JSON) nests past :data:`MAX_DEPTH` levels (the record's
    object being the first); flat values cost one type check each."""
    nested = (value for value in record.values() if isinstance(value, dict | list | tuple))
    return any(_deeper_than(value, MAX_DEPTH - 1) for value in nested)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels below itself (level by level,
    without recursion; a flat record costs one pass over its values)."""
    level = [value]
    for _ in range(limit + 1):
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, Mapping) else item
            below.extend(child for child in children if isinstance(child, dict | list | tuple))
        if not below:
            return False
        level = below
    return True


def _key_hash(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _repeated(hashes: array[int]) -> set[int]:
    """The hashes that occur more than once: runs sorted separately, then merged."""
    runs = [array("Q", sorted(hashes[start : start + _RUN])) for start in range(0, len(hashes), _RUN)]
    repeated: set[int] = set()
    previous = None
    for value in heapq.merge(*runs):
        if value == previous:
            repeated.add(value)
        previous = value
    return repeated


def check_keys(source: Source, key: str, key_type: KeyType = "text") -> int:
    """Read the whole source once: every record has ``key`` and no two share a value; return their number.

    Keys are compared as ``key_type`` (:func:`~deyel_provider.load.key_types.normalise`): for a number, ``7``
    and
    ``"007"`` are one key, and a value that is not a number is an error naming its record.

    Raises :class:`DeyelSourceError` naming the records to fix (nothing has been written yet).
    """
    header = source.header()
    if header is not None and key not in header:
        raise DeyelSourceError(
            f"{source.name}: the header has no column {key!r} (the key); columns: {header[:20]}"
        )
    hashes: array[int] = array("Q")
    for record in source.records():
        text = _key_of(source, record, key, key_type)
        if SEARCH_SEPARATOR in text:
            raise DeyelSourceError(
                f"{source.name}: {record.where} has {text!r} in {key!r}, the key: a key holding "
                f"{SEARCH_SEPARATOR!r} cannot be searched (Deyel's search separates filters with it and "
                f"documents no escape), so its instance would never be found and be created again on every "
                f"run; change the key in the source or match on another field"
            )
        hashes.append(_key_hash(text))
    suspects = _repeated(hashes)
    count = len(hashes)
    del hashes
    if suspects:
        _name_duplicates(source, key, key_type, suspects)
    return count


def _key_of(source: Source, record: Record, key: str, key_type: KeyType) -> str:
    """The record's key as compared (its canonical text), or a :class:`DeyelSourceError` naming the record."""
    value = record.values.get(key)
    try:
        text = normalise(value, key_type)
        if text is not None:
            written_value(key, value, key_type)  # a key a create cannot send exactly: created every run
    except NotAKey as exc:
        raise DeyelSourceError(
            f"{source.name}: {record.where} has {str(value)[:80]!r} in {key!r}, the key, which is compared "
            f"as a number ({exc}); fix the value, or pass key_type='text' if the field holds text"
        ) from None
    if text is None:
        what = "has no" if value in (None, "") else f"has a {type(value).__name__} in"
        raise DeyelSourceError(
            f"{source.name}: {record.where} {what} {key!r}, the key: every record needs a text or number "
            f"there to be matched with an instance"
        )
    return text


def _name_duplicates(source: Source, key: str, key_type: KeyType, suspects: set[int]) -> None:
    places: dict[str, list[str]] = {}
    for record in source.records():
        text = _key_of(source, record, key, key_type)
        if _key_hash(text) in suspects:
            # The raw value too when it is written otherwise ('007' for the numeric key '7').
            raw = key_text(record.values.get(key))
            shown = record.where if raw == text else f"{record.where} ({str(raw)[:80]!r})"
            places.setdefault(text, []).append(shown)
    repeated = {text: where for text, where in places.items() if len(where) > 1}
    if not repeated:
        return  # 64-bit hashes that collide, keys that differ
    named = "; ".join(
        f"{text!r} at {', '.join(where[:3])}" for text, where in list(repeated.items())[:_NAMED]
    )
    more = f" and {len(repeated) - _NAMED} more" if len(repeated) > _NAMED else ""
    compared = " (compared as numbers: 7 and '007' are one key)" if key_type == "number" else ""
    raise DeyelSourceError(
        f"{source.name}: {len(repeated)} values of the key {key!r} appear in more than one record{compared} "
        f"({named}{more}): each key names one instance; remove or merge the repeated records"
    )
