r"""Output formats of an extraction: JSON Lines (one instance per line, as returned) and CSV.

Writers take a page at a time and write bytes to a binary file object, so memory holds one page whatever
the total. CSV columns are a declared ``fields`` list, or the union of the fields seen in first-seen order:
a field that first appears after the header was written widens the file in one streaming pass at the end.

Bounded whatever the server sends (see :mod:`.base`: at most ``max_columns`` distinct columns, field names
without control characters). CSV rows are rendered about
:data:`CSV_CELLS_PER_WRITE` cells at a time, however wide the rows or long the page. JSON Lines has no
columns: past the cap it stops listing new keys for lineage (a warning says so) and goes on writing.

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
import logging
import sys
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import IO, Any

from deyel_provider.extract.formats.base import (
    OpenFile,
    Part,
    RecordWriter,
    check_field_name,
    encodable_json,
    json_lines,
    json_text,
    refuse_surrogates,
)

log = logging.getLogger(__name__)

#: CSV cells rendered before they are written: bounds memory whatever the width and the page size.
CSV_CELLS_PER_WRITE = 1 << 16

#: The widening pass reads back cells of any size (``csv``'s default limit is 128 KiB per cell).
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: None empty, booleans ``true``/``false``, grids and objects as JSON text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json_text(value)
    return value


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


class JsonLinesWriter(RecordWriter):
    """One instance per line, as the server returned it (or only ``fields``, in that order)."""

    takes_plain = True  # a plain page is encoded in one msgspec call, with no walk over its values

    def __init__(self, open_file: OpenFile, fields: Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(open_file, fields, **options)
        #: The keys written, in first-seen order (for lineage: JSON Lines has no header), up to max_columns.
        self.columns: list[str] = list(self.fields or [])
        self._known = set(self.columns)
        # Each warning once per run: a form full of such values would say it on every page.
        self._told_escaped = self._told_nonfinite = False

    def _write(self, part: Part, records: Sequence[dict[str, Any]], *, plain: bool = False) -> None:
        if self.fields is not None:
            fields = self.fields
            records = [{name: record.get(name) for name in fields} for record in records]
        elif len(self.columns) < self.max_columns:
            self._list_keys(records)
        # A projection keeps some of each record's values and adds nulls: a plain page stays plain.
        data, escaped, nonfinite = json_lines(records, plain=plain)
        if escaped and not self._told_escaped:
            self._told_escaped = True
            log.warning(
                "A record holds a lone surrogate (a broken UTF-16 pair): written escaped (\\udXXX), as JSON "
                "allows; Python's json reads it back, DuckDB refuses the line, pandas reads it as ''"
            )
        if nonfinite and not self._told_nonfinite:
            self._told_nonfinite = True
            log.warning(
                "A record holds NaN or an infinity (the server sent NaN, Infinity or a number past a float's "
                "range, such as 1e400), which JSON has no form for: written as NaN or Infinity, as Python's "
                "json writes and reads them back; DuckDB and other strict JSON readers refuse the line"
            )
        part.files[-1].stream.write(data)

    def list_keys(self, keys: Sequence[str]) -> None:
        """List ``keys`` first: those of the parts an earlier attempt wrote, which a resumed run publishes."""
        if self.fields is None:
            self._list_keys([dict.fromkeys(keys)])

    def _list_keys(self, records: Sequence[dict[str, Any]]) -> None:
        known, columns = self._known, self.columns
        if known.issuperset(chain.from_iterable(records)):
            return  # every key of the page known already (most pages): one C call for the page
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

    def _write(self, part: Part, records: Sequence[dict[str, Any]], *, plain: bool = False) -> None:
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
        return encodable_json(value)
    cell = csv_cell(value)
    if isinstance(cell, str):
        refuse_surrogates(cell, where)
    return cell


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
