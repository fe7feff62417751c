"""One watermark run from start to publish: the window it reads, its record before the publish, the advance
after it (:mod:`deyel_provider.extract.watermark` holds the stored values and their checks)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deyel_provider.exceptions import DeyelConfigError, DeyelWatermarkError
from deyel_provider.extract.watermark import (
    HISTORY,
    RESET_CONF,
    Watermark,
    WatermarkSigner,
    Window,
    legacy_end,
    read_run_window,
    read_watermark,
    record_run_window,
    reset_requested,
    watermark_key,
    write_watermark,
)

if TYPE_CHECKING:
    from airflow.sdk import Asset, Context

log = logging.getLogger(__name__)


class WatermarkRun:
    """The watermark of one run of one task.

    :param context: the task's Airflow context (``dag_run``, ``asset_state_store``, ``task_state_store``,
        ``inlet_events``).
    :param asset: the asset whose state (or events) keeps the watermark.
    :param key: :func:`deyel_provider.extract.watermark.watermark_key` of this task.
    :param signer: MACs with the connection's key.
    :param start_from: the first run's start (epoch ms), called only when no watermark is stored.
    :param legacy: (form, field, search) of the key releases before 1.x used, to name it in a warning.
    """

    def __init__(
        self,
        context: Context,
        asset: Asset,
        key: str,
        signer: WatermarkSigner,
        *,
        start_from: Callable[[], int],
        legacy: tuple[str, str, str | None],
    ) -> None:
        self._context = context
        self._asset = asset
        self.key = key
        self._signer = signer
        self._start_from = start_from
        self._legacy = legacy
        dag_run = context.get("dag_run")
        run_id = getattr(dag_run, "run_id", None) or context.get("run_id")
        self.run_id: str = run_id if isinstance(run_id, str) else ""
        after = getattr(dag_run, "run_after", None)
        self._run_after = int(after.timestamp() * 1000) if isinstance(after, datetime) else None
        self._reset = reset_requested(context)
        self._start: int | None = None
        self._window: Window | None = None
        self._reread = False

    def choose(self) -> tuple[int, int | None]:
        """``(start, end)`` of this run; ``end`` None: the server's present (read by the extraction)."""
        own = self._trusted(lambda: read_run_window(self._context, self.key, self._signer, self.run_id))
        mark = self._trusted(self._stored)
        if own is None and mark is not None:
            own = mark.window_of(self.run_id)
        if own is not None:
            # Cleared or retried: exactly the window it chose the first time, never another one.
            log.info(
                "run %s chose [%s, %s) already: reading that window again",
                self.run_id,
                _at(own.start),
                _at(own.end),
            )
            self._start, self._window, self._reread = own.start, own, True
            return own.start, own.end
        if self._reset:
            log.warning("%s: this run resets the watermark %s to start_from", RESET_CONF, self.key)
            mark = None
        elif mark is not None and mark.forgot(self._run_after):
            raise DeyelWatermarkError(
                f"run {self.run_id!r} is older than the oldest window kept for the watermark {self.key!r} "
                f"(the last {HISTORY} are kept, and a reset forgets those before it) and its own window is "
                f"not recorded: reading another window would rewrite its file with other changes. Its "
                f"changes are in the files of the runs after it: mark this task instance successful "
                f"instead of clearing it, or trigger a new run"
            )
        if mark is not None:
            self._start = mark.end
            log.info("incremental load from the watermark %s to the server's present", _at(mark.end))
            return mark.end, None
        self._start = self._start_from()
        old = legacy_end(self._context, self._asset, *self._legacy)
        if old is not None:
            log.warning(
                "a watermark of a previous release (unauthenticated, shared by every task of this form, "
                "field and search) ends at %s; it is not used: this run starts at start_from %s (to "
                "continue from the old watermark instead, set start_from to its end)",
                _at(old),
                _at(self._start),
            )
        else:
            log.info("first watermark run: from start_from %s", _at(self._start))
        return self._start, None

    def record(self, window_end: int | None) -> None:
        """Before the publish: record the window. (An end far ahead of the worker's clock never gets here: the
        reader refuses a server Date further than ``max_clock_skew_seconds`` from it.)"""
        if window_end is None or self._start is None:
            return
        if self._reread:
            return  # recorded already, and its end is in the past
        self._window = Window(self.run_id, self._start, window_end, self._run_after)
        record_run_window(self._context, self.key, self._window, self._signer)

    @property
    def rereads(self) -> bool:
        """Whether this run reads a window it recorded before (a retry or a clear)."""
        return self._reread

    def adopt(self, start: int, end: int, *, reread: bool) -> None:
        """Take the window another task of this run chose and recorded (the fan-out group's ``plan``), so
        that :meth:`publish` adds it here. A window the watermark holds already was published by an earlier
        attempt of that task (a cleared commit): a re-read, whatever the plan said, so that a reset run's
        re-publish keeps what later runs added since."""
        if not reread:
            mark = self._trusted(self._stored)
            reread = mark is not None and mark.window_of(self.run_id) is not None
        self._start, self._reread = start, reread
        self._window = Window(self.run_id, start, end, self._run_after)

    def publish(self, extra: dict[str, Any]) -> int | None:
        """After the publish: add this run's window to the watermark; returns its newest end."""
        if self._window is None:
            return None
        # A reset starts a new history, once: its own re-reads keep what later runs added since.
        base = None if self._reset and not self._reread else self._trusted(self._stored)
        if base is None:
            dropped = self._run_after - 1 if self._reset and self._run_after is not None else None
            base = Watermark(self.key, self._window.start, (), dropped)
        mark = base.with_window(self._window)
        write_watermark(self._context, self._asset, mark, self._signer, extra)
        return mark.end

    def _stored(self) -> Watermark | None:
        return read_watermark(self._context, self._asset, self.key, self._signer)

    def _trusted(self, read: Callable[[], Any]) -> Any:
        """``read()``; on a reset run an untrusted value is set aside instead of failing the run."""
        try:
            return read()
        except DeyelWatermarkError:
            if not self._reset:
                raise
            log.warning("%s: setting aside an untrusted value of %s", RESET_CONF, self.key)
            return None


def task_watermark_key(
    context: Context,
    *,
    form: str,
    field: str,
    search: str | None,
    conn_id: str,
    task_id: str,
    shared: str | None,
) -> str:
    """The watermark key of a task: owner-bound (connection, DAG, task, map index) unless ``shared``
    (the operator's ``watermark_key``) shares one on purpose."""
    if shared is not None and (not isinstance(shared, str) or not shared.strip()):
        raise DeyelConfigError(f"watermark_key must be a non-empty string, got {shared!r}")
    ti, dag = context.get("ti"), context.get("dag")
    map_index = getattr(ti, "map_index", None)
    return watermark_key(
        form,
        field,
        search,
        conn_id=conn_id,
        dag_id=getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None),
        task_id=task_id,
        map_index=map_index if isinstance(map_index, int) else None,
        shared=shared.strip() if shared else None,
    )


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
