"""Which window a run of an extraction reads: its partition's period, its data interval, its watermark, or
everything (a full load). One choice, shared by ``DeyelExtractOperator`` and the fan-out group's ``plan``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pendulum
import pendulum.parsing.exceptions

from deyel_provider.api.dates import iso_moment
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract import watermark as wm
from deyel_provider.extract.partitions import PartitionWindow, partition_window
from deyel_provider.extract.run import epoch_ms
from deyel_provider.extract.watermark_run import WatermarkRun, task_watermark_key

if TYPE_CHECKING:
    from airflow.sdk import Asset, Context

    from deyel_provider.connection.settings import DeyelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowOwner:
    """What a run's window depends on: what is read, whose watermark it is, where a first run starts.

    :param task_id: the owner of the watermark (the operator's task id; the fan-out group's id).
    :param watermark_key: the user's shared key, or None (the watermark is the owner's).
    :param start_from: a datetime or ISO 8601 text, or None.
    """

    form: str
    field: str | None
    search: str | None
    conn_id: str
    task_id: str
    watermark_key: str | None = None
    start_from: datetime | str | None = None


@dataclass
class RunWindow:
    """The window chosen: ``mode`` (``partition``, ``interval``, ``watermark``, ``full``), ``[start, end)`` in
    epoch ms (``end`` None: the server's present, or unbounded), the watermark run (watermark mode only) and
    the partition (partition mode only)."""

    mode: str
    start: int | None
    end: int | None
    run: WatermarkRun | None = None
    partition: PartitionWindow | None = None


def choose_run_window(
    context: Context, owner: WindowOwner, asset: Asset | None, config: DeyelConfig
) -> RunWindow:
    """The window of this run (see ``DeyelExtractOperator``'s docstring), said in the task's log."""
    field = owner.field or None
    # A partitioned run (Airflow 3.2+) reads its partition's period; a key without one fails here, before
    # anything is read. Its window is neither a watermark's nor one it moves.
    partition = partition_window(context) if field else None
    if partition is not None:
        log.info("partition %s: %s in [%s, %s)", partition.key, field, *map(iso_moment, partition.span))
        return RunWindow("partition", partition.start, partition.end, partition=partition)
    if not field:
        log.info("full load of %s (incremental_field=None)", owner.form)
        return RunWindow("full", None, None)
    interval_start, interval_end = context.get("data_interval_start"), context.get("data_interval_end")
    if interval_start is not None and interval_end is not None and interval_start < interval_end:
        log.info("incremental load: %s in the data interval [%s, %s)", field, interval_start, interval_end)
        return RunWindow("interval", epoch_ms(interval_start), epoch_ms(interval_end))
    if asset is None:
        raise DeyelConfigError(
            "a run without a data interval keeps a watermark in its asset, and this task has none: "
            "pass asset=Asset(...), use a data-interval timetable, or incremental_field=None"
        )
    run = watermark_run(context, owner, asset, config)
    start, end = run.choose()
    return RunWindow("watermark", start, end, run=run)


def watermark_run(context: Context, owner: WindowOwner, asset: Asset, config: DeyelConfig) -> WatermarkRun:
    """The watermark run of ``owner`` in this run (its window not chosen yet: ``choose``, or ``adopt``)."""
    field = owner.field or "dtLastUpdate"
    key = task_watermark_key(
        context,
        form=owner.form,
        field=field,
        search=owner.search or None,
        conn_id=owner.conn_id,
        task_id=owner.task_id,
        shared=owner.watermark_key,
    )
    return WatermarkRun(
        context,
        asset,
        key,
        wm.WatermarkSigner.for_connection(config.client_secret, config.token_url, config.client_id),
        start_from=lambda: _start_from_ms(owner),
        legacy=(owner.form, field, owner.search or None),
    )


def _start_from_ms(owner: WindowOwner) -> int:
    if owner.start_from is None:
        raise DeyelConfigError(
            f"no watermark for {owner.form} yet and no start_from: pass start_from (the first run's "
            f"start, e.g. '2026-01-01T00:00:00Z'), or incremental_field=None for a full load"
        )
    return epoch_ms(as_datetime(owner.start_from))


def as_datetime(value: datetime | str) -> datetime:
    """``start_from`` as a datetime (ISO 8601 text parsed); a DeyelConfigError otherwise."""
    if isinstance(value, datetime):
        return value
    try:
        parsed = pendulum.parse(str(value))
    except (ValueError, TypeError, pendulum.parsing.exceptions.ParserError):
        parsed = None
    if not isinstance(parsed, datetime):
        raise DeyelConfigError(f"start_from must be a datetime or an ISO 8601 date-time, got {value!r}")
    return parsed
