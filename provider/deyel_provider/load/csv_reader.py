"""Reading a CSV source: a header of field names, then one record per row; cells typed by their column's
prefix (:func:`~deyel_provider.load.values.csv_value`), a record's bytes bounded whatever ``csv`` allows."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from typing import IO, Any

from deyel_provider.exceptions import DeyelSourceError
from deyel_provider.load.records import Reader, Record
from deyel_provider.load.values import MAX_DEPTH, csv_value


class CsvReader(Reader):
    """The records of a CSV file with a header row (blank lines skipped, as ``csv.DictReader`` does)."""

    def read(self, raw: IO[bytes]) -> Iterator[Record]:
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

    def header(self, raw: IO[bytes]) -> list[str]:
        """The file's columns (to check the key column before reading rows)."""
        first = next(self._csv_rows(raw), None)
        return first[0] if first is not None else []

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
