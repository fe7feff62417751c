"""Write back to Deyel: CRM accounts, reshaped in a ``@task``, loaded into the ``ERP_CUSTOMER`` form.

``extract_accounts`` reads every CRM_ACCOUNT instance into a JSON Lines file; ``to_customers`` makes one
customer record per account (the fields ERP_CUSTOMER has, keyed ``cdCustomer = "CRM-<account id>"``) into
another file; ``load_customers`` upserts them: missing customers are created, changed ones updated, the rest
left alone. Run it twice: the second run writes nothing (``{"created": 0, "updated": 0, "unchanged": N}``).

Files go under ``$DEYEL_DEMO_OUTPUT/upsert`` (else ``/tmp/deyel-extract/upsert``). Needs a ``deyel_default``
connection (see ``deyel_api_call.py``); the emulator seeds both forms.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, task

from deyel_provider.operators.extract import DeyelExtractOperator
from deyel_provider.operators.upsert import DeyelUpsertOperator

OUTPUT = Path(os.environ.get("DEYEL_DEMO_OUTPUT", "/tmp/deyel-extract")).resolve().as_uri()  # noqa: S108
FOLDER = f"{OUTPUT}/upsert"

with DAG(
    dag_id="deyel_upsert",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["deyel", "example"],
):
    extract = DeyelExtractOperator(
        task_id="extract_accounts",
        form="CRM_ACCOUNT",
        output=f"{FOLDER}/accounts.jsonl",
        incremental_field=None,  # a full load: the target should mirror every account
        page_size=500,
    )

    @task
    def to_customers(extracted: dict) -> str:
        """One ERP customer per CRM account, as JSON Lines; returns the file's location (data stays out of
        XCom)."""
        target = ObjectStoragePath(f"{FOLDER}/customers.jsonl")
        with ObjectStoragePath(extracted["path"]).open("r", encoding="utf-8") as accounts:
            with target.open("w", encoding="utf-8") as customers:
                for line in iter(accounts.readline, ""):  # Airflow 3.0's file objects do not iterate
                    account = json.loads(line)
                    customer = {
                        "cdCustomer": f"CRM-{account['idObjectValue']}",
                        # A company name may hold a second line (a branch): the customer's name is the first.
                        "dsName": (account.get("dsCompany") or "(unnamed)").splitlines()[0],
                        "cdCountry": account.get("cdCountry"),
                        "qtEmployee": account.get("qtEmployee"),
                        "cbIsPartner": account.get("cbIsPartner"),
                        "dtOpening": account.get("dtOpening"),
                        "dsEmail": account.get("dsEmail"),
                    }
                    customers.write(json.dumps(customer, ensure_ascii=False) + "\n")
        return str(target)

    DeyelUpsertOperator(
        task_id="load_customers",
        form="ERP_CUSTOMER",
        source=to_customers(extract.output),
        key="cdCustomer",
        max_workers="auto",
        rejects=f"{FOLDER}/rejects.jsonl",
        max_rejects=0,
    )
