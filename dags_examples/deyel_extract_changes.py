"""Extract what changed in CRM_ACCOUNT since the last run, on a plain ``@daily`` schedule.

Airflow 3's ``"@daily"`` is a ``CronTriggerTimetable``: its runs (like manual and asset-triggered ones) have
no data interval. ``DeyelExtractOperator`` then reads from a watermark, the end of the last published window
kept in the asset's state, to the Deyel server's present, and moves the watermark only once the file is
published: every change lands in one run's file, whenever and however often the DAG runs. The first run
starts at ``start_from``. Each run writes ``<output>/CRM_ACCOUNT/changes/<run_after>.jsonl``.

The output folder is ``$DEYEL_DEMO_OUTPUT`` (``make demo`` sets it), else ``/tmp/deyel-extract``. Needs a
``deyel_default`` connection (see ``deyel_api_call.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset

from deyel_provider.operators.extract import DeyelExtractOperator

FORM = "CRM_ACCOUNT"
OUTPUT = Path(os.environ.get("DEYEL_DEMO_OUTPUT", "/tmp/deyel-extract")).resolve().as_uri()  # noqa: S108
CHANGES = Asset(f"{OUTPUT}/{FORM}/changes")

with DAG(
    dag_id="deyel_extract_changes",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["deyel", "example"],
):
    DeyelExtractOperator(
        task_id="extract_changes",
        form=FORM,
        # Named after when the run was due: manual and asset-triggered runs may have no logical date.
        output=f"{OUTPUT}/{FORM}/changes/{{{{ dag_run.run_after | ts_nodash }}}}.jsonl",
        incremental_field="dtLastUpdate",
        start_from="2026-01-01T00:00:00Z",
        asset=CHANGES,
        max_workers="auto",
    )
