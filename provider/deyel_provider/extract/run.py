"""Extracting a form's instances to a file or object: streamed page by page, published atomically.

The data goes to ``<name>.tmp-<uuid>`` beside the target and is moved under the final name only once every
page is written. On a local filesystem the move is an ``os.rename`` (atomic, replacing an older file); on an
object store it is the store's move (copy, then delete the temporary object): readers never see a partial
object under the final name. Temporary leftovers of a killed attempt are removed by the next attempt.
"""

from __future__ import annotations

import calendar
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import ObjectStoragePath

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.formats.text import (
    DEFAULT_MAX_COLUMNS,
    FORMATS,
    CsvWriter,
    check_max_columns,
)
from deyel_provider.extract.formats.writers import make_writer
from deyel_provider.extract.parts import OutputFiles, check_output_name
from deyel_provider.storage.compression import PARQUET_CODECS, TEXT_CODECS, zstd_module
from deyel_provider.storage.paths import as_storage_path

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from deyel_provider.hooks.deyel import DeyelHook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractResult:
    """What an extraction did: small enough for XCom."""

    #: The file published; None when the output was split into parts or an empty run skipped.
    path: str | None
    records: int
    #: Time slices written (a crowded millisecond counts once per page).
    slices: int
    bytes: int
    seconds: float
    requests: int
    #: Instances the server sent again after they were written (edited during the run): kept once.
    repeats: int
    #: The window actually read, epoch ms ``[start, end)``; None where unbounded (a full load).
    window_start: int | None
    window_end: int | None
    #: The files published, ``{"path", "records", "bytes"}`` each, in order: one, or the numbered parts of
    #: ``max_file_bytes``; none when an empty run was skipped.
    parts: list[dict[str, Any]] = field(default_factory=list)
    #: ``on_empty="skip"`` and the run found nothing: no file was written.
    skipped: bool = False
    #: The columns written and their types (``{"name", "type"}``; the type is None in JSON Lines).
    columns: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        del values["columns"]  # for lineage, not XCom
        return values


