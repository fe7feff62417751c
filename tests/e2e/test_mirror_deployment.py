"""The mirror example through the real scheduler (LocalExecutor): after each triggered cycle the PostgreSQL
table equals the form's listing row by row; a cycle with nothing new changes nothing."""

from __future__ import annotations

import time

import pytest

from deyel_provider.api.clock import DEFAULT_SETTLE_MS
from deyel_provider.hooks.deyel import DeyelHook
from scripts.deployment import wait_for
from tests.support.helpers import connection_json

pytestmark = pytest.mark.e2e

DAG_ID = "deyel_mirror_postgres"
FORM = "CRM_ACCOUNT"


def test_mirror_cycles_keep_the_table_equal_to_the_form(local_deployment, local_emulator, monkeypatch):
    import psycopg2

    api = local_deployment.api()
    api.wait_for_dag(DAG_ID)
    monkeypatch.setenv("AIRFLOW_CONN_DEYEL_E2E_MIRROR", connection_json(local_emulator.url, cache="memory"))
    hook = DeyelHook("deyel_e2e_mirror")
    store = local_emulator.state.store

    def table() -> dict[str, dict]:
        conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=local_deployment.warehouse)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT id, doc FROM deyel_crm_account")
                return dict(cursor.fetchall())
        finally:
            conn.close()

    def settled() -> None:
        # The deployment's workers use the wall clock (the emulator's is not moved here): a change is in
        # an extraction window once the connection's settle margin has passed over its stamp.
        due = time.time() + DEFAULT_SETTLE_MS / 1000 + 1.5
        wait_for(lambda: time.time() > due, 30, "the changes to settle", interval=0.5)

    def cycle() -> dict[str, dict]:
        run = api.wait_for_run(DAG_ID, api.trigger(DAG_ID), timeout=600)
        assert run["state"] == "success", run
        mirrored = table()
        assert mirrored == {r["idObjectValue"]: r for r in hook.iter_instances(FORM)}
        return mirrored

    first = cycle()
    assert len(first) == len(store.all_ids(FORM))
    for instance_id in (3, 400):
        current = store.get(FORM, instance_id)
        store.update(
            FORM, instance_id, {"dsNotes": "e2e", "dtLastUpdate": current["dtLastUpdate"]}, partial=True
        )
    created, _ = store.create(FORM, {"dsCompany": "E2E", "cdCountry": "AR"})
    for instance_id in (5, 600):
        store.delete(FORM, instance_id)
    settled()
    second = cycle()
    assert "5" not in second and "600" not in second and str(created) in second
    assert second["3"]["dsNotes"] == "e2e"
    assert cycle() == second  # nothing new: the table does not move
