"""DeyelInstanceSensor: wait until instances of a form match a search (a status reached, a record created)."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from deyel_provider.compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
    conf,
)
from deyel_provider.exceptions import DeyelError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.triggers.deyel import DeyelInstanceTrigger
from deyel_provider.wait.events import raise_error_event
from deyel_provider.wait.instance_state import InstanceQuery, is_not_yet, probe

if TYPE_CHECKING:
    from airflow.sdk import Context


class DeyelInstanceSensor(BaseSensorOperator):
    """Wait until at least ``min_count`` instances of a form match ``search``.

    Each poke is one cheap GET (the first page, ``max_instances`` long, counted by the server's total header
    where it sends one; see :mod:`deyel_provider.wait.instance_state`). The XCom, the same in both modes, is
    ``{"form", "search", "count", "count_exact", "instances"}``, where ``instances`` holds at most
    ``max_instances`` matches, each reduced to its id (under the connection's ``id_field``, by default
    ``idObjectValue``) and ``fields``.

    Refused credentials, a missing form, a refused search or a missing permission fail the task at once
    with the typed :class:`~deyel_provider.exceptions.DeyelError`; a transient failure is retried by the
    connection's retry policy and then counts as "not yet". ``timeout``, ``soft_fail``, ``mode`` and
    ``poke_interval`` have Airflow's sensor meaning.

    :param form: the form's identifier, e.g. ``PURCHASE_REQUEST`` (templated).
    :param search: Deyel filter, e.g. ``idObjectValue=eq:42,cdStatus=eq:APPROVED`` (templated).
    :param min_count: how many matching instances are enough.
    :param max_instances: how many matching instances go to XCom (0 to 100).
    :param fields: fields kept in each instance of the XCom, besides its id (templated).
    :param deyel_conn_id: the ``deyel`` connection (templated).
    :param deferrable: wait in the triggerer (:class:`~deyel_provider.triggers.deyel.DeyelInstanceTrigger`)
        instead of holding a worker slot; it probes once on the worker first. None (default): Airflow's
        ``[operators] default_deferrable`` (False unless set), as Airflow's own sensors.
    """

    template_fields: Sequence[str] = ("form", "search", "fields", "deyel_conn_id")

    def __init__(
        self,
        *,
        form: str,
        search: str | None = None,
        min_count: int = 1,
        max_instances: int = 1,
        fields: Sequence[str] | None = None,
        deyel_conn_id: str = DeyelHook.default_conn_name,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.form = form
        self.search = search
        self.min_count = min_count
        self.max_instances = max_instances
        self.fields = fields
        self.deyel_conn_id = deyel_conn_id
        if deferrable is None:
            # Read when the DAG is parsed, as Airflow's own deferrable sensors read it (at import).
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = bool(deferrable)
        # Checked now (not at the first poke) so a DAG with a bad bound or search fails to parse; a templated
        # search, or one that is no str yet (an XComArg, resolved at run time), is checked once rendered.
        plain = isinstance(search, str) and "{{" not in search and "{%" not in search
        InstanceQuery.build("FORM", search if plain else None, min_count, max_instances, None)

    @cached_property
    def hook(self) -> DeyelHook:
        return DeyelHook(deyel_conn_id=self.deyel_conn_id)

    @property
    def query(self) -> InstanceQuery:
        """The rendered arguments (templated fields are rendered before ``execute``)."""
        return InstanceQuery.build(self.form, self.search, self.min_count, self.max_instances, self.fields)

    def poke(self, context: Context) -> PokeReturnValue | bool:
        query = self.query
        try:
            result = probe(self.hook, query)
        except DeyelError as exc:
            if not is_not_yet(exc):
                raise
            self.log.warning("Deyel did not answer the probe (%s); trying again at the next poke", exc)
            return False
        if result.satisfies(query):
            at_least = "" if result.exact else "at least "
            self.log.info("%s%s instances of %s match %r", at_least, result.count, query.form, query.search)
            return PokeReturnValue(is_done=True, xcom_value=result.to_xcom(query))
        self.log.info(
            "%s instances of %s match %r; waiting for %s",
            result.count,
            query.form,
            query.search,
            query.min_count,
        )
        return False

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # One probe on the worker: a condition already met, or a failure, needs no trip to the triggerer.
        outcome = self._first_poke(context)
        if isinstance(outcome, PokeReturnValue) and outcome.is_done:
            return outcome.xcom_value
        query = self.query
        self.defer(
            trigger=DeyelInstanceTrigger(
                form=query.form,
                search=query.search,
                min_count=query.min_count,
                max_instances=query.max_instances,
                fields=query.fields,
                deyel_conn_id=self.deyel_conn_id,
                poll_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def _first_poke(self, context: Context) -> PokeReturnValue | bool:
        """The deferrable sensor's probe on the worker, with the failure handling of Airflow's poke loop
        (``BaseSensorOperator.execute``), step for step: a timeout or a fail exception skips under
        ``soft_fail`` or ``never_fail``; any other error is logged and waited on under ``silent_fail``, skips
        under ``never_fail``. After the deferral, Airflow's ``resume_execution`` applies ``soft_fail`` and
        ``never_fail`` to what the trigger reports; ``silent_fail`` does not reach the triggerer."""
        try:
            return self.poke(context)
        except (AirflowSensorTimeout, AirflowTaskTimeout, AirflowFailException) as exc:
            if self.soft_fail:
                raise AirflowSkipException("Skipping due to soft_fail is set to True.") from exc
            if self.never_fail:
                raise AirflowSkipException("Skipping due to never_fail is set to True.") from exc
            raise
        except AirflowSkipException:
            raise
        except Exception as exc:
            if self.silent_fail:
                self.log.error("Sensor poke failed: \n %s", traceback.format_exc())
                return False
            if self.never_fail:
                raise AirflowSkipException("Skipping due to never_fail is set to True.") from exc
            raise

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger fired: its XCom, or the typed error it reported."""
        if event.get("status") == "success":
            self.log.info("%s instances of %s matched in the triggerer", event["xcom"]["count"], self.form)
            return event["xcom"]
        raise_error_event(event)
