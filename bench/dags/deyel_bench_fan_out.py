"""The DAGs bench/fan_out.py times on a Celery deployment: one extraction of CRM_ACCOUNT, three ways.

``deyel_bench_one_task_1`` and ``deyel_bench_one_task_8``: one ``DeyelExtractOperator`` with ``max_workers``
1 and 8; ``deyel_bench_group``: ``deyel_extract_group`` with ``parts`` mapped reads (one worker each). Every
run reads the whole form from a watermark of its own (``watermark_key`` names the run), so each round reads
the same instances; ``schedule=None``: only the bench's triggers make runs. Settings come from the
environment the bench gives every component: ``DEYEL_BENCH_PAGE_SIZE``, ``DEYEL_BENCH_PARTS`` and the output
folder ``DEYEL_DEMO_OUTPUT``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset

from deyel_provider.operators.extract import DeyelExtractOperator
from deyel_provider.task_groups.extract import deyel_extract_group

FORM = "CRM_ACCOUNT"
PAGE_SIZE = int(os.environ.get("DEYEL_BENCH_PAGE_SIZE", "1000"))
PARTS = int(os.environ.get("DEYEL_BENCH_PARTS", "8"))
FOLDER = Path(os.environ.get("DEYEL_DEMO_OUTPUT", "/tmp/deyel-bench")).resolve() / "bench"  # noqa: S108
START_FROM = "2026-01-01T00:00:00Z"
#: Each run's own watermark: every round reads the whole form again.
WATERMARK_KEY = "bench-{{ run_id }}"


def output(name: str) -> str:
    return f"{(FOLDER / name).as_uri()}/{{{{ dag_run.run_after | ts_nodash }}}}.jsonl"


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["deyel", "bench"],
    )


for workers in (1, 8):
    with _dag(f"deyel_bench_one_task_{workers}"):
        DeyelExtractOperator(
            task_id="extract",
            form=FORM,
            output=output(f"one_task_{workers}"),
            start_from=START_FROM,
            watermark_key=WATERMARK_KEY,
            asset=Asset((FOLDER / f"one_task_{workers}").as_uri()),
            page_size=PAGE_SIZE,
            max_workers=workers,
        )

with _dag("deyel_bench_group"):
    deyel_extract_group(
        "accounts",
        form=FORM,
        output=output("group"),
        parts=PARTS,
        start_from=START_FROM,
        watermark_key=WATERMARK_KEY,
        asset=Asset((FOLDER / "group").as_uri()),
        page_size=PAGE_SIZE,
        max_workers=1,
    )
