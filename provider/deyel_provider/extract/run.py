"""Extracting a form's instances to a file or object: streamed page by page, published atomically.

The data goes to ``<name>.tmp-<uuid>`` beside the target and is moved under the final name only once every
page is written. On a local filesystem the move is an ``os.rename`` (atomic, replacing an older file); on an
object store it is the store's move (copy, then delete the temporary object): readers never see a partial
object under the final name. Temporary leftovers of a killed attempt are removed by the next attempt.
"""

from __future__ import annotations

import calendar
import inspect
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deyel_provider.extract.formats.text import CsvWriter, JsonLinesWriter
from deyel_provider.extract.formats.writers import make_writer
from deyel_provider.extract.parts import OutputFiles, check_output_name
from deyel_provider.extract.progress import Progress
from deyel_provider.extract.resume import ResumeSpec, Staging
from deyel_provider.extract.spec import OutputSpec, ReadSpec, WindowSpec
from deyel_provider.read.collector import heap_frozen
from deyel_provider.storage.compression import zstd_module
from deyel_provider.storage.paths import as_storage_path
from deyel_provider.storage.publish import check_output_folder

if TYPE_CHECKING:
    from collections.abc import Callable

    from deyel_provider.hooks.deyel import DeyelHook


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
    #: The fewest requests that could have listed ``records``: ``ceil(records / page_size)`` (at least 1);
    #: after a resume, of the records this attempt read itself, as ``requests`` counts its own.
    min_requests: int
    #: ``requests / min_requests``: what the slicing cost over a page loop that knew the count (1.0 at
    #: best; the first response of a window and the last, at the present, come on top of the slices).
    requests_ratio: float
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


