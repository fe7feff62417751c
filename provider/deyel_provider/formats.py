r"""Output formats of an extraction: JSON Lines (one instance per line, as returned) and CSV.

Writers take a page at a time and write bytes to a binary file object, so memory holds one page whatever
the total. CSV columns are a declared ``fields`` list, or the union of the fields seen in first-seen order:
a field that first appears after the header was written widens the file in one streaming pass at the end.

What every standard reader (Python's ``csv``, pandas, DuckDB) reads back is the value written, for any JSON
value Deyel can send:

- JSON Lines is UTF-8 JSON, except for a record holding a lone surrogate (``"\ud800"`` is legal JSON but has
  no UTF-8 form): that record is written with ``\uXXXX`` escapes (ASCII), which Python's ``json`` decodes back
  to the same string (a warning is logged: DuckDB, whose strings are UTF-8, refuses such a line, and pandas
  reads the escape as an empty string).
- CSV cells are text: a cell containing a carriage return is quoted (Python's ``csv`` before 3.13 leaves it
  bare, and readers split the row there), cells of any size are read back by the widening pass, and a header
  starting with U+FEFF is quoted so that no reader takes it for a byte order mark. A lone surrogate in a field
  name or a text cell cannot be written to a UTF-8 CSV: that is a :class:`DeyelBadResponseError` naming the
  field (use JSON Lines for such data); inside a grid or object cell (JSON text) it is escaped as above.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import IO, Any

from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("jsonl", "csv")


# One encoder for every record: json.dumps with options builds a new encoder per call.
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# For the rare record a UTF-8 file cannot hold as is (a lone surrogate): \uXXXX escapes, still the same JSON.
_json_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

#: The widening pass reads back cells of any size (``csv``'s default limit is 128 KiB per cell).
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: None empty, booleans ``true``/``false``, grids and objects as JSON text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return _json(value)
    return value


def _encodable_json(value: Any) -> str:
    """JSON text of ``value`` that UTF-8 can hold: escaped to ASCII only when it must be."""
    text = _json(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _json_ascii(value)
    return text


class _CsvRows:
    """Renders rows as CSV text; every standard reader splits the text back into the same cells."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._minimal = csv.writer(self._buffer, lineterminator="\n")
        self._quote_all = csv.writer(self._buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def render(self, rows: Iterable[Sequence[Any]], *, header: bool = False) -> str:
        rows = rows if isinstance(rows, list) else list(rows)
        self._minimal.writerows(rows)
        text = self._take()
        if "\r" in text or (header and text.startswith("\ufeff")):
            # Rare: write again, quoting every cell of the rows that need it (a bare CR, a leading BOM).
            for row in rows:
                needs_quotes = header or any(isinstance(cell, str) and "\r" in cell for cell in row)
                (self._quote_all if needs_quotes else self._minimal).writerow(row)
            text = self._take()
        return text

    def _take(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text


class RecordWriter(ABC):
    """Writes pages of instances to ``sink`` and counts the bytes it wrote."""

    def __init__(self, sink: IO[bytes], fields: Sequence[str] | None = None) -> None:
        self.sink = sink
        self.fields = list(fields) if fields is not None else None
        self.bytes_written = 0

    def _write(self, data: bytes) -> None:
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
        try:
            data = ("\n".join(map(_json, records)) + "\n").encode("utf-8")
        except UnicodeEncodeError:
            data = ("\n".join(map(_encodable_json, records)) + "\n").encode("utf-8")
            log.warning(
                "A record holds a lone surrogate (a broken UTF-16 pair): written escaped (\\udXXX), as JSON "
                "allows; Python's json reads it back, DuckDB refuses the line, pandas reads it as ''"
            )
        self._write(data)


class CsvWriter(RecordWriter):
    """A header row, then one row per instance; nested grids are JSON text in their cell."""

    def __init__(self, sink: IO[bytes], fields: Sequence[str] | None = None) -> None:
        super().__init__(sink, fields)
        self.columns: list[str] = list(self.fields or [])
        self._known = set(self.columns)
        self._header_written = 0  # number of columns in the header already written
        self._rows = _CsvRows()

    @property
    def needs_widening(self) -> bool:
        """Fields appeared after the header was written: :func:`widen_csv` must rewrite the file."""
        return len(self.columns) > self._header_written

    def write_page(self, records: Sequence[dict[str, Any]]) -> None:
        if self.fields is None:
            for record in records:
                for name in record:
                    if name not in self._known:
                        # Checked on sight: a late field is written by the widening pass, after the download.
                        _refuse_surrogates(name, f"field name {name!r}")
                        self._known.add(name)
                        self.columns.append(name)
        header = ""
        if not self._header_written and (records or self.fields is not None):
            header = self._header()
        columns = self.columns
        rows = [[csv_cell(record.get(name)) for name in columns] for record in records]
        text = header + self._rows.render(rows)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            rows = [
                [_encodable_cell(record.get(name), f"field {name!r} of record {n}") for name in columns]
                for n, record in enumerate(records, 1)
            ]
            data = (header + self._rows.render(rows)).encode("utf-8")
        self._write(data)

    def finish(self) -> None:
        if not self._header_written and self.columns:
            self._write(self._header().encode("utf-8"))

    def _header(self) -> str:
        for name in self.columns:
            _refuse_surrogates(name, f"field name {name!r}")
        self._header_written = len(self.columns)
        return self._rows.render([self.columns], header=True)


def _encodable_cell(value: Any, where: str) -> Any:
    """A cell UTF-8 can hold: grids and objects escaped where needed; text that cannot be is refused."""
    if isinstance(value, (list, dict)):
        return _encodable_json(value)
    cell = csv_cell(value)
    if isinstance(cell, str):
        _refuse_surrogates(cell, where)
    return cell


def _refuse_surrogates(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DeyelBadResponseError(
            f'{where} holds a lone surrogate (legal in JSON, e.g. "\\ud800", but not writable as UTF-8 '
            f"text): CSV cannot hold it; extract this form with format='jsonl', which keeps it escaped"
        ) from None


def widen_csv(source: IO[bytes], sink: IO[bytes], columns: Sequence[str]) -> int:
    """Copy a CSV with the header ``columns``, padding shorter rows with empty cells; returns bytes written.

    Streams row by row (``csv`` handles newlines inside quoted cells), so memory stays small.
    """
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        # Process-wide, and only ever raised: a cell over 128 KiB must not fail the pass after the download.
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    text = io.TextIOWrapper(source, encoding="utf-8", newline="")
    reader = csv.reader(text)
    rows = _CsvRows()
    written = 0
    width = len(columns)
    pending: list[list[str]] = []

    def flush() -> None:
        nonlocal written
        data = rows.render(pending).encode("utf-8")
        sink.write(data)
        written += len(data)
        pending.clear()

    header = rows.render([list(columns)], header=True).encode("utf-8")
    sink.write(header)
    written += len(header)
    next(reader, None)  # the old, narrower header
    for row in reader:
        pending.append(row + [""] * (width - len(row)))
        if len(pending) == 1000:
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
