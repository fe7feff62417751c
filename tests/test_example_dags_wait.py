"""The waiting examples run end to end against the emulator: the approval flow defers until someone
approves the request it created, and the event-driven DAG extracts exactly its DeyelChangeTrigger window."""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import threading
from pathlib import Path

import pytest

from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.triggers.deyel import DeyelChangeTrigger
from tests.support.change_trigger import AssetState, watching
from tests.support.example_dags import DAGS_FOLDER, consumed_by_the_next_run
from tests.support.helpers import dagbag_class

FORM = "PURCHASE_REQUEST"


def example_dag(name: str):
    """One example DAG, parsed now (so that environment settings of the test apply)."""
    return dagbag_class()(dag_folder=str(DAGS_FOLDER / f"{name}.py")).get_dag(name)


def approve(instance_id: str) -> None:
    hook = DeyelHook()
    current = hook.get_instance(FORM, instance_id)
    hook.update_instance(FORM, instance_id, {"cdStatus": "APPROVED", "dtLastUpdate": current["dtLastUpdate"]})


class Approver(threading.Thread):
    """The person who approves in Deyel: once the request exists and has been probed twice (the sensor's
    probe on the worker, then the trigger's first), it approves the request.

    It waits on the DAG's progress alone, with no deadline: one that expired on a loaded machine (60 s)
    left the sensor waiting for an approval that never came, and the test hung instead of failing. A DAG
    that never creates or probes the request fails its run, and the test's assertions say so."""

    def __init__(self, emulator) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        self.approved: str | None = None
        self.error: BaseException | None = None
        #: Set when the DAG run has ended: an approver still waiting gives up.
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            store = self.emulator.state.store
            while not store.exists(FORM) or not store.all_ids(FORM):
                if self.stop.wait(0.01):
                    return
            seen = self.emulator.stats()["api_requests"]
            while self.emulator.stats()["api_requests"] < seen + 2:
                if self.stop.wait(0.01):
                    return
            (self.approved,) = (str(i) for i in store.all_ids(FORM))
            approve(self.approved)
        except BaseException as exc:
            self.error = exc


@pytest.mark.dag
def test_approval_dag_waits_deferred_until_the_request_is_approved(
    emulator, deyel_conn, airflow_db, monkeypatch
):
    monkeypatch.setenv("DEYEL_DEMO_POKE_INTERVAL", "0.02")  # read when the DAG file is parsed
    dag = example_dag("deyel_approval")
    approver = Approver(emulator)
    approver.start()
    run = dag.test()
    approver.stop.set()
    approver.join(600)  # only stops a hang (a request stuck in approve): nothing depends on the time
    assert not approver.is_alive(), "the approver never ended"
    assert approver.error is None
    assert run.state == "success" and approver.approved is not None
    instances = {ti.task_id: ti for ti in run.get_task_instances()}
    waited = instances["wait_for_approval"].xcom_pull(task_ids="wait_for_approval")
    assert waited["count"] == 1
    assert waited["instances"] == [
        {
            "idObjectValue": approver.approved,
            "dsItem": "Laptop for the new analyst",
            "qtAmount": 1200,
            "cdStatus": "APPROVED",
        }
    ]
    assert str(instances["order"].xcom_pull(task_ids="order")) == approver.approved
    assert emulator.stats()["token_requests"] == 1


@pytest.mark.dag
def test_on_change_dag_extracts_exactly_the_window_of_its_event(emulator, deyel_conn, airflow_db):
    from airflow import settings
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    deyel_conn(extra={"settle_seconds": 0})  # the clock moves a few seconds past each change: no margin
    hook = DeyelHook()
    before, changed = (hook.create_instance(FORM, {"cdStatus": "PENDING"})["idObjectValue"] for _ in range(2))
    emulator.advance(5)
    dag = example_dag("deyel_on_change")
    # A manual run has no event and extracts nothing; it also puts the DAG and its asset in the database.
    assert dag.test().state == "success"

    # The DAG's own watcher, polling faster: the triggerer's side of the scenario.
    asset = runpy.run_path(str(DAGS_FOLDER / "deyel_on_change.py"))["REQUESTS_CHANGED"]
    (watcher,) = asset.watchers
    _, kwargs = watcher.trigger.serialize()
    trigger = DeyelChangeTrigger(**{**kwargs, "poll_interval": 0.01})
    trigger.asset_state_store = state = AssetState()  # type: ignore[assignment]

    async def one_event() -> dict:
        events = trigger.run()
        waiting = asyncio.ensure_future(events.__anext__())
        await watching(trigger, state)
        await asyncio.to_thread(approve, changed)
        emulator.advance(2)
        event = await asyncio.wait_for(waiting, 20)
        await events.aclose()
        return event.payload

    payload = asyncio.run(one_event())
    with settings.Session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.name == asset.name))
        event = AssetEvent(asset_id=asset_id, extra=payload)
        session.add(event)
        session.commit()
        event_id = event.id

    with consumed_by_the_next_run("deyel_on_change", [event_id]):
        run = dag.test()
    assert run.state == "success"
    (ti,) = run.get_task_instances()
    (written,) = ti.xcom_pull(task_ids="extract_windows")
    assert (written["window_start"], written["window_end"]) == (
        payload["window_start"],
        payload["window_end"],
    )
    output = Path(os.environ["DEYEL_DEMO_OUTPUT"]) / FORM / "changes"
    (only,) = output.iterdir()
    records = [json.loads(line) for line in only.read_text(encoding="utf-8").splitlines()]
    assert [r["idObjectValue"] for r in records] == [changed]
    assert before != changed
