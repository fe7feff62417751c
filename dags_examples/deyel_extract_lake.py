"""Daily extraction of CRM_ACCOUNT as a data lake wants it: typed Parquet, zstd, parts, no file on empty days.

``deyel_extract_lake`` writes the instances changed during each day to
``<output>/lake/CRM_ACCOUNT/<day>.part-00000.parquet`` (more parts past ``max_file_bytes``), with the column
types declared in ``schema`` (the other fields' types are inferred), and emits the Asset
``<output>/lake/CRM_ACCOUNT`` with the list of parts. A day without changes writes nothing and emits no
event (``on_empty="skip"``), so nothing scheduled on the Asset runs for it.

The output folder is ``$DEYEL_DEMO_OUTPUT``, else ``/tmp/deyel-extract``. Needs the ``[parquet]`` extra and a
``deyel_default`` connection (see ``deyel_api_call.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset

try:
    from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable
except ImportError:  # Airflow 3.0 and 3.1 keep timetables in the core package
    from airflow.timetables.interval import CronDataIntervalTimetable

from deyel_provider.operators.extract import DeyelExtractOperator

FORM = "CRM_ACCOUNT"
OUTPUT = Path(os.environ.get("DEYEL_DEMO_OUTPUT", "/tmp/deyel-extract")).resolve().as_uri()  # noqa: S108
LAKE = Asset(f"{OUTPUT}/lake/{FORM}")

with DAG(
    dag_id="deyel_extract_lake",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["deyel", "example"],
):
    DeyelExtractOperator(
        task_id="extract_accounts_parquet",
        form=FORM,
        output=f"{OUTPUT}/lake/{FORM}/{{{{ data_interval_start | ds }}}}.parquet",
        incremental_field="dtLastUpdate",
        format="parquet",
        compression="zstd",
        # Declared types are kept whatever a page holds (a value that does not fit fails the task, naming
        # it); the other fields are typed from the first page that holds them.
        schema={
            "dtLastUpdate": "timestamp",
            "dtOpening": "timestamp",
            "qtEmployee": "int64",
            "nuRevenue": "float64",
            "cbIsPartner": "bool",
            "lsAddress": "json",
        },
        max_file_bytes=256 * 2**20,
        on_empty="skip",
        page_size=500,
        asset=LAKE,
    )
