"""Hourly partitioned extraction of CRM_ACCOUNT, and a consumer that reads exactly its partition's file
(Airflow 3.2+: asset partitions).

``deyel_partitioned_extract`` runs every hour for the hour before (``run_offset=-1``: the 06:00 run is the
partition ``2026-01-01T05``): its window is that hour, ``dtLastUpdate`` in ``[05:00, 06:00)``, whenever
the run starts (a late or repeated run reads the same hour), and no watermark is kept. It writes
``<output>/CRM_ACCOUNT/hourly/<partition key>.jsonl`` and emits the ``<output>/CRM_ACCOUNT/hourly`` Asset
with the partition key on the event.

``deyel_partitioned_consumer`` is scheduled with ``PartitionedAssetTimetable``: one run per partition the
extraction published, with the same key, reading that partition's file only.

``key_format="%Y-%m-%dT%H"`` keeps colons out of the file names. On Airflow 3.0 and 3.1 (no partitions)
this file defines no DAG. The output folder is ``$DEYEL_DEMO_OUTPUT``, else ``/tmp/deyel-extract``; needs a
``deyel_default`` connection (see ``deyel_api_call.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, ObjectStoragePath, task

from deyel_provider.operators.extract import DeyelExtractOperator

try:
    from airflow.sdk import CronPartitionTimetable, PartitionedAssetTimetable
except ImportError:  # Airflow 3.0 and 3.1: no asset partitions
    CronPartitionTimetable = PartitionedAssetTimetable = None

FORM = "CRM_ACCOUNT"
OUTPUT = Path(os.environ.get("DEYEL_DEMO_OUTPUT", "/tmp/deyel-extract")).resolve().as_uri()  # noqa: S108
HOURLY = Asset(f"{OUTPUT}/{FORM}/hourly")

if CronPartitionTimetable is not None:
    with DAG(
        dag_id="deyel_partitioned_extract",
        schedule=CronPartitionTimetable("0 * * * *", timezone="UTC", run_offset=-1, key_format="%Y-%m-%dT%H"),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["deyel", "example"],
    ):
        DeyelExtractOperator(
            task_id="extract_hour",
            form=FORM,
            # One file per partition: a rerun of a partition replaces its file.
            output=f"{OUTPUT}/{FORM}/hourly/{{{{ dag_run.partition_key }}}}.jsonl",
            format="jsonl",
            page_size=500,
            asset=HOURLY,
            # A run without a partition (triggered by hand) is an incremental run from here; a partitioned
            # run reads its hour and neither reads nor moves the watermark.
            start_from="2026-01-01T00:00:00Z",
        )

    with DAG(
        dag_id="deyel_partitioned_consumer",
        schedule=PartitionedAssetTimetable(assets=HOURLY),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["deyel", "example"],
    ):

        @task
        def read_partition(dag_run=None, triggering_asset_events=None) -> int:
            key = dag_run.partition_key
            # The events of this run's partition: each names the file it published (a rerun publishes the
            # same file again). Airflow 3.2's events do not carry their key: the file is then found by name.
            events = [
                event
                for event in (triggering_asset_events or {}).get(HOURLY, [])
                if getattr(event, "partition_key", None) == key
            ]
            path = ObjectStoragePath(events[-1].extra["path"] if events else f"{HOURLY.uri}/{key}.jsonl")
            with path.open("r", encoding="utf-8") as lines:
                # readline, not iteration: Airflow's file objects do not always iterate.
                count = sum(1 for _ in iter(lines.readline, ""))
            # DEYEL-DEMO marks the lines `make demo` echoes.
            print(f"DEYEL-DEMO: partition {key}: read {path}: {count} records")
            return count

        read_partition()
