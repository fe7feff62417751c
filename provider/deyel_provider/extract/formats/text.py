r"""Output formats of an extraction: JSON Lines (one instance per line, as returned) and CSV.

Writers take a page at a time and write bytes to a binary file object, so memory holds one page whatever
the total. CSV columns are a declared ``fields`` list, or the union of the fields seen in first-seen order:
a field that first appears after the header was written widens the file in one streaming pass at the end.

Bounded whatever the server sends: a CSV or Parquet output has at most ``max_columns`` distinct columns
(:data:`DEFAULT_MAX_COLUMNS`; a server that sends a new field name per instance would otherwise make every
row as wide as all the names seen, records x names in memory and on disk): past it the run fails with a
:class:`DeyelSchemaError` naming the option, and nothing is published. CSV rows are rendered about
:data:`CSV_CELLS_PER_WRITE` cells at a time, however wide the rows or long the page. JSON Lines has no
columns: past the cap it stops listing new keys for lineage (a warning says so) and goes on writing.
A field name holding a control character (C0, DEL, C1: NUL, ESC...) is refused in a CSV header or Parquet
column name (:func:`check_field_name`).

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
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError, DeyelSchemaError

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")


# One encoder for every record: json.dumps with options builds a new encoder per call.
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# For the rare record a UTF-8 file cannot hold as is (a lone surrogate): \uXXXX escapes, still the same JSON.
_json_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

#: Distinct columns a CSV or Parquet output may have (the ``max_columns`` option): twice what a relational
#: table holds (Oracle 1000, SQL Server 1024 columns), and memory stays bounded at this width (Parquet's
#: row groups shrink to fit ``row_group_bytes``, CSV renders a bounded number of cells at a time).
DEFAULT_MAX_COLUMNS = 2000
#: CSV cells rendered before they are written: bounds memory whatever the width and the page size.
CSV_CELLS_PER_WRITE = 1 << 16
#: Control characters (C0, DEL, C1) refused in a field name that becomes a header or column name.
_CONTROL = frozenset(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))

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


def check_max_columns(max_columns: Any) -> int:
    """``max_columns`` as given, or a config error."""
    if not isinstance(max_columns, int) or isinstance(max_columns, bool) or max_columns <= 0:
        raise DeyelConfigError(f"max_columns must be a positive number of columns, got {max_columns!r}")
    return max_columns


def check_field_name(name: str, redact: Callable[[str], str] = str) -> None:
    """Refuse a field name a CSV header or Parquet column cannot show safely: a lone surrogate (not UTF-8)
    or a control character (NUL, ESC... : a terminal or a tool showing the header would act on it).

    Refused rather than escaped: an escaped name (``\\x1b``) is not the field's name, could collide with
    a real one, and Deyel's field identifiers never hold such characters: only a broken or hostile server
    sends them.
    """
    _refuse_surrogates(name, f"field name {name!r}")
    if not _CONTROL.isdisjoint(name):
        char = next(c for c in name if c in _CONTROL)
        shown = redact(repr(name))[:80]  # repr escapes every character that is not printable
        raise DeyelBadResponseError(
            f"field name {shown} holds the control character U+{ord(char):04X}, which no CSV header or "
            f"Parquet column should carry (a terminal showing it would act on it): the server sent a field "
            f"name no Deyel form has; extract this form with format='jsonl' (keys escaped as JSON), or name "
            f"the columns to keep with fields=[...]"
        )


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


class FileSink(Protocol):
    """One output file being written (see :class:`deyel_provider.storage.compression.EncodedFile`)."""

    #: Where the format's bytes go (through the file's codec, if it has one).
    stream: IO[bytes]

    @property
    def size(self) -> int:
        """Bytes the file holds so far, as stored."""
        ...

    def close(self) -> None: ...


#: Opens a new file for part ``number`` of the output.
OpenFile = Callable[[int], FileSink]


@dataclass
class Part:
    """One output file of a run: written as one file, or as several segments that a rewrite joins (a Parquet
    schema that widened after a row group was written)."""

    number: int
    files: list[FileSink]
    records: int = 0
    #: What each file was written with, for :meth:`RecordWriter.needs_rewrite` (format-specific).
    layout: list[Any] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(sink.size for sink in self.files)


class RecordWriter(ABC):
    """Writes a run's pages of instances into one file, or into numbered parts of about ``max_file_bytes``.

    Files come from ``open_file(part_number)``. A part ends at the first page (Parquet: row group) that
    takes it to ``max_file_bytes`` or past. After :meth:`close`, a part for which :meth:`needs_rewrite` is
    true must be copied through :meth:`rewrite` before it is published (a CSV column or a Parquet type that
    changed after the part was written), so that every part has the run's final columns and types.
    """

    def __init__(
        self,
        open_file: OpenFile,
        fields: Sequence[str] | None = None,
        *,
        max_file_bytes: int | None = None,
        max_columns: int = DEFAULT_MAX_COLUMNS,
        redact: Callable[[str], str] = str,
    ) -> None:
        self._open_file = open_file
        self.fields = list(fields) if fields is not None else None
        self.max_file_bytes = max_file_bytes
        self.max_columns = check_max_columns(max_columns)
        self._redact = redact
        self.parts: list[Part] = []
        self.records = 0
        self._current: Part | None = None

    def write_page(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        part = self._current or self._start_part()
        self._write(part, records)
        part.records += len(records)
        self.records += len(records)
        if self.max_file_bytes is not None and part.size >= self.max_file_bytes:
            self._end_part(part)

    def close(self) -> None:
        """Complete the last part; an empty run still gets one (empty) file."""
        if self._current is None and not self.parts:
            self._start_part()
        if self._current is not None:
            self._end_part(self._current)

    def needs_rewrite(self, part: Part) -> bool:
        """Whether ``part`` lacks columns (or types) that the run found after it was written."""
        return False

    def rewrite(self, part: Part, sources: Iterable[IO[bytes]], sink: IO[bytes]) -> None:
        """Copy ``part`` (its files, as read back, in order; each usable until the next is taken) into
        ``sink`` with the run's final layout."""
        raise NotImplementedError(f"{type(self).__name__} never needs a rewrite")

    def _new_fields(self, records: Sequence[dict[str, Any]], known: Container[str], count: int) -> list[str]:
        """The names in ``records`` not in ``known`` (``count`` columns so far), in first-seen order, each
        checked (:func:`check_field_name`); a :class:`DeyelSchemaError` at the first past ``max_columns``."""
        new: dict[str, None] = {}
        for index, record in enumerate(records):
            for name in record:
                if name in known or name in new:
                    continue
                if count + len(new) >= self.max_columns:
                    raise self._too_many_columns(name, index)
                check_field_name(name, self._redact)
                new[name] = None
        return list(new)

    def _too_many_columns(self, name: str, index: int) -> DeyelSchemaError:
        """The error for field ``name`` of the page's record ``index``, one column past ``max_columns``."""
        position = self.records + index + 1
        shown = self._redact(repr(name))[:80]
        return DeyelSchemaError(
            f"record {position} of this run brings field {shown}, a column past max_columns="
            f"{self.max_columns} distinct columns for this output (a server sending new field names per "
            f"instance would make every row as wide as all of them): if the form really has that many "
            f"fields, raise max_columns (an option of DeyelExtractOperator), keep fewer with fields=[...], "
            f"or use format='jsonl'",
            field=shown,
            position=position,
        )

    def _start_part(self) -> Part:
        number = len(self.parts)
        part = Part(number, [self._open_file(number)])
        self.parts.append(part)
        self._current = part
        return part

    def _end_part(self, part: Part) -> None:
        self._current = None
        self._finish(part)
        for sink in part.files:
            sink.close()

    @abstractmethod
    def _write(self, part: Part, records: Sequence[dict[str, Any]]) -> None: ...

    def _finish(self, part: Part) -> None:  # noqa: B027 - optional hook
        """Write what the part still needs once its last page is in (a header, a footer)."""


