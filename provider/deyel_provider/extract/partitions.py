"""Partitioned runs (Airflow 3.2+): the window of a run is the period its partition key names.

A DAG scheduled with ``CronPartitionTimetable`` makes runs that carry a ``partition_key`` (the
``dag_run.partition_key``), the cron tick the run is for formatted with the timetable's ``key_format`` in its
timezone (``2026-01-01T05:00:00``). The period of that key is ``[its tick, the next tick)``: an hourly cron's
key ``05:00`` names ``[05:00, 06:00)``, whatever time the run starts (``run_offset=-1`` runs it at 06:00).

Where the period cannot be derived (a partition key in a run whose timetable is not a
``CronPartitionTimetable``, a key that does not match the ``key_format``, or a ``key_format`` coarser than
the cron, which gives several ticks one key) it is a :class:`~deyel_provider.exceptions.DeyelConfigError`,
raised before anything is read. On Airflow 3.0 and 3.1 no run has a partition key: nothing here applies.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pendulum
from croniter import croniter

from deyel_provider.compat import AIRFLOW_VERSION
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.run import epoch_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionWindow:
    """The partition a run is for: its key and its period ``[start, end)``, both in epoch ms."""

    key: str
    start: int
    end: int

    @property
    def span(self) -> tuple[int, int]:
        return self.start, self.end

    def emit(self, outlet_event: Any) -> None:
        """Attach the key to the task's Asset event, where Airflow lets a task say it (3.3's
        ``add_partitions``); Airflow also gives the run's key to the events of a partitioned run itself."""
        add_partitions = getattr(outlet_event, "add_partitions", None)
        if add_partitions is not None:
            add_partitions(self.key)


def partition_key(context: Mapping[str, Any]) -> str | None:
    """The run's partition key: the context's (3.3), else its DAG run's (3.2); None on older minors."""
    key = context.get("partition_key")
    if key is None:
        key = getattr(context.get("dag_run"), "partition_key", None)
    return key if isinstance(key, str) and key else None


def partition_window(context: Mapping[str, Any]) -> PartitionWindow | None:
    """The window of a partitioned run, None for a run without a partition key."""
    key = partition_key(context)
    if key is None:
        return None
    timetable = getattr(context.get("dag"), "timetable", None)
    start, end = partition_period(timetable, key)
    return PartitionWindow(key, epoch_ms(start), epoch_ms(end))


def warn_if_output_is_not_partitioned(template: Any, rendered: Any, key: str) -> bool:
    """Log one WARNING when a partitioned run writes where every partition writes: ``output`` neither names
    ``partition_key`` in its template nor renders to a text holding the key. Each partition then overwrites
    the last, and a consumer of an earlier key reads a later one's instances. Not refused: a DAG may
    overwrite one file on purpose. Returns whether it warned."""
    if "partition_key" in str(template) or key in str(rendered):
        return False
    log.warning(
        "output %s does not depend on the partition key (%s): every partition of this DAG writes it, the "
        "last run overwriting the others; template output with {{ dag_run.partition_key }} to keep one "
        "file per partition",
        rendered,
        key,
    )
    return True


def partition_period(timetable: Any, key: str) -> tuple[pendulum.DateTime, pendulum.DateTime]:
    """``[start, end)`` of ``key`` under a ``CronPartitionTimetable``; a DeyelConfigError where none is."""
    if not _is_cron_partition_timetable(timetable):
        raise DeyelConfigError(
            f"this run has the partition key {key!r}, but its DAG's timetable "
            f"({type(timetable).__name__}) does not say which period a key names: the extraction reads a "
            f"partition's period under CronPartitionTimetable only; schedule the extraction's DAG with "
            f"CronPartitionTimetable, or use a data-interval timetable (no partitions)"
        )
    expression: str = timetable.expression
    key_format: str = timetable.key_format
    tz = _timezone(timetable.timezone)
    # The cron ticks in the timetable's timezone; the key is a tick written in that timezone on Airflow 3.3+,
    # in UTC on 3.2 (its scheduler formats the tick as it holds it, in UTC).
    key_tz = tz if AIRFLOW_VERSION >= (3, 3) else pendulum.UTC
    example = _format(pendulum.datetime(2026, 1, 1, 5, tz=tz), key_tz, key_format)
    try:
        parsed = dt.datetime.strptime(key, key_format)
    except ValueError:
        raise DeyelConfigError(
            f"the partition key {key!r} does not match the timetable's key_format {key_format!r}: no period "
            f"can be derived from it, so nothing was read; trigger the run with a key in that format (as "
            f"the timetable writes them, e.g. {example!r})"
        ) from None
    start = pendulum.instance(parsed) if parsed.tzinfo is not None else pendulum.instance(parsed, tz=key_tz)
    start = start.in_timezone("UTC")
    end = _next_tick(expression, tz, start)
    if _previous_tick(expression, tz, end) != start:
        raise DeyelConfigError(
            f"the partition key {key!r} is not a tick of the timetable's cron {expression!r}: "
            f"its period would not be one of the timetable's; trigger the run with a key the timetable "
            f"writes (a cron tick formatted with {key_format!r})"
        )
    if _format(end, key_tz, key_format) == key:
        raise DeyelConfigError(
            f"several ticks of the cron {expression!r} share the key {key!r}, so its period is ambiguous: "
            f"the timetable's key_format {key_format!r} is coarser than its cron, or the key is a wall-clock "
            f"time that occurs twice when daylight saving time ends; use a key_format that names each tick "
            f"(the default '%Y-%m-%dT%H:%M:%S' does, a '%z' in it tells a repeated hour apart)"
        )
    return start, end


def _is_cron_partition_timetable(timetable: Any) -> bool:
    try:
        import airflow.sdk
    except ImportError:  # pragma: no cover - the provider needs the Task SDK
        return False
    # Airflow 3.2+ only; 3.0 and 3.1 have no partitioned runs (and no partition key to get here).
    cron_partition = getattr(airflow.sdk, "CronPartitionTimetable", None)
    return cron_partition is not None and isinstance(timetable, cron_partition)


def _timezone(tz: Any) -> Any:
    return pendulum.timezone(tz) if isinstance(tz, str) else tz


def _format(moment: pendulum.DateTime, tz: Any, key_format: str) -> str:
    return moment.in_timezone(tz).strftime(key_format)


def _next_tick(expression: str, tz: Any, current: pendulum.DateTime) -> pendulum.DateTime:
    """The first tick after ``current``, as Airflow's cron timetables compute it (DST fold included)."""
    local = current.in_timezone(tz)
    naive = local.naive()
    cron = croniter(expression, start_time=naive)
    scheduled = cron.get_next(dt.datetime)
    if cron.expanded[1] == ["*"]:
        # Every hour: step by the wall-clock distance from the aware moment, so a fall-back hour that occurs
        # twice is a tick of its own each time (as Airflow does).
        return (local + (scheduled - naive)).in_timezone("UTC")
    return pendulum.instance(scheduled, tz=tz).in_timezone("UTC")


def _previous_tick(expression: str, tz: Any, current: pendulum.DateTime) -> pendulum.DateTime:
    local = current.in_timezone(tz)
    naive = local.naive()
    cron = croniter(expression, start_time=naive)
    scheduled = cron.get_prev(dt.datetime)
    if cron.expanded[1] == ["*"]:
        return (local - (naive - scheduled)).in_timezone("UTC")
    return pendulum.instance(scheduled, tz=tz).in_timezone("UTC")
