"""Extracting a form's instances to a file or object: streamed page by page, published atomically.

The data goes to ``<name>.tmp-<uuid>`` beside the target and is moved under the final name only once every
page is written. On a local filesystem the move is an ``os.rename`` (atomic, replacing an older file); on an
object store it is the store's move (copy, then delete the temporary object): readers never see a partial
object under the final name. Temporary leftovers of a killed attempt are removed by the next attempt.
"""

from __future__ import annotations

import calendar
import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import ObjectStoragePath

from deyel_provider import publish
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.formats import FORMATS, CsvWriter, make_writer, widen_csv

if TYPE_CHECKING:
    from collections.abc import Sequence

    from deyel_provider.hooks.deyel import DeyelHook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractResult:
    """What an extraction did: small enough for XCom."""

    path: str
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def epoch_ms(moment: datetime) -> int:
    """Deyel's date literal: milliseconds since the epoch (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    # Integer arithmetic (not timestamp() floats), and it works for pendulum datetimes as well.
    return calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000


def as_storage_path(output: str | ObjectStoragePath, conn_id: str | None = None) -> ObjectStoragePath:
    """The output as an ``ObjectStoragePath``; a plain path means a local file (``file://``)."""
    if isinstance(output, ObjectStoragePath):
        return output
    text = str(output).strip()
    if not text:
        raise DeyelConfigError("output must be a URL or path, e.g. file:///data/deyel/CRM_ACCOUNT.jsonl")
    folder = text.endswith("/")
    if "://" not in text:
        # Made absolute without resolving links: a link at the final name must be replaced, not followed.
        text = Path(os.path.abspath(os.path.expanduser(text))).as_uri()
    path = ObjectStoragePath(text, conn_id=conn_id)
    if folder or not path.name:
        raise DeyelConfigError(f"output {text!r} is a folder; end it with a file name, e.g. .../data.jsonl")
    return path


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


def extract(
    hook: DeyelHook,
    form: str,
    output: str | ObjectStoragePath,
    *,
    search: str | None = None,
    fields: Sequence[str] | None = None,
    format: str = "jsonl",
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
) -> ExtractResult:
    """Stream every instance of ``form`` matching ``search`` into ``output`` and publish it atomically.

    The form is read through time slices of ``field`` (:mod:`deyel_provider.slicing`): every instance once,
    or a :class:`~deyel_provider.exceptions.DeyelError` and nothing published.

    :param hook: the Deyel connection to read from.
    :param form: the form's identifier.
    :param output: target URL (any fsspec protocol) or local path.
    :param search: Deyel filter, narrowed per slice.
    :param fields: columns (CSV) or keys (JSON Lines) to keep, in order; default: everything.
    :param format: ``jsonl`` or ``csv``.
    :param page_size: instances per response; default: the connection's.
    :param max_workers: slices fetched in parallel, or ``"auto"``.
    :param max_workers_ceiling: the most slices ``"auto"`` keeps in flight.
    :param field: the epoch-millisecond field every write moves to the present (``dtLastUpdate``).
    :param start: window start (inclusive, epoch ms); None: from the first instance.
    :param end: window end (exclusive, epoch ms); None: up to the present, changes during the run included.
    :param end_at_server_time: end the window at the server's present (a watermark run); ``end`` ignored.
    :param output_conn_id: Airflow connection of the object store, if it needs one.
    :param progress_interval: seconds between progress lines in the log.
    """
    if format not in FORMATS:
        raise DeyelConfigError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if progress_interval <= 0:
        raise DeyelConfigError(f"progress_interval must be > 0 seconds, got {progress_interval!r}")
    target = as_storage_path(output, output_conn_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target, logger)
    temp = _temp_beside(target)
    progress = Progress(progress_interval, logger)
    logger.info("extracting %s to %s (temporary %s)", form, target, temp.name)
    spare: publish.LocalTemp | ObjectStoragePath | None = None
    try:
        with temp.open("wb") as sink:
            writer = make_writer(format, sink, fields)
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
            writer.finish()
        written = writer.bytes_written
        if isinstance(writer, CsvWriter) and writer.needs_widening:
            spare = _temp_beside(target)
            with temp.open("rb") as source, spare.open("wb") as sink:
                written = widen_csv(source, sink, writer.columns)
            temp.unlink()
            temp, spare = spare, None
        temp.move(target)
    except BaseException:
        for leftover in (temp, spare):
            _discard(leftover)
        raise
    progress.report(f"published {target}")
    stats = reader.stats
    return ExtractResult(
        path=str(target),
        records=progress.records,
        slices=progress.slices,
        bytes=written,
        seconds=round(progress.elapsed, 3),
        requests=stats.requests,
        repeats=stats.repeats,
        window_start=start,
        window_end=stats.window_end,
    )


# Link-safe creation, cleanup and publishing live in deyel_provider.publish.
_temp_beside = publish.temp_beside
_remove_leftovers = publish.remove_leftovers
_discard = publish.discard
