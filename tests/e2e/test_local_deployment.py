"""A real single-host Airflow (api-server, scheduler, dag-processor, LocalExecutor) runs the example DAGs.

Everything goes through the public REST API, as a user's tooling would: trigger, wait, read task states,
task logs and XComs. The emulator's counters and issued tokens are the ground truth.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading

import pytest

from deyel_provider.hooks.deyel import DeyelHook
from tests.e2e.conftest import EXAMPLE_DAGS, FILE_CACHE_EXTRAS, leaked
from tests.support.helpers import CLIENT_SECRET, connection_json

pytestmark = pytest.mark.e2e

SECRETS_DAG = "deyel_e2e_secrets"
# The extraction runs for the day its data is in: the emulator's records were all updated on 2026-01-01.
EXTRACT_DAG, EXTRACT_AT, EXTRACT_FILE = (
    "deyel_extract_daily",
    "2026-01-02T00:00:00Z",
    "CRM_ACCOUNT/2026-01-01.jsonl",
)
# Extractions of a data interval: triggered for that day (a run without a logical date has no interval).
INTERVAL_DAGS = {EXTRACT_DAG, "deyel_extract_lake"}
# Scheduled on the extraction's Asset: started by its event, not triggered.
ASSET_SCHEDULED = {"deyel_extract_consumer"}
# Runs only on a partition's event, which a manual run of its producer does not carry (no partition key):
# its run is tested with the partition set as the scheduler sets it (test_example_dags.py).
PARTITION_SCHEDULED = {"deyel_partitioned_consumer"}


@functools.cache
def example_dag_ids() -> tuple[str, ...]:
    """The example DAGs' ids, from a DagBag of their folder (parsed once: each parse imports every file)."""
    from airflow.dag_processing.dagbag import DagBag

    return tuple(sorted(set(DagBag(dag_folder=str(EXAMPLE_DAGS)).dags) - PARTITION_SCHEDULED))


def approve_purchase_requests(emulator, deployment, stop: threading.Event) -> None:
    """The approver of the approval example: a person in Deyel, approving through the API each purchase
    request the DAG creates (its deferred sensor, in the triggerer, waits for that). It shares the
    deployment's token cache, so the run still makes one token POST."""
    os.environ["AIRFLOW_CONN_DEYEL_E2E_APPROVER"] = connection_json(
        emulator.url, **FILE_CACHE_EXTRAS, cache_dir=str(deployment.home / "deyel-token-cache")
    )
    hook = DeyelHook("deyel_e2e_approver")
    while not stop.wait(0.5):
        for request in hook.iter_instances("PURCHASE_REQUEST", search="cdStatus=eq:PENDING"):
            hook.update_instance(
                "PURCHASE_REQUEST",
                request["idObjectValue"],
                {"cdStatus": "APPROVED", "dtLastUpdate": request["dtLastUpdate"]},
            )


@pytest.fixture(scope="module")
def finished_runs(local_deployment, local_emulator):
    """Trigger every example DAG and the secrets DAG at once, and wait for all of them."""
    api = local_deployment.api()
    stop = threading.Event()
    approver = threading.Thread(
        target=approve_purchase_requests, args=(local_emulator, local_deployment, stop), daemon=True
    )
    approver.start()
    dag_ids = [*example_dag_ids(), SECRETS_DAG]
    runs = {}
    # The approver stops whatever happens: left running after a failed wait, it outlived the deployment's
    # emulator and its exception failed whichever later test was running then.
    try:
        for dag_id in dag_ids:
            api.wait_for_dag(dag_id)
            if dag_id in ASSET_SCHEDULED:
                api.unpause(dag_id)
            else:
                logical_date = EXTRACT_AT if dag_id in INTERVAL_DAGS else None
                runs[dag_id] = api.trigger(dag_id, logical_date=logical_date)
        finished = {dag_id: api.wait_for_run(dag_id, run_id) for dag_id, run_id in runs.items()}
        for dag_id in ASSET_SCHEDULED:
            finished[dag_id] = api.wait_for_run(dag_id, api.wait_for_any_run(dag_id))
    finally:
        stop.set()
        approver.join(30)
    assert set(finished) == set(dag_ids)
    return finished


