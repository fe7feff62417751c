"""Daily incremental extraction of CRM_ACCOUNT into local JSON Lines files, and a DAG that runs on each file.

``deyel_extract_daily`` writes the instances changed during each day (``dtLastUpdate`` in the run's data
interval) to ``<output>/CRM_ACCOUNT/<day>.jsonl`` and emits the ``<output>/CRM_ACCOUNT`` Asset;
``deyel_extract_consumer`` is scheduled on that Asset, reads the file each triggering event names (a run
may batch several) and logs their counts.

The output folder is ``$DEYEL_DEMO_OUTPUT`` (``make demo`` sets it), else ``/tmp/deyel-extract``; in
production use any ``ObjectStoragePath`` URL, e.g. ``s3://lake/deyel`` with ``output_conn_id``.
Needs a ``deyel_default`` connection (see ``deyel_api_call.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, ObjectStoragePath, task

# Data intervals (start and end of each day) need an interval timetable: Airflow 3's "@daily" triggers
# at midnight with an empty interval.
try:
    from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable
except ImportError:  # Airflow 3.0 and 3.1 keep timetables in the core package
    from airflow.timetables.interval import CronDataIntervalTimetable

from deyel_provider.operators.extract import DeyelExtractOperator

FORM = "CRM_ACCOUNT"
OUTPUT = Path(os.environ.get("DEYEL_DEMO_OUTPUT", "/tmp/deyel-extract")).resolve().as_uri()  # noqa: S108
CRM_ACCOUNTS = Asset(f"{OUTPUT}/{FORM}")

with DAG(
    dag_id="deyel_extract_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["deyel", "example"],
):
    DeyelExtractOperator(
        task_id="extract_accounts",
        form=FORM,
        # Named after the day the data covers: with data intervals, Airflow 3's logical date (ds) is the end.
        output=f"{OUTPUT}/{FORM}/{{{{ data_interval_start | ds }}}}.jsonl",
        incremental_field="dtLastUpdate",
        format="jsonl",
        page_size=500,
        asset=CRM_ACCOUNTS,
    )


with DAG(
    dag_id="deyel_extract_consumer",
    schedule=[CRM_ACCOUNTS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["deyel", "example"],
):

    @task(inlets=[CRM_ACCOUNTS])
    def count_records(triggering_asset_events=None, inlet_events=None) -> int:
        # The events that started this run: one per extraction that finished since the last run. Several
        # extractions (a backfill, a paused consumer) make one run with several events: read every file.
        events = list(triggering_asset_events.get(CRM_ACCOUNTS, [])) if triggering_asset_events else []
        if not events:
            # A manual run (`airflow dags test`) has no triggering event: read the latest extraction's file.
            events = list(inlet_events[CRM_ACCOUNTS][-1:])
        total = 0
        for event in events:
            path = ObjectStoragePath(event.extra["path"])
            with path.open("r", encoding="utf-8") as lines:
                first = lines.readline()
                # readline, not iteration: Airflow 3.0's file objects do not iterate.
                count = (1 if first else 0) + sum(1 for _ in iter(lines.readline, ""))
            total += count
            # DEYEL-DEMO marks the lines `make demo` echoes.
            reported = event.extra["records"]
            print(f"DEYEL-DEMO: consumer read {path}: {count} records (the extraction reported {reported})")
            if first:
                print(f"DEYEL-DEMO: sample record: {json.dumps(json.loads(first), ensure_ascii=False)[:300]}")
        return total

    count_records()
