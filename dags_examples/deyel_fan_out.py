"""Read a form in parallel: 20 DeyelOperator tasks, one page each, then add up what they read.

The shape that spreads over many workers (CeleryExecutor): every mapped task is a process of its own, on
whatever worker picks it up. With the connection's shared token cache the whole run still requests one
token. Needs a ``deyel_default`` connection.

It shows many calls at once, not a way to extract: pages by offset skip and repeat instances while someone
edits the form. To extract, use ``DeyelExtractOperator`` (time slices, ``max_workers`` in one task), or map
tasks over time windows of ``DeyelHook().iter_instances(form, start=..., end=...)``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from deyel_provider.operators.deyel import DeyelOperator

PAGES = 20
PAGE_SIZE = 50


def record_count(response):
    return len(response.json())


with DAG(
    dag_id="deyel_fan_out",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"form": "CRM_ACCOUNT"},
    max_active_tasks=PAGES,
    tags=["deyel", "example"],
):
    pages = DeyelOperator.partial(
        task_id="read_page",
        endpoint="/forms/{{ params.form }}/instances",
        response_filter=record_count,
    ).expand(query_params=[{"page": page, "pageSize": PAGE_SIZE} for page in range(1, PAGES + 1)])

    @task
    def total(counts: list[int], params=None) -> int:
        # DEYEL-DEMO marks the lines `make demo` echoes.
        records = sum(counts)
        print(f"DEYEL-DEMO: {params['form']}: {records} instances read by {len(counts)} parallel tasks")
        return records

    total(pages.output)
