"""One extraction fanned out over tasks (issue 25): ``deyel_extract_group``'s plan, mapped read and commit.

The engine's steps (:mod:`deyel_provider.extract.fan_out`) under a concurrent writer and any paging, by
property; a read killed with SIGKILL and retried; a commit publishing the manifest last and again when
cleared; and the group in Airflow's own runs (``dag.test()``), watermark and all.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pendulum
import pytest

from deyel_provider.emulator import run_emulator
from tests.support.helpers import dagbag_class

FORM = "CRM_ACCOUNT"

GROUP_DAG = """
    import os

    import pendulum
    from airflow.sdk import DAG

    from deyel_provider.task_groups.extract import deyel_extract_group

    with DAG("fan_out", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
        deyel_extract_group(
            "accounts",
            form="CRM_ACCOUNT",
            output=os.environ["DEYEL_FAN_OUTPUT"] + "/accounts.jsonl",
            parts=4,
            start_from="2026-01-01T00:00:00Z",
            page_size=50,
        )
"""


@pytest.fixture
def group_dag(tmp_path, monkeypatch, airflow_db):
    folder = tmp_path / "dags"
    folder.mkdir()
    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {},
        },
        {
            "name": "fan-out-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(folder), "refresh_interval": 0},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    monkeypatch.setenv("DEYEL_FAN_OUTPUT", str(tmp_path / "lake"))
    (folder / "fan_out.py").write_text(textwrap.dedent(GROUP_DAG), encoding="utf-8")
    from deyel_provider.compat import AIRFLOW_VERSION

    if AIRFLOW_VERSION < (3, 1):
        import subprocess

        subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "reserialize", "-B", "fan-out-tests"],
            check=True,
            capture_output=True,
        )
    return dagbag_class()(dag_folder=str(folder / "fan_out.py")).get_dag("fan_out")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def big_emulator():
    with run_emulator(records=600) as running:
        yield running


@pytest.mark.dag
def test_the_group_publishes_every_instance_in_parts_with_one_token_and_moves_the_watermark(
    big_emulator, deyel_conn, group_dag, tmp_path
):
    deyel_conn(url=big_emulator.url, extra={"max_clock_skew_seconds": 86_400})
    moment = pendulum.datetime(2026, 1, 5, tz="UTC")
    run = group_dag.test(run_after=moment, logical_date=moment)
    assert run.state == "success"
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert set(tis) == {"accounts.plan", "accounts.read", "accounts.commit"}
    summary = tis["accounts.commit"].xcom_pull(task_ids="accounts.commit")
    lake = tmp_path / "lake"
    manifest = json.loads((lake / "accounts.jsonl.parts.json").read_text())
    names = [part["name"] for part in manifest["parts"]]
    assert names == [f"accounts.part-{n:05d}.jsonl" for n in range(4)]
    records = [r for name in names for r in lines(lake / name)]
    ids = [r["idObjectValue"] for r in records]
    assert len(ids) == len(set(ids)) == 600 == summary["records"] == manifest["records"]
    # The parts are about equal (the plan counts on the server's total header), each read by its own task.
    assert all(abs(p["records"] - 150) <= 6 for p in manifest["parts"]), manifest["parts"]
    assert [(t["number"], t["records"]) for t in summary["part_tasks"]] == [
        (n, p["records"]) for n, p in enumerate(manifest["parts"])
    ]
    assert sorted(os.listdir(lake)) == sorted([*names, "accounts.jsonl.parts.json"])  # no staging left
    assert summary["mode"] == "watermark" and summary["parts"] == [
        {"path": f"file://{lake / p['name']}", "records": p["records"], "bytes": p["bytes"]}
        for p in manifest["parts"]
    ]
    # Every task of the group shared one token.
    assert big_emulator.stats()["token_requests"] == 1

    # The watermark moved once, to the window's end: the next run reads only what changed since.
    store = big_emulator.state.store
    big_emulator.advance(60)
    fresh = {str(store.create(FORM, {"dsName": f"new {n}"})[0]) for n in range(3)}
    big_emulator.advance(60)
    moment = moment.add(days=1)
    run = group_dag.test(run_after=moment, logical_date=moment)
    assert run.state == "success"
    second = run.get_task_instances()[0].xcom_pull(task_ids="accounts.commit")
    assert second["window_start"] == summary["window_end"] and second["records"] == 3
    again = json.loads((lake / "accounts.jsonl.parts.json").read_text())
    assert {r["idObjectValue"] for part in again["parts"] for r in lines(lake / part["name"])} == fresh
    # A window of 3 instances, a response's worth, is one part: the plan cuts no slice under a response.
    assert [p["name"] for p in again["parts"]] == ["accounts.part-00000.jsonl"]
