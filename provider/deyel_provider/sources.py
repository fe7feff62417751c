"""The records of a load: a JSON Lines, CSV or Parquet file (a path or any ``ObjectStoragePath``), or a list
of dicts from XCom; read in chunks, so memory holds one chunk whatever the file's size.

Before anything is written, :func:`check_keys` reads the whole source once: every record has a key, no two
share one (a typed :class:`~deyel_provider.exceptions.DeyelSourceError` naming the lines otherwise). It keeps
8 bytes per record (a hash of its key) and sorts them in runs, so a source of millions of records is checked
in tens of MB; a hash that repeats is confirmed by comparing the keys themselves in a second pass.

Values become Deyel values as they are read (:mod:`deyel_provider.values`): CSV cells are typed by their
column's prefix; dates, decimals, NaNs, UUIDs and times from Parquet or Python become what Deyel stores, and
a value with no Deyel form (``bytes``, ``timedelta``) is a ``DeyelSourceError`` naming its record and field,
raised by :func:`check_keys`' pass, before any write.

A key must be expressible in Deyel's search grammar (``f=op:v[,f=op:v...]``, ``deyel-api.md``): a comma
separates filters and the grammar documents no escape, so a key holding one (``a,dsCompany=eq:b``) could
be searched as two filters, never found, and created again on every run. :func:`check_keys` refuses it.
``=`` and ``:`` inside a value are fine: a filter's value is everything after its ``op:``.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import json
import sys
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from deyel_provider.exceptions import DeyelConfigError, DeyelSourceError
from deyel_provider.key_types import KeyType, NotAKey, key_text, normalise, written_value
from deyel_provider.values import UnsupportedValue, csv_value, deyel_value

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

SOURCE_FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
#: Hashes sorted at once when looking for repeated keys (8 MB per run).
_RUN = 1 << 20
#: Repeated keys named in the error (the rest are counted).
_NAMED = 5
#: Rows decoded at once from a Parquet file.
_PARQUET_BATCH = 1000
#: What separates the filters of Deyel's ``search`` (``f=op:v,f=op:v``): a key holding it cannot be searched.
SEARCH_SEPARATOR = ","


@dataclass(frozen=True)
class Record:
    """One record of the source: where it is (``line 12``, ``record 3``), for messages, and its values."""

    where: str
    values: dict[str, Any]


class Source:
    """Where the records come from; :meth:`records` reads them from the start each time it is called.

    :param source: a local path or URL (``s3://...``, ``file://...``), an ``ObjectStoragePath``, or a list of
        dicts (an XCom value, for small loads).
    :param format: ``jsonl``, ``csv`` or ``parquet``; default: from the file's suffix.
    :param conn_id: the object store's Airflow connection, if it needs one.
    """

    def __init__(self, source: Any, *, format: str | None = None, conn_id: str | None = None) -> None:
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
        from deyel_provider.extraction import as_storage_path

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
        """The records in lists of ``size``."""
        chunk: list[Record] = []
        for record in self.records():
            chunk.append(record)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _object(self, row: Any, where: str) -> dict[str, Any]:
        if not isinstance(row, Mapping) or not all(isinstance(k, str) for k in row):
            raise DeyelSourceError(
                f"{self.name}: {where} is {type(row).__name__}, not an object of field names to values"
            )
        values: dict[str, Any] = {}
        for field, value in row.items():
            try:
                values[field] = deyel_value(field, value)
            except UnsupportedValue as exc:
                raise DeyelSourceError(
                    f"{self.name}: {where} holds in {field!r} {exc} (a text, number, boolean, date or grid); "
                    f"convert it in the source, e.g. to text"
                ) from None
        return values

    def _jsonl(self, raw: IO[bytes]) -> Iterator[Record]:
        # readline, not iteration: Airflow 3.0's ObjectStoragePath file wrapper does not iterate.
        for number, line in enumerate(iter(raw.readline, b""), 1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as exc:
                detail = str(exc)[:120] if isinstance(exc, ValueError) else "nested too deeply"
                raise DeyelSourceError(f"{self.name}: {where} is not JSON ({detail})") from None
            yield Record(where, self._object(row, where))

    def _csv(self, raw: IO[bytes]) -> Iterator[Record]:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        limit = csv.field_size_limit()
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        try:
            reader = csv.DictReader(text)
            try:
                for row in reader:
                    where = f"line {reader.line_num}"
                    if None in row:
                        raise DeyelSourceError(f"{self.name}: {where} has more cells than the header")
                    yield Record(
                        where, {f: csv_value(f, cell) for f, cell in row.items() if cell is not None}
                    )
            except UnicodeDecodeError:
                raise DeyelSourceError(f"{self.name}: not UTF-8 text after line {reader.line_num}") from None
            except csv.Error as exc:
                raise DeyelSourceError(f"{self.name}: line {reader.line_num} is not CSV ({exc})") from None
        finally:
            csv.field_size_limit(limit)
            text.detach()

    def _parquet(self, raw: IO[bytes]) -> Iterator[Record]:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DeyelConfigError(
                "reading a Parquet source needs pyarrow (pip install pyarrow); or give the records as "
                "JSON Lines or CSV"
            ) from None
        try:
            batches = pq.ParquetFile(raw).iter_batches(batch_size=_PARQUET_BATCH)
            number = 0
            for batch in batches:
                for row in batch.to_pylist():
                    number += 1
                    yield Record(f"row {number}", self._object(row, f"row {number}"))
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise DeyelSourceError(f"{self.name} is not a readable Parquet file: {exc}") from None

    def header(self) -> list[str] | None:
        """A CSV file's columns (to check the key column before reading rows); None for other formats."""
        if self.format != "csv" or self.path is None:
            return None
        try:
            with self.path.open("rb") as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
                try:
                    return next(csv.reader(text), [])
                finally:
                    text.detach()
        except FileNotFoundError:
            raise DeyelSourceError(f"source {self.name} does not exist") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DeyelSourceError(f"{self.name}: the CSV header cannot be read ({exc})") from None


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

    Keys are compared as ``key_type`` (:func:`~deyel_provider.key_types.normalise`): for a number, ``7`` and
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
