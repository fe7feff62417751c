"""What an extraction reads, writes and which window: small frozen objects, each checked once when built.

:class:`~deyel_provider.operators.extract.DeyelExtractOperator` keeps Airflow's flat, templated arguments and
builds these once they are rendered; :func:`deyel_provider.extract.run.extract` takes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk import ObjectStoragePath

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.formats.base import DEFAULT_MAX_COLUMNS, FORMATS, check_max_columns
from deyel_provider.extract.formats.parquet_types import check_schema
from deyel_provider.http.concurrency import Workers
from deyel_provider.storage.compression import PARQUET_CODECS, TEXT_CODECS

ON_EMPTY: tuple[str, ...] = ("write", "skip")


@dataclass(frozen=True)
class ReadSpec:
    """Which instances to read, and how hard to press the server.

    :param form: the form's identifier.
    :param search: Deyel filter, narrowed per slice.
    :param field: the epoch-millisecond field every write moves to the present (``dtLastUpdate``); the slices
        are cut on it (the reader checks it names a field).
    :param page_size: instances per response; default: the connection's.
    :param max_workers: slices fetched in parallel, or ``"auto"``; or a
        :class:`~deyel_provider.http.concurrency.Workers` already checked (the operator's), taken as is.
    :param max_workers_ceiling: the most slices ``"auto"`` keeps in flight (both checked once, when the spec
        is built, unless ``max_workers`` is a ``Workers``).
    """

    form: str
    search: str | None = None
    field: str = "dtLastUpdate"
    page_size: int | None = None
    max_workers: int | str | Workers = 1
    max_workers_ceiling: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.max_workers, Workers):
            object.__setattr__(self, "max_workers", Workers(self.max_workers, self.max_workers_ceiling))

    @property
    def workers(self) -> Workers:
        """``max_workers`` and ``max_workers_ceiling`` as checked when the spec was built."""
        assert isinstance(self.max_workers, Workers)  # made one by __post_init__
        return self.max_workers


@dataclass(frozen=True)
class OutputSpec:
    """Where the instances go and in which shape; refuses bad option values when built.

    :param output: target URL (any fsspec protocol), ``ObjectStoragePath`` or local path.
    :param format: ``jsonl``, ``csv`` or ``parquet``.
    :param compression: ``gzip`` or ``zstd`` for JSON Lines and CSV (the output name ends with ``.gz`` or
        ``.zst``); ``snappy`` (default), ``zstd``, ``gzip`` or ``none`` for Parquet.
    :param fields: columns (CSV, Parquet) or keys (JSON Lines) to keep, in order; default: everything.
    :param schema: Parquet column types, ``{"dtLastUpdate": "timestamp", ...}``; the others are inferred.
    :param on_empty: ``write`` (an empty file) or ``skip`` (no file) when the run finds no instance.
    :param max_file_bytes: split the output into numbered parts of about this size (see :mod:`.parts`).
    :param row_group_bytes: Parquet: Arrow bytes per row group (memory holds about one).
    :param max_columns: CSV and Parquet: distinct columns the output may have; a run that meets more
        fails with a ``DeyelSchemaError`` and publishes nothing (JSON Lines: keys listed for lineage).
    :param output_conn_id: Airflow connection of the object store, if it needs one.
    """

    output: str | ObjectStoragePath
    format: str = "jsonl"
    compression: str | None = None
    fields: Sequence[str] | None = None
    schema: dict[str, str] | None = None
    on_empty: str = "write"
    max_file_bytes: int | None = None
    row_group_bytes: int | None = None
    max_columns: int = DEFAULT_MAX_COLUMNS
    output_conn_id: str | None = None

    def __post_init__(self) -> None:
        check_output_options(
            self.format,
            compression=self.compression,
            on_empty=self.on_empty,
            max_file_bytes=self.max_file_bytes,
            schema=self.schema,
            fields=self.fields,
            max_columns=self.max_columns,
        )
        if self.format != "parquet" and self.row_group_bytes is not None:
            raise DeyelConfigError(f"row_group_bytes applies to format='parquet' only, not {self.format!r}")

    @property
    def split(self) -> bool:
        """Whether the output is written as numbered parts (``max_file_bytes``)."""
        return self.max_file_bytes is not None

    @property
    def codec(self) -> str | None:
        """The file codec of a text format (Parquet compresses inside the file)."""
        return None if self.format == "parquet" else self.compression


@dataclass(frozen=True)
class WindowSpec:
    """Which part of the form's history: ``start <= field < end`` in epoch ms.

    :param start: window start (inclusive); None: from the first instance.
    :param end: window end (exclusive); None: up to the present, changes during the run included.
    :param end_at_server_time: end the window at the server's settled present (a watermark run); ``end`` is
        then ignored.
    """

    start: int | None = None
    end: int | None = None
    end_at_server_time: bool = False


def check_output_options(
    fmt: str,
    *,
    compression: str | None = None,
    on_empty: str = "write",
    max_file_bytes: int | None = None,
    schema: Any = None,
    fields: Sequence[str] | None = None,
    max_columns: int = DEFAULT_MAX_COLUMNS,
) -> None:
    """Refuse an unknown format, a codec the format does not have, and the other options' bad values."""
    if fmt not in FORMATS:
        raise DeyelConfigError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    codecs = list(PARQUET_CODECS) if fmt == "parquet" else [None, *TEXT_CODECS]
    if compression is not None and compression not in codecs:
        raise DeyelConfigError(f"compression for format={fmt!r} must be one of {codecs}, got {compression!r}")
    if on_empty not in ON_EMPTY:
        raise DeyelConfigError(f"on_empty must be one of {list(ON_EMPTY)}, got {on_empty!r}")
    if max_file_bytes is not None and (
        not isinstance(max_file_bytes, int) or isinstance(max_file_bytes, bool) or max_file_bytes <= 0
    ):
        raise DeyelConfigError(f"max_file_bytes must be a positive number of bytes, got {max_file_bytes!r}")
    check_max_columns(max_columns)
    if schema is not None:
        if fmt != "parquet":
            raise DeyelConfigError(
                f"schema declares Parquet column types; it does not apply to format={fmt!r}"
            )
        check_schema(schema, list(fields) if fields is not None else None)
