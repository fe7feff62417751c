"""Choosing the writer of an output format: JSON Lines, CSV or Parquet."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.formats.base import DEFAULT_MAX_COLUMNS, FORMATS, OpenFile, RecordWriter
from deyel_provider.extract.formats.parquet import ParquetWriter
from deyel_provider.extract.formats.text import CsvWriter, JsonLinesWriter


def make_writer(
    fmt: str,
    open_file: OpenFile,
    fields: Iterable[str] | None = None,
    *,
    max_file_bytes: int | None = None,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    redact: Callable[[str], str] = str,
    **options: Any,
) -> RecordWriter:
    """The writer of format ``fmt``; ``options`` are the Parquet writer's (``schema``, ``compression``...).

    :param max_columns: distinct columns the output may have (:data:`DEFAULT_MAX_COLUMNS`).
    :param redact: applied to server text (field names, values) in error messages.
    """
    field_list = list(fields) if fields is not None else None
    common: dict[str, Any] = {"max_file_bytes": max_file_bytes, "max_columns": max_columns, "redact": redact}
    if fmt == "parquet":
        return ParquetWriter(open_file, field_list, **common, **options)
    if options:
        raise DeyelConfigError(f"{sorted(options)} apply to format='parquet' only, not {fmt!r}")
    if fmt == "jsonl":
        return JsonLinesWriter(open_file, field_list, **common)
    if fmt == "csv":
        return CsvWriter(open_file, field_list, **common)
    raise DeyelConfigError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
