"""Event-driven extraction: run when purchase requests change in Deyel, and extract exactly what changed.

An ``AssetWatcher`` runs ``DeyelChangeTrigger`` in the triggerer: it polls the form (one cheap GET) and, when
instances changed after its watermark, emits an asset event whose ``extra`` is the window it covers
(``window_start``, ``window_end``, epoch ms, on ``dtLastUpdate``). This DAG is scheduled on that asset; its
task extracts each event's window into ``<output>/PURCHASE_REQUEST/changes/<start>-<end>.jsonl``.
Consecutive windows meet end to start, so every change lands in one file.

The output folder is ``$DEYEL_DEMO_OUTPUT``, else ``/tmp/deyel-extract``. Needs a ``deyel_default``
connection (see ``deyel_api_call.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from deyel_provider.extract.run import extract
from deyel_provider.extract.spec import OutputSpec, ReadSpec, WindowSpec
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.triggers.deyel import DeyelChangeTrigger

FORM = "PURCHASE_REQUEST"
OUTPUT = Path(os.environ.get("DEYEL_DEMO_OUTPUT", "/tmp/deyel-extract")).resolve().as_uri()  # noqa: S108
REQUESTS_CHANGED = Asset(
    "deyel_purchase_requests_changed",
    watchers=[
        AssetWatcher(
            name="deyel_purchase_requests_watcher",
            trigger=DeyelChangeTrigger(form=FORM, poll_interval=60),
        )
    ],
)

with DAG(
    dag_id="deyel_on_change",
    schedule=[REQUESTS_CHANGED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["deyel", "example"],
):

    @task
    def extract_windows(triggering_asset_events=None) -> list[dict]:
        written = []
        # One run may batch several events (the DAG was paused, or busy): one file per window.
        for event in triggering_asset_events.get(REQUESTS_CHANGED, []) if triggering_asset_events else []:
            window = event.extra
            start, end = window["window_start"], window["window_end"]
            # The extraction engine: every instance of the window exactly once, published atomically.
            result = extract(
                DeyelHook(),
                ReadSpec(window["form"], search=window["search"] or None, field=window["field"]),
                OutputSpec(f"{OUTPUT}/{window['form']}/changes/{start}-{end}.jsonl"),
                WindowSpec(start, end),
            )
            # DEYEL-DEMO marks the lines `make demo` echoes.
            print(f"DEYEL-DEMO: {result.records} changed {window['form']} instances in [{start}, {end})")
            written.append(result.as_dict())
        return written

    extract_windows()