def test_every_dag_run_and_task_succeeds(local_deployment, finished_runs):
    api = local_deployment.api()
    assert {*example_dag_ids(), SECRETS_DAG} <= set(finished_runs)
    for dag_id, run in finished_runs.items():
        states = {
            (ti["task_id"], ti["map_index"]): ti["state"]
            for ti in api.task_instances(dag_id, run["dag_run_id"])
        }
        assert states, dag_id
        assert set(states.values()) == {"success"}, (dag_id, states)
        assert run["state"] == "success", dag_id


def test_task_logs_show_stars_where_the_secret_and_token_were(
    local_deployment, local_emulator, finished_runs
):
    api = local_deployment.api()
    run_id = finished_runs[SECRETS_DAG]["dag_run_id"]
    log = api.task_log(SECRETS_DAG, run_id, "leak_on_purpose")
    tokens = local_emulator.issued_tokens()["tokens"]
    assert tokens
    # The lines were printed with the values in them; the masker left only stars. Airflow's own log
    # processor also rewrites anything JWT-shaped to `eyJ***` before the secrets masker sees it, so a token
    # shows as either form; the leak scan below is what proves no token survived in clear.
    assert "E2E-SECRET client secret: ***" in log
    assert re.search(r"E2E-TOKEN access token: (eyJ)?\*\*\*\"", log)
    assert re.search(r"E2E-HEADER Authorization: Bearer (eyJ)?\*\*\*\"", log)
    assert leaked(log, [CLIENT_SECRET, *tokens]) == []


def test_no_log_of_any_task_holds_a_secret_or_token(local_deployment, local_emulator, finished_runs):
    api = local_deployment.api()
    secrets = [CLIENT_SECRET, *local_emulator.issued_tokens()["tokens"]]
    logs_read = 0
    for dag_id, run in finished_runs.items():
        for ti in api.task_instances(dag_id, run["dag_run_id"]):
            log = api.task_log(dag_id, run["dag_run_id"], ti["task_id"], ti["try_number"], ti["map_index"])
            assert "::group::" in log  # a real log came back, not an error page
            assert leaked(log, secrets) == [], (dag_id, ti["task_id"])
            logs_read += 1
    assert logs_read >= len(finished_runs)


def test_no_xcom_holds_a_token_in_clear(local_deployment, local_emulator, finished_runs):
    api = local_deployment.api()
    secrets = [CLIENT_SECRET, *local_emulator.issued_tokens()["tokens"]]
    xcoms = []
    for dag_id, run in finished_runs.items():
        for task_id in {ti["task_id"] for ti in api.task_instances(dag_id, run["dag_run_id"])}:
            xcoms.extend(api.xcom_entries(dag_id, run["dag_run_id"], task_id))
    # The example DAGs return results, so the scan has something to look at.
    assert any(entry["task_id"] == "count_instances" for entry in xcoms)
    assert leaked(xcoms, secrets) == []


def test_the_whole_run_requests_one_token(local_emulator, finished_runs):
    stats = local_emulator.stats()
    print(f"emulator counters: {stats}")  # shown by `make e2e PYTEST_ARGS=-rP`
    assert stats["token_failures"] == 0
    assert stats["api_unauthorized"] == 0
    # With `cache: file` every task process on this host shares one token.
    assert stats["token_requests"] == 1


def test_the_extraction_file_holds_every_record(local_deployment, finished_runs):
    from tests.e2e.conftest import RECORDS

    path = local_deployment.output_dir / EXTRACT_FILE
    ids = [json.loads(line)["idObjectValue"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert sorted(map(int, ids)) == list(range(1, RECORDS + 1))
    # No temporary object of the atomic publish was left beside it. (The scheduler may also have run the
    # latest daily interval when the DAG was unpaused: that file is there too, empty of records.)
    assert not [p.name for p in path.parent.iterdir() if ".tmp-" in p.name]
