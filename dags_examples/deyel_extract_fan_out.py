"""Extract CRM_ACCOUNT with many workers: one extraction fanned out over mapped tasks, published as one.

``deyel_extract_group`` makes three tasks: ``accounts.plan`` chooses the run's window (a watermark here:
``schedule="@daily"`` has no data interval) and cuts it into at most ``PARTS`` slices of about equal
instance counts; ``accounts.read``, mapped over the slices, writes each to a staged part (on whatever
worker takes it: CeleryExecutor spreads them); ``accounts.commit`` checks every part and publishes them as
``accounts.part-00000.jsonl``... with the manifest ``accounts.jsonl.parts.json`` last, emits one Asset event
and moves the watermark once. A retried read rewrites its own part only. ``report`` reads the manifest and
says which worker wrote each part.

It replaces the former ``deyel_fan_out`` example (mapped ``DeyelOperator`` calls reading pages by offset,
which skip and repeat instances while the form changes) as the way to spread an extraction. The output folder
is ``$DEYEL_DEMO_OUTPUT`` (``make demo`` sets it), else ``/tmp/deyel-extract``. Needs a ``deyel_default``
connection (see ``deyel_api_call.py``); with a shared token cache (``file`` on one host, ``redis`` across
hosts) the whole run makes one token POST.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, task

from deyel_provider.task_groups.extract import deyel_extract_group

FORM = "CRM_ACCOUNT"
PARTS = 8
FOLDER = Path(os.environ.get("DEYEL_DEMO_OUTPUT", "/tmp/deyel-extract")).resolve() / FORM / "fan_out"  # noqa: S108
ACCOUNTS = Asset(FOLDER.as_uri())

with DAG(
    dag_id="deyel_extract_fan_out",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["deyel", "example"],
):
    group = deyel_extract_group(
        "accounts",
        form=FORM,
        # One output per run, named after when it was due; its parts are named after it.
        output=f"{FOLDER.as_uri()}/{{{{ dag_run.run_after | ts_nodash }}}}.jsonl",
        parts=PARTS,
        start_from="2026-01-01T00:00:00Z",
        asset=ACCOUNTS,
        page_size=100,
        max_workers=2,  # per part: slices in flight inside each read task
    )

    @task
    def report(summary: dict) -> int:
        # DEYEL-DEMO marks the lines `make demo` echoes.
        for part in summary["part_tasks"]:
            worker = f"{part['host']}:{part['pid']}"
            print(f"DEYEL-DEMO: part {part['number']}: {part['records']} records by {worker}")
        # Readers go by the manifest (or the event's "parts"), written last: never by a glob of the folder.
        listed = json.loads(Path(summary["manifest"].removeprefix("file://")).read_text(encoding="utf-8"))
        print(f"DEYEL-DEMO: {FORM}: {listed['records']} instances in {len(listed['parts'])} parts")
        return int(listed["records"])

    report(group.children["accounts.commit"].output)