def epoch_ms(moment: datetime) -> int:
    """Deyel's date literal: milliseconds since the epoch (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Integer arithmetic (not timestamp() floats), and it works for pendulum datetimes as well.
    return calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000


class Progress:
    """Logs slices, records, rate and elapsed time every ``interval`` seconds while the extraction runs."""

    def __init__(self, interval: float, logger: Any = log) -> None:
        self.interval = interval
        self.log = logger
        self.started = time.monotonic()
        self._next = self.started + interval
        self.slices = 0
        self.records = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def add(self, records: int) -> None:
        self.slices += 1
        self.records += records
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.interval
            self.report("progress")

    def report(self, what: str) -> None:
        elapsed = self.elapsed
        rate = self.records / elapsed if elapsed > 0 else 0.0
        self.log.info(
            "%s: %d slices, %d records, %.0f records/s, %.1f s elapsed",
            what,
            self.slices,
            self.records,
            rate,
            elapsed,
        )


ON_EMPTY: tuple[str, ...] = ("write", "skip")


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
        from deyel_provider.extract.formats.parquet import check_schema

        check_schema(schema, list(fields) if fields is not None else None)


def extract(
    hook: DeyelHook,
    form: str,
    output: str | ObjectStoragePath,
    *,
    search: str | None = None,
    fields: Sequence[str] | None = None,
    format: str = "jsonl",
    compression: str | None = None,
    schema: dict[str, str] | None = None,
    on_empty: str = "write",
    max_file_bytes: int | None = None,
    row_group_bytes: int | None = None,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    page_size: int | None = None,
    max_workers: int | str = 1,
    max_workers_ceiling: int = 8,
    field: str = "dtLastUpdate",
    start: int | None = None,
    end: int | None = None,
    end_at_server_time: bool = False,
    output_conn_id: str | None = None,
    progress_interval: float = 30.0,
    logger: Any = log,
    before_publish: Callable[[int | None], None] | None = None,
) -> ExtractResult:
    """Stream every instance of ``form`` matching ``search`` into ``output`` and publish it atomically.

    The form is read through time slices of ``field`` (:mod:`deyel_provider.read.slicing`): every instance
    once,
    or a :class:`~deyel_provider.exceptions.DeyelError` and nothing published.

    :param hook: the Deyel connection to read from.
    :param form: the form's identifier.
    :param output: target URL (any fsspec protocol) or local path.
    :param search: Deyel filter, narrowed per slice.
    :param fields: columns (CSV, Parquet) or keys (JSON Lines) to keep, in order; default: everything.
    :param format: ``jsonl``, ``csv`` or ``parquet``.
    :param compression: ``gzip`` or ``zstd`` for JSON Lines and CSV (the output name ends with ``.gz`` or
        ``.zst``); ``snappy`` (default), ``zstd``, ``gzip`` or ``none`` for Parquet.
    :param schema: Parquet column types, ``{"dtLastUpdate": "timestamp", ...}``; the others are inferred.
    :param on_empty: ``write`` (an empty file) or ``skip`` (no file) when the run finds no instance.
    :param max_file_bytes: split the output into numbered parts of about this size (see :mod:`.parts`).
    :param row_group_bytes: Parquet: Arrow bytes per row group (memory holds about one).
    :param max_columns: CSV and Parquet: distinct columns the output may have; a run that meets more
        fails with a ``DeyelSchemaError`` and publishes nothing (JSON Lines: keys listed for lineage).
    :param page_size: instances per response; default: the connection's.
    :param max_workers: slices fetched in parallel, or ``"auto"``.
    :param max_workers_ceiling: the most slices ``"auto"`` keeps in flight.
    :param field: the epoch-millisecond field every write moves to the present (``dtLastUpdate``).
    :param start: window start (inclusive, epoch ms); None: from the first instance.
    :param end: window end (exclusive, epoch ms); None: up to the present, changes during the run included.
    :param end_at_server_time: end the window at the server's present (a watermark run); ``end`` ignored.
    :param output_conn_id: Airflow connection of the object store, if it needs one.
    :param progress_interval: seconds between progress lines in the log.
    :param before_publish: called with the window's end once everything is read, before anything is
        published (a watermark run records its window there); an exception from it publishes nothing.
    """
    check_output_options(
        format,
        compression=compression,
        on_empty=on_empty,
        max_file_bytes=max_file_bytes,
        schema=schema,
        fields=fields,
        max_columns=max_columns,
    )
    if progress_interval <= 0:
        raise DeyelConfigError(f"progress_interval must be > 0 seconds, got {progress_interval!r}")
    if format != "parquet" and compression == "zstd":
        # The first file is opened with the first page: without this, a missing codec fails after the
        # reading (and never, for an empty run with on_empty="skip"). Here, not at DAG parsing: the workers
        # are what need the [zstd] extra.
        zstd_module()
    target = as_storage_path(output, output_conn_id)
    check_output_name(target.name, format, compression)
    options: dict[str, Any] = {}
    if format == "parquet":
        options = {
            "schema": schema,
            "compression": compression or "snappy",
            "id_field": hook.config.id_field,
        }
        if row_group_bytes is not None:
            options["row_group_bytes"] = row_group_bytes
    elif row_group_bytes is not None:
        raise DeyelConfigError(f"row_group_bytes applies to format='parquet' only, not {format!r}")
    files = OutputFiles(
        target,
        split=max_file_bytes is not None,
        codec=None if format == "parquet" else compression,
        logger=logger,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    files.remove_leftovers()
    writer = make_writer(
        format,
        files.open,
        fields,
        max_file_bytes=max_file_bytes,
        max_columns=max_columns,
        redact=hook.redactor,
        **options,
    )
    progress = Progress(progress_interval, logger)
    logger.info("extracting %s to %s", form, files.part_target(0) if max_file_bytes is None else target)
    skipped = False
    try:
        reader = hook.sliced_reader(
            form,
            search=search,
            field=field,
            page_size=page_size,
            max_workers=max_workers,
            max_workers_ceiling=max_workers_ceiling,
            logger=logger,
        )
        for piece in reader.read(start, end, end_at_server_time=end_at_server_time):
            if piece.records:
                writer.write_page(piece.records)
            progress.add(len(piece.records))
        if before_publish is not None:
            before_publish(reader.stats.window_end)
        if progress.records == 0 and on_empty == "skip":
            skipped = True
            written = []
        else:
            writer.close()
            written = files.finish(writer)
            files.publish(written)
    except BaseException:
        files.discard()
        raise
    if skipped:
        files.discard()
        logger.info("no instance in this run and on_empty='skip': no file written")
    else:
        progress.report(f"published {', '.join(part.target.name for part in written)}")
    stats = reader.stats
    return ExtractResult(
        path=None if skipped or max_file_bytes is not None else str(target),
        records=progress.records,
        slices=progress.slices,
        bytes=sum(part.bytes for part in written),
        seconds=round(progress.elapsed, 3),
        requests=stats.requests,
        repeats=stats.repeats,
        window_start=start,
        window_end=stats.window_end,
        parts=[{"path": str(p.target), "records": p.records, "bytes": p.bytes} for p in written],
        skipped=skipped,
        columns=_columns_of(writer),
    )


def _columns_of(writer: Any) -> list[dict[str, Any]]:
    """The columns written and their types, for the lineage schema facet."""
    types = getattr(writer, "types", None)
    if types is not None:
        return [{"name": name, "type": kind} for name, kind in types]
    # CSV cells are text; JSON Lines values keep their JSON types, which vary by record.
    kind = "string" if isinstance(writer, CsvWriter) else None
    return [{"name": name, "type": kind} for name in getattr(writer, "columns", writer.fields or [])]
