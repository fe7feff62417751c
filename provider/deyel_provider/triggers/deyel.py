"""Triggers that wait on Deyel in the triggerer: the deferred mode of ``DeyelInstanceSensor``.

They run the hook's blocking calls in a worker thread (``asyncio.to_thread``), as Airflow's own REST triggers
do, so the event loop that serves every other trigger never waits on Deyel, and there is one implementation
of the token path and the retry policy: the hook's. Each trigger reads the connection in the triggerer
(its serialised kwargs hold no secret), and its hook takes tokens from the process's memory tier and the
connection's shared cache, so many deferred sensors on one triggerer share one token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from deyel_provider import exceptions
from deyel_provider.exceptions import DeyelError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.instance_probe import InstanceQuery, is_not_yet, probe


def error_event(error: DeyelError) -> dict[str, Any]:
    """A typed failure as plain values; :func:`raise_error_event` raises it again on the worker."""
    return {
        "status": "error",
        "error_class": type(error).__name__,
        "detail": error.detail,
        "http_status": error.status,
        "method": error.method,
        "path": error.path,
    }


def raise_error_event(event: dict[str, Any]) -> None:
    """Raise the typed error an :func:`error_event` describes (``DeyelError`` for an unknown class)."""
    found = getattr(exceptions, str(event.get("error_class")), None)
    error_class = found if isinstance(found, type) and issubclass(found, DeyelError) else DeyelError
    raise error_class(
        str(event.get("detail") or "the trigger failed"),
        status=event.get("http_status"),
        method=event.get("method"),
        path=event.get("path"),
    )


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
                    result = await asyncio.to_thread(probe, hook, self.query)
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
            await asyncio.to_thread(hook.close)
