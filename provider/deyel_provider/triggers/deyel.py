"""Triggers that wait on Deyel in the triggerer: the deferred mode of ``DeyelInstanceSensor``, and changes of
a form for event-driven DAGs (``AssetWatcher``).

They run the hook's blocking calls in worker threads of their own (:mod:`deyel_provider.wait.threads`: one
pool per process, at most :func:`thread_cap` threads, a connection at most half of them; none left when no
call runs), so the event loop that serves every other trigger never waits on Deyel, and a Deyel that does not
answer holds none of the loop's default threads and only half of the triggers'. What the sensor and the
triggers share is in :mod:`deyel_provider.wait` (the count, the change window, the error event).
Every request has a total deadline (the connection's ``request_deadline``), and a cancelled trigger cuts
its request in progress, so a server trickling bytes holds a thread for neither longer.
There is one implementation of the token path and the retry policy: the hook's. Each trigger reads the
connection in the triggerer (its serialised kwargs hold no secret), and its hook takes tokens from the
process's memory tier and the connection's shared cache, so many deferred sensors on one triggerer share
one token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

from deyel_provider.exceptions import DeyelConfigError, DeyelError, DeyelWatermarkError
from deyel_provider.extract import watermark as wm
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.wait.changes import CHANGE_STATE_PREFIX, ChangeWatch
from deyel_provider.wait.events import error_event, raise_error_event
from deyel_provider.wait.instance_state import InstanceQuery, is_not_yet, probe
from deyel_provider.wait.threads import DEFAULT_THREADS, MAX_THREADS, THREADS_ENV, in_thread, thread_cap

__all__ = [
    "CHANGE_STATE_PREFIX",
    "DEFAULT_THREADS",
    "MAX_THREADS",
    "THREADS_ENV",
    "DeyelChangeTrigger",
    "DeyelInstanceTrigger",
    "error_event",
    "in_thread",
    "raise_error_event",
    "thread_cap",
]


class DeyelInstanceTrigger(BaseTrigger):
    """Poll a form until at least ``min_count`` instances match ``search``, then fire once.

    The event is ``{"status": "success", "xcom": ...}`` with the sensor's XCom, or ``{"status": "error",
    ...}`` for a failure that waiting cannot fix (refused credentials, a missing form, a refused search).
    A transient failure that outlasts the connection's retry policy counts as "not yet". Nothing is kept
    between polls, so a triggerer restart simply starts polling again.

    :param form: the form's identifier.
    :param search: Deyel filter, e.g. ``cdStatus=eq:APPROVED``.
    :param min_count: how many matches are enough.
    :param max_instances: how many matching instances the event carries (0 to 100).
    :param fields: fields kept in each instance of the event, besides its id.
    :param deyel_conn_id: the ``deyel`` connection, read in the triggerer.
    :param poll_interval: seconds between two probes.
    """

    def __init__(
        self,
        *,
        form: str,
        search: str | None = None,
        min_count: int = 1,
        max_instances: int = 1,
        fields: Sequence[str] | None = None,
        deyel_conn_id: str = DeyelHook.default_conn_name,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__()
        self.query = InstanceQuery.build(form, search, min_count, max_instances, fields)
        self.deyel_conn_id = deyel_conn_id
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        query = self.query
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "form": query.form,
                "search": query.search,
                "min_count": query.min_count,
                "max_instances": query.max_instances,
                "fields": list(query.fields),
                "deyel_conn_id": self.deyel_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = DeyelHook(deyel_conn_id=self.deyel_conn_id)
        try:
            while True:
                try:
                    result = await in_thread(self.deyel_conn_id, probe, hook, self.query)
                except DeyelError as exc:
                    if not is_not_yet(exc):
                        yield TriggerEvent(error_event(exc))
                        return
                    self.log.warning("Deyel did not answer the probe (%s); trying again later", exc)
                else:
                    if result.satisfies(self.query):
                        yield TriggerEvent({"status": "success", "xcom": result.to_xcom(self.query)})
                        return
                    self.log.info(
                        "%s instances of %s match %r; waiting for %s",
                        result.count,
                        self.query.form,
                        self.query.search,
                        self.query.min_count,
                    )
                await asyncio.sleep(self.poll_interval)
        finally:
            # Not queued behind hung calls: closing the pooled sessions does not wait on the network.
            hook.close()


class DeyelChangeTrigger(BaseEventTrigger):
    """Fire when instances of a form (matching ``search``) change: for an ``AssetWatcher``.

    It keeps a watermark on ``dtLastUpdate``. Each poll asks the server (one cheap GET) whether any instance
    changed at or after it; when one did, the event covers the window ``[window_start, window_end)``, whose
    end is the server's present (its ``Date``) less the connection's ``settle_seconds`` (a write stamped
    just before the present may not be visible yet; it falls into the next window), and the watermark moves
    to that end. A ``Date`` further than the connection's ``max_clock_skew_seconds`` from the triggerer's
    clock moves nothing: the poll is skipped with a warning, and the next one tries again. So consecutive
    events cover consecutive windows, and a DAG scheduled on the asset extracts exactly its event's window
    (``DeyelHook.iter_instances(form, search=..., start=window_start, end=window_end)``).

    The watermark is kept in the asset's state store where Airflow has one (3.3+), written one poll after its
    event (once the triggerer has stored it), so a restarted triggerer carries on from it (one stopped in
    between sends that window again: at least once, never a window in no event); elsewhere it starts again
    at ``start`` (or at the server's present). The event: ``{"form", "search", "field", "window_start",
    "window_end", "count", "count_exact"}`` (epoch milliseconds).

    :param form: the form's identifier.
    :param search: Deyel filter narrowing the watched instances, e.g. ``cdStatus=eq:APPROVED``.
    :param deyel_conn_id: the ``deyel`` connection, read in the triggerer.
    :param poll_interval: seconds between two polls.
    :param start: the first watermark (epoch ms) when there is none in the asset's state; None: the server's
        present when the trigger first runs (only later changes fire). An int from 0 to year 9999, else
        ``DeyelConfigError``; a watermark after the server's ``Date`` (beyond ``max_clock_skew_seconds``)
        fails the first poll with ``DeyelWatermarkError``.
    :param field: the epoch-millisecond field every write moves to the present.
    """

    def __init__(
        self,
        *,
        form: str,
        search: str | None = None,
        deyel_conn_id: str = DeyelHook.default_conn_name,
        poll_interval: float = 60.0,
        start: int | None = None,
        field: str = "dtLastUpdate",
    ) -> None:
        super().__init__()
        self.query = InstanceQuery.build(form, search, 1, 0, None)
        self.deyel_conn_id = deyel_conn_id
        self.poll_interval = float(poll_interval)
        if start is not None and (
            not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= wm.MAX_MS
        ):
            # Checked here, not at the first poll: a start in micro- or nanoseconds by mistake lies
            # millennia ahead, and a watch from there would wait silently for ever.
            raise DeyelConfigError(
                f"start must be epoch milliseconds from 0 to {wm.MAX_MS} (year 9999), got {start!r}: a value "
                f"in micro- or nanoseconds is 1000 or 1,000,000 times too large"
            )
        self.start = start
        self.field = field

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "form": self.query.form,
                "search": self.query.search,
                "deyel_conn_id": self.deyel_conn_id,
                "poll_interval": self.poll_interval,
                "start": self.start,
                "field": self.field,
            },
        )

    @property
    def state_key(self) -> str:
        """One watermark per (connection, form, field, search) in the asset's state
        (:func:`~deyel_provider.wait.changes.change_state_key`)."""
        return self._watch.state_key

    @property
    def _watch(self) -> ChangeWatch:
        return ChangeWatch(self.deyel_conn_id, self.query, self.field, self.log)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = DeyelHook(deyel_conn_id=self.deyel_conn_id)
        try:
            signer = await in_thread(self.deyel_conn_id, _signer_of, hook)
            mark = saved = await self._load_watermark(signer)
            while True:
                try:
                    event = None
                    if mark is None:
                        mark = saved = await in_thread(self.deyel_conn_id, self._present, hook)
                        if mark is not None:
                            await self._save_watermark(mark, signer)
                    if mark is not None:
                        event = await in_thread(self.deyel_conn_id, self._changes_since, hook, mark)
                except DeyelError as exc:
                    if not is_not_yet(exc):
                        raise
                    self.log.warning("Deyel did not answer the change poll (%s); trying again later", exc)
                    event = None
                if event is not None:
                    # The triggerer keeps a yielded event in memory and stores it at its next sync, while a
                    # state write goes out at once: the new mark is saved one poll later, once the event is
                    # stored. A triggerer killed in between sends this window again (a consumer naming its
                    # output by the window, as the example does, replaces the same file); saved first, the
                    # window's changes would be in no event at all.
                    yield TriggerEvent(event)
                    mark = event["window_end"]
                await asyncio.sleep(self.poll_interval)
                if mark is not None and mark != saved:
                    await self._save_watermark(mark, signer)
                    saved = mark
        finally:
            # Not queued behind hung calls: closing the pooled sessions does not wait on the network.
            hook.close()

    def _present(self, hook: DeyelHook) -> int | None:
        return self._watch.present(hook)

    def _changes_since(self, hook: DeyelHook, mark: int) -> dict[str, Any] | None:
        return self._watch.changes_since(hook, mark)

    # -- its watermark in the asset's state: owned by the connection, signed with its key --------------------

    async def _load_watermark(self, signer: wm.WatermarkSigner) -> int | None:
        """The stored watermark once its MAC proves this provider wrote it for this connection and key; else
        ``start``. A value that fails the check with no ``start`` to fall back on is a typed error: the
        trigger cannot know where it was, and starting at the present would skip what changed since."""
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return self.start
        try:
            stored = await store.aget(self.state_key)
        except Exception as exc:  # an Airflow without this asset's state: fall back to ``start``
            self.log.warning("Could not read the watermark from the asset's state (%s)", exc)
            return self.start
        if stored is None:
            return self.start
        mark = _verified_mark(stored, self.state_key, signer)
        if mark is None:
            why = (
                f"the change trigger's watermark {self.state_key!r} in the asset's state fails its check "
                f"(not a value this provider signed for connection {self.deyel_conn_id!r}: planted, altered, "
                f"or written before the client secret changed)"
            )
            if self.start is None:
                raise DeyelWatermarkError(
                    f"{why}; pass start= (epoch ms) to DeyelChangeTrigger to watch from a known moment, or "
                    f"delete that key from the asset's state"
                )
            self.log.warning("%s: watching from start=%s instead", why, self.start)
            return self.start
        self.log.info("Watching %s for changes since %s (asset state)", self.query.form, mark)
        return mark

    async def _save_watermark(self, mark: int, signer: wm.WatermarkSigner) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return
        value = signer.sign({"v": wm.VERSION, "key": self.state_key, "end": mark})
        try:
            await store.aset(self.state_key, value)
        except Exception as exc:
            self.log.warning("Could not keep the watermark in the asset's state (%s)", exc)


def _signer_of(hook: DeyelHook) -> wm.WatermarkSigner:
    """The connection's watermark signer (reading the connection may block: called in a thread)."""
    config = hook.config
    return wm.WatermarkSigner.for_connection(config.client_secret, config.token_url, config.client_id)


def _verified_mark(value: Any, key: str, signer: wm.WatermarkSigner) -> int | None:
    """The moment a stored change watermark holds, or None when it fails its MAC or is no moment."""
    try:
        body = signer.verified(value, key, "the asset's state")
    except DeyelWatermarkError:
        return None
    end = body.get("end")
    if not isinstance(end, int) or isinstance(end, bool) or not 0 <= end <= wm.MAX_MS:
        return None
    return end
