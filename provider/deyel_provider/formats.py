"""Output formats of an extraction: JSON Lines (one instance per line, as returned) and CSV.

Writers take a page at a time and write bytes to a binary file object, so memory holds one page whatever
the total. CSV columns are a declared ``fields`` list, or the union of the fields seen in first-seen order:
a field that first appears after the header was written widens the file in one streaming pass at the end.
"""

from __future__ import annotations

import csv
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import IO, Any

from deyel_provider.exceptions import DeyelConfigError

FORMATS: tuple[str, ...] = ("jsonl", "csv")


# One encoder for every record: json.dumps with options builds a new encoder per call.
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: None empty, booleans ``true``/``false``, grids and objects as JSON text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return _json(value)
    return value


class RecordWriter(ABC):
    """Writes pages of instances to ``sink`` and counts the bytes it wrote."""

    def __init__(self, sink: IO[bytes], fields: Sequence[str] | None = None) -> None:
        self.sink = sink
        self.fields = list(fields) if fields is not None else None
        self.bytes_written = 0

    def _emit(self, text: str) -> None:
        data = text.encode("utf-8")
        self.sink.write(data)
        self.bytes_written += len(data)

    @abstractmethod
    def write_page(self, records: Sequence[dict[str, Any]]) -> None: ...

    def finish(self) -> None:  # noqa: B027 - optional hook: only CSV has something left to write
        """Write anything still pending once the last page is in."""


class JsonLinesWriter(RecordWriter):
    """One instance per line, as the server returned it (or only ``fields``, in that order)."""

    def write_page(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        if self.fields is not None:
            fields = self.fields
            records = [{name: record.get(name) for name in fields} for record in records]
        self._emit("\n".join(map(_json, records)) + "\n")


class CsvWriter(RecordWriter):
    """A header row, then one row per instance; nested grids are JSON text in their cell."""

    def __init__(self, sink: IO[bytes], fields: Sequence[str] | None = None) -> None:
        super().__init__(sink, fields)
        self.columns: list[str] = list(self.fields or [])
        self._known = set(self.columns)
        self._header_written = 0  # number of columns in the header already written
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\n")

    @property
    def needs_widening(self) -> bool:
        """Fields appeared after the header was written: :func:`widen_csv` must rewrite the file."""
        return len(self.columns) > self._header_written

    def write_page(self, records: Sequence[dict[str, Any]]) -> None:
        if self.fields is None:
            for record in records:
                for name in record:
                    if name not in self._known:
                        self._known.add(name)
                        self.columns.append(name)
        if not self._header_written and (records or self.fields is not None):
            self._csv.writerow(self.columns)
            self._header_written = len(self.columns)
        columns = self.columns
        self._csv.writerows([csv_cell(record.get(name)) for name in columns] for record in records)
        self._flush()

    def finish(self) -> None:
        if not self._header_written and self.columns:
            self._csv.writerow(self.columns)
            self._header_written = len(self.columns)
            self._flush()

    def _flush(self) -> None:
        self._emit(self._buffer.getvalue())
        self._buffer.seek(0)
        self._buffer.truncate()


def widen_csv(source: IO[bytes], sink: IO[bytes], columns: Sequence[str]) -> int:
    """Copy a CSV with the header ``columns``, padding shorter rows with empty cells; returns bytes written.

    Streams row by row (``csv`` handles newlines inside quoted cells), so memory stays small.
    """
    text = io.TextIOWrapper(source, encoding="utf-8", newline="")
    reader = csv.reader(text)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    written = 0

    def flush() -> None:
        nonlocal written
        data = buffer.getvalue().encode("utf-8")
        sink.write(data)
        written += len(data)
        buffer.seek(0)
        buffer.truncate()

    writer.writerow(columns)
    next(reader, None)  # the old, narrower header
    width = len(columns)
    for n, row in enumerate(reader, 1):
        writer.writerow(row + [""] * (width - len(row)))
        if n % 1000 == 0:
            flush()
    flush()
    text.detach()  # the caller owns (and closes) the source
    return written


def make_writer(fmt: str, sink: IO[bytes], fields: Iterable[str] | None = None) -> RecordWriter:
    """The writer of format ``fmt`` (``jsonl`` or ``csv``)."""
    field_list = list(fields) if fields is not None else None
    if fmt == "jsonl":
        return JsonLinesWriter(sink, field_list)
    if fmt == "csv":
        return CsvWriter(sink, field_list)
    raise DeyelConfigError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
