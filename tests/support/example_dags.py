"""The example DAGs folder and asset events handed to the next run, as a scheduler would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags_examples"


@contextmanager
def consumed_by_the_next_run(dag_id: str, events: list[int]) -> Iterator[None]:
    """Give the next run of ``dag_id`` the asset events a scheduler-made run would consume.

    ``dag.test()`` makes a manual run, which consumes nothing; the scheduler makes an asset-triggered run
    consume every event queued since the last one. The events are attached as the run is inserted, so its
    tasks see them as ``triggering_asset_events``, as under the scheduler.
    """
    from airflow.models.asset import association_table
    from airflow.models.dagrun import DagRun
    from sqlalchemy import event

    def attach(mapper, connection, run) -> None:
        if run.dag_id == dag_id:
            connection.execute(
                association_table.insert(), [{"dag_run_id": run.id, "event_id": e} for e in events]
            )

    event.listen(DagRun, "after_insert", attach)
    try:
        yield
    finally:
        event.remove(DagRun, "after_insert", attach)