def extract(
    hook: DeyelHook,
    read: ReadSpec,
    output: OutputSpec,
    window: WindowSpec | None = None,
    *,
    progress: Progress | None = None,
    before_publish: Callable[[int | None], None] | None = None,
    resume: ResumeSpec | None = None,
) -> ExtractResult:
    """Stream every instance ``read`` names into ``output`` and publish it atomically.

    The form is read through time slices of ``read.field`` (:mod:`deyel_provider.read.slicing`): every
    instance once, or a :class:`~deyel_provider.exceptions.DeyelError` and nothing published.

    :param hook: the Deyel connection to read from.
    :param read: the form, search, slicing field, page size and requests in flight.
    :param output: the target and its format, compression, columns and parts.
    :param window: the window of ``read.field`` to read; default: everything, up to the present.
    :param progress: where the run's progress lines go and how often; default: every 30 s, to this
        module's logger.
    :param before_publish: called with the window's end once everything is read, before anything is
        published (a watermark run records its window there); an exception from it publishes nothing.
    :param resume: whose attempt this is: a split output is staged part by part, and a retry continues after
        the parts an earlier attempt completed (:mod:`deyel_provider.extract.resume`); None: never.
    """
    window = window or WindowSpec()
    progress = progress or Progress()
    logger = progress.log
    if output.format != "parquet" and output.compression == "zstd":
        # The first file is opened with the first page: without this, a missing codec fails after the
        # reading (and never, for an empty run with on_empty="skip"). Here, not at DAG parsing: the workers
        # are what need the [zstd] extra.
        zstd_module()
    target = as_storage_path(output.output, output.output_conn_id)
    check_output_name(target.name, output.format, output.compression)
    files = OutputFiles(target, split=output.split, codec=output.codec, hashed=resume is not None)
    check_output_folder(target)  # a folder this worker cannot write: named, before the first request
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Staging.begin(resume, files, output, window, logger)
    files.remove_leftovers(keep=staging.kept if staging is not None else ())
    writer = make_writer(
        output.format,
        files.open,
        output.fields,
        max_file_bytes=output.max_file_bytes,
        max_columns=output.max_columns,
        redact=hook.redactor,
        **_parquet_options(output, hook.config.id_field),
    )
    if staging is not None and isinstance(writer, JsonLinesWriter):
        writer.list_keys(staging.columns)  # lineage lists the reused parts' keys too
    progress.begin()
    reused_records = staging.records if staging is not None else 0
    progress.records += reused_records
    read_window = staging.read_window if staging is not None else window
    logger.info("extracting %s to %s", read.form, target if output.split else files.part_target(0))
    skipped = False
    try:
        plain: dict[str, Any] = (
            {"plain_pages": True} if writer.takes_plain and takes_plain_pages(hook.sliced_reader) else {}
        )
        reader = hook.sliced_reader(
            read.form,
            search=read.search,
            field=read.field,
            page_size=read.page_size,
            max_workers=read.workers,
            **plain,
        )
        pieces = reader.read(
            read_window.start, read_window.end, end_at_server_time=read_window.end_at_server_time
        )
        # A plain ``with``, not the read's generator: left on any exit, however the read is abandoned.
        # closing(): a writer error stops the read at once (its workers start no further request), not
        # when the traceback that holds this frame, and so the generator, is let go.
        with heap_frozen(), closing(pieces):  # no full garbage collections walking the heap, page after page
            for piece in pieces:
                if piece.records:
                    writer.write_page(piece.records, plain=piece.plain)
                if staging is not None:
                    staging.page_written(piece, writer, reader.stats.window_end)
                progress.expect(reader.stats.expected)
                progress.add(len(piece.records))
        if before_publish is not None:
            before_publish(reader.stats.window_end)
        if progress.records == 0 and output.on_empty == "skip":
            skipped = True
            written = []
        else:
            reused = staging.reused if staging is not None else []
            if not reused or writer.records:  # the earlier parts hold it all: no empty part after them
                writer.close()
            written = [*reused, *files.finish(writer)]
            files.publish(written)
    except BaseException:
        files.discard(keep=staging.failed() if staging is not None else ())
        raise
    if staging is not None:
        staging.done()
    if skipped:
        files.discard()
        logger.info("no instance in this run and on_empty='skip': no file written")
    else:
        progress.report(f"published {', '.join(part.target.name for part in written)}")
    stats = reader.stats
    return ExtractResult(
        path=None if skipped or output.split else str(target),
        records=progress.records,
        slices=progress.slices,
        bytes=sum(part.bytes for part in written),
        seconds=round(progress.elapsed, 3),
        requests=stats.requests,
        # Of the records this attempt read: a resumed retry's requests are its own (docs/extraction.md).
        min_requests=(fewest := max(1, -(-(progress.records - reused_records) // reader.page_size))),
        requests_ratio=round(stats.requests / fewest, 3),
        repeats=stats.repeats,
        window_start=window.start,
        window_end=stats.window_end,
        parts=[{"path": str(p.target), "records": p.records, "bytes": p.bytes} for p in written],
        skipped=skipped,
        columns=_columns_of(writer),
    )


def takes_plain_pages(sliced_reader: Any) -> bool:
    """Whether ``sliced_reader`` takes ``plain_pages``: a hook subclass written for a release before it may
    override the method without it (it then reads without the fact, its pages written value by value)."""
    try:
        parameters = inspect.signature(sliced_reader).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume today's
        return True
    return any(p.name == "plain_pages" or p.kind is p.VAR_KEYWORD for p in parameters)


def _parquet_options(output: OutputSpec, id_field: str) -> dict[str, Any]:
    """The Parquet writer's own options (none for the text formats)."""
    if output.format != "parquet":
        return {}
    options: dict[str, Any] = {
        "schema": output.schema,
        "compression": output.compression or "snappy",
        "id_field": id_field,
    }
    if output.row_group_bytes is not None:
        options["row_group_bytes"] = output.row_group_bytes
    return options


def _columns_of(writer: Any) -> list[dict[str, Any]]:
    """The columns written and their types, for the lineage schema facet."""
    types = getattr(writer, "types", None)
    if types is not None:
        return [{"name": name, "type": kind} for name, kind in types]
    # CSV cells are text; JSON Lines values keep their JSON types, which vary by record.
    kind = "string" if isinstance(writer, CsvWriter) else None
    return [{"name": name, "type": kind} for name in getattr(writer, "columns", writer.fields or [])]
