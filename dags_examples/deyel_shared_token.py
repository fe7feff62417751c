"""One token for a whole DAG run: a token task hands it, encrypted, to 20 API calls through XCom.

With the connection's shared ``cache`` (``file`` by default, ``redis`` across hosts) the tasks would
already share one token; the XCom pattern also covers tasks that cannot reach a shared cache. The XCom value
is encrypted with a key derived from the connection's client secret: it is useless without the connection.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from deyel_provider.operators.deyel import DeyelOperator, DeyelTokenOperator

PAGES = 20

with DAG(
    dag_id="deyel_shared_token",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["deyel", "example"],
):
    get_token = DeyelTokenOperator(task_id="get_token")
    pages = [
        DeyelOperator(
            task_id=f"page_{page}",
            endpoint="/forms/CRM_ACCOUNT/instances",
            query_params={"page": page, "pageSize": 2},
            token="{{ ti.xcom_pull('get_token') }}",  # noqa: S106  (a template, not a secret)
            response_filter=lambda response: len(response.json()),
        )
        for page in range(1, PAGES + 1)
    ]

    @task
    def report(counts: list[int]) -> None:
        print(f"DEYEL-DEMO: {len(counts)} pages read with one token, {sum(counts)} instances")

    get_token >> pages
    report([p.output for p in pages])
