"""Test-only DAG: prints the client secret, a token and an Authorization header on purpose.

The e2e tests read this task's log through the REST API: Airflow's masker must have turned each of them
into ``***``, which proves the provider registered them with ``mask_secret`` as soon as it knew them.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

with DAG(
    dag_id="deyel_e2e_secrets",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["deyel", "e2e"],
):

    @task
    def leak_on_purpose() -> str:
        from deyel_provider.hooks.deyel import DeyelHook

        hook = DeyelHook()
        token = hook.get_token()
        print(f"E2E-SECRET client secret: {hook.config.client_secret}")
        print(f"E2E-TOKEN access token: {token}")
        print(f"E2E-HEADER Authorization: Bearer {token}")
        hook.request("GET", "/forms/CRM_ACCOUNT/instances", params={"pageSize": 1})
        # Something harmless goes to XCom; the test scans every XCom for tokens anyway.
        return "done"

    leak_on_purpose()