class JsonLinesWriter(RecordWriter):
    """One instance per line, as the server returned it (or only ``fields``, in that order)."""

    def __init__(self, open_file: OpenFile, fields: Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(open_file, fields, **options)
        #: The keys written, in first-seen order (for lineage: JSON Lines has no header), up to max_columns.
        self.columns: list[str] = list(self.fields or [])
        self._known = set(self.columns)

    def _write(self, part: Part, records: Sequence[dict[str, Any]]) -> None:
        if self.fields is not None:
            fields = self.fields
            records = [{name: record.get(name) for name in fields} for record in records]
        elif len(self.columns) < self.max_columns:
            self._list_keys(records)
        try:
            data = ("\n".join(map(_json, records)) + "\n").encode("utf-8")
        except UnicodeEncodeError:
            data = ("\n".join(map(_encodable_json, records)) + "\n").encode("utf-8")
            log.warning(
                "A record holds a lone surrogate (a broken UTF-16 pair): written escaped (\\udXXX), as JSON "
                "allows; Python's json reads it back, DuckDB refuses the line, pandas reads it as ''"
            )
        part.files[-1].stream.write(data)

    def _list_keys(self, records: Sequence[dict[str, Any]]) -> None:
        known, columns = self._known, self.columns
        for record in records:
            if known.issuperset(record):
                continue
            for name in record:
                if name in known:
                    continue
                if len(columns) == self.max_columns:
                    log.warning(
                        "more than max_columns=%d distinct keys: lineage lists the first %d; every record is "
                        "still written whole",
                        self.max_columns,
                        self.max_columns,
                    )
                    return
                known.add(name)
                columns.append(name)


class CsvWriter(RecordWriter):
    """A header row, then one row per instance; nested grids are JSON text in their cell.

    Every part starts with the columns known when its header was written; a field that first appears later
    makes earlier parts need a rewrite (:func:`widen_csv`).
    """

    def __init__(self, open_file: OpenFile, fields: Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(open_file, fields, **options)
        self.columns: list[str] = list(self.fields or [])
        self._known = set(self.columns)
        self._rows = _CsvRows()

    def needs_rewrite(self, part: Part) -> bool:
        return bool(part.layout) and part.layout[0] < len(self.columns)

    def rewrite(self, part: Part, sources: Iterable[IO[bytes]], sink: IO[bytes]) -> None:
        for source in sources:  # one: a CSV part is always one file
            widen_csv(source, sink, self.columns)

    def _write(self, part: Part, records: Sequence[dict[str, Any]]) -> None:
        if self.fields is None:
            # Checked on sight: a late field is written by the widening pass, after the download.
            new = self._new_fields(records, self._known, len(self.columns))
            self._known.update(new)
            self.columns.extend(new)
        stream = part.files[-1].stream
        if not part.layout:
            stream.write(self._header(part).encode("utf-8"))
        columns = self.columns
        # A few rows at a time: a page of wide rows is never held as cells all at once.
        step = max(1, CSV_CELLS_PER_WRITE // max(1, len(columns)))
        for start in range(0, len(records), step):
            chunk = records[start : start + step]
            rows = [[csv_cell(record.get(name)) for name in columns] for record in chunk]
            try:
                data = self._rows.render(rows).encode("utf-8")
            except UnicodeEncodeError:
                first = self.records + start + 1
                rows = [
                    [_encodable_cell(record.get(name), f"field {name!r} of record {n}") for name in columns]
                    for n, record in enumerate(chunk, first)
                ]
                data = self._rows.render(rows).encode("utf-8")
            stream.write(data)

    def _finish(self, part: Part) -> None:
        if not part.layout and self.columns:
            part.files[-1].stream.write(self._header(part).encode("utf-8"))

    def _header(self, part: Part) -> str:
        for name in self.columns:
            check_field_name(name, self._redact)
        part.layout.append(len(self.columns))
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
    step = max(1, CSV_CELLS_PER_WRITE // max(1, width))
    for row in reader:
        pending.append(row + [""] * (width - len(row)))
        if len(pending) >= step:
            flush()
    flush()
    text.detach()  # the caller owns (and closes) the source
    return written
