"""An approval flow: create a purchase request in Deyel, wait (deferred) until someone approves it, go on.

The wait holds no worker slot: ``DeyelInstanceSensor(deferrable=True)`` probes once, then hands the wait to
the triggerer (``DeyelInstanceTrigger``), which asks Deyel every ``poke_interval`` seconds whether the
request's ``cdStatus`` is ``APPROVED`` and resumes the task with the matching instance. Approve it in Deyel
(or through the API: a PATCH of ``cdStatus`` with the ``dtLastUpdate`` read before).

Needs a ``deyel_default`` connection (see ``deyel_api_call.py``) and a ``PURCHASE_REQUEST`` form with a
``cdStatus`` field (the emulator creates a form on its first POST). ``DEYEL_DEMO_POKE_INTERVAL`` (seconds,
default 60) sets how often the triggerer asks.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

from deyel_provider.operators.deyel import DeyelOperator
from deyel_provider.sensors.deyel import DeyelInstanceSensor

POKE_INTERVAL = float(os.environ.get("DEYEL_DEMO_POKE_INTERVAL", "60"))


def created_id(response) -> str:
    """The id of the created instance, from the POST's answer."""
    return response.json()["idObjectValue"]


with DAG(
    dag_id="deyel_approval",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"form": "PURCHASE_REQUEST", "item": "Laptop for the new analyst"},
    tags=["deyel", "example"],
):
    create = DeyelOperator(
        task_id="create_request",
        method="POST",
        endpoint="/forms/{{ params.form }}/instances",
        json={"cdStatus": "PENDING", "dsItem": "{{ params.item }}", "qtAmount": 1200},
        response_filter=created_id,
    )
    approved = DeyelInstanceSensor(
        task_id="wait_for_approval",
        form="{{ params.form }}",
        search="idObjectValue=eq:{{ ti.xcom_pull(task_ids='create_request') }},cdStatus=eq:APPROVED",
        fields=["dsItem", "qtAmount", "cdStatus"],
        deferrable=True,
        poke_interval=POKE_INTERVAL,
        timeout=7 * 24 * 3600,
    )

    @task
    def order(approval: dict) -> str:
        request = approval["instances"][0]
        # DEYEL-DEMO marks the lines `make demo` echoes.
        print(
            f"DEYEL-DEMO: request {request['idObjectValue']} ({request['dsItem']}) is {request['cdStatus']}"
        )
        return request["idObjectValue"]

    create >> approved
    order(approved.output)
