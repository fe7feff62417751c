"""Call the Deyel API from tasks: count the CRM accounts and read a sample page.

Needs a ``deyel_default`` connection (Host = base URL, Login = Client ID, Password = Client Secret), for
example ``AIRFLOW_CONN_DEYEL_DEFAULT='{"conn_type": "deyel", "host": "https://tenant.deyel.com",
"login": "...", "password": "..."}'``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from deyel_provider.operators.deyel import DeyelOperator


def total_count(response):
    """Deyel sends the number of matching instances in the X-Total-Count header (page-number paging)."""
    return int(response.headers["X-Total-Count"])


with DAG(
    dag_id="deyel_api_call",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"form": "CRM_ACCOUNT"},
    tags=["deyel", "example"],
):
    count = DeyelOperator(
        task_id="count_instances",
        endpoint="/forms/{{ params.form }}/instances",
        query_params={"pageSize": 1},
        response_filter=total_count,
    )
    sample = DeyelOperator(
        task_id="first_page",
        endpoint="/forms/{{ params.form }}/instances",
        query_params={"page": 1, "pageSize": 3},
    )

    @task
    def report(total: int, instances: list[dict], params=None) -> None:
        # DEYEL-DEMO marks the lines `make demo` echoes.
        print(f"DEYEL-DEMO: {params['form']} instances: {total}")
        print(f"DEYEL-DEMO: sample record: {instances[0]}")

    report(count.output, sample.output)
