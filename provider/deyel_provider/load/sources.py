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

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from deyel_provider.exceptions import DeyelConfigError, DeyelSourceError
from deyel_provider.load.csv_reader import CsvReader
from deyel_provider.load.jsonl_reader import JsonLinesReader
from deyel_provider.load.key_check import SEARCH_SEPARATOR, check_keys
from deyel_provider.load.parquet_reader import ParquetReader
from deyel_provider.load.records import Reader, Record
from deyel_provider.load.spec import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_RECORD_BYTES, SourceSpec
from deyel_provider.load.values import MAX_DEPTH
from deyel_provider.storage.paths import as_storage_path

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_RECORD_BYTES",
    "MAX_DEPTH",
    "SEARCH_SEPARATOR",
    "SOURCE_FORMATS",
    "Record",
    "Source",
    "check_keys",
]

SOURCE_FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_READERS: dict[str, type[Reader]] = {"jsonl": JsonLinesReader, "csv": CsvReader, "parquet": ParquetReader}


class Source:
    """Where the records come from; :meth:`records` reads them from the start each time it is called.

    :param source: a :class:`~deyel_provider.load.spec.SourceSpec`; or, for a script, a local path or URL
        (``s3://...``, ``file://...``), an ``ObjectStoragePath``, or a list of dicts (an XCom value, for small
        loads), with the options below.
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
        if isinstance(source, SourceSpec):
            spec = source
        else:
            spec = SourceSpec(source, format, conn_id, max_record_bytes, max_batch_bytes)
        source, format = spec.source, spec.source_format
        self.max_record_bytes = spec.max_record_bytes
        self.max_batch_bytes = spec.max_batch_bytes
        self._rows: Sequence[Any] | None = None
        self.path: ObjectStoragePath | None = None
        if isinstance(source, str) and source.lstrip()[:1] in ("[", "{"):
            raise DeyelSourceError(
                "source looks like a rendered list or dict, not a path: pass the task's output (an XComArg) "
                "itself, or render templates as native objects (the DAG's render_template_as_native_obj=True)"
            )
        if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
            self._rows, self.name, self.format = source, "the source list", "list"
            self._reader = Reader(self.name, self.max_record_bytes, self.max_batch_bytes)
            return
        if isinstance(source, Mapping) or source is None or isinstance(source, bytes):
            raise DeyelSourceError(
                f"source must be a path or URL of a JSON Lines, CSV or Parquet file, or a list of dicts; "
                f"got {type(source).__name__}"
            )
        try:
            self.path = as_storage_path(source, spec.source_conn_id)
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
        self._reader = _READERS[format](self.name, self.max_record_bytes, self.max_batch_bytes)

    def __repr__(self) -> str:
        return f"Source({self.name!r}, format={self.format!r})"

    def records(self) -> Iterator[Record]:
        """Every record, in order, with Deyel values; an unreadable one is a ``DeyelSourceError``."""
        if self._rows is not None:
            for number, row in enumerate(self._rows, 1):
                yield Record(f"record {number}", self._reader.values_of(row, f"record {number}"))
            return
        assert self.path is not None
        try:
            raw = self.path.open("rb")
        except FileNotFoundError:
            raise DeyelSourceError(f"source {self.name} does not exist") from None
        except (OSError, ValueError) as exc:
            raise DeyelSourceError(f"cannot open the source {self.name}: {exc}") from None
        with raw:
            yield from self._reader.read(raw)

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

    def header(self) -> list[str] | None:
        """A CSV file's columns (to check the key column before reading rows); None for other formats."""
        if not isinstance(self._reader, CsvReader) or self.path is None:
            return None
        try:
            with self.path.open("rb") as raw:
                return self._reader.header(raw)
        except FileNotFoundError:
            raise DeyelSourceError(f"source {self.name} does not exist") from None
