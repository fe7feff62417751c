"""Watermarks bound to their owner and their run, and authenticated (issue 20, findings 1 to 3).

Through ``dag.test()`` where Airflow's own run state matters (clearing an older run, two DAGs under one
folder, a task mapped over two tenants): the DAG files are written to a folder of their own, registered as
a DAG bundle, and run against the emulator, whose clock is moved forward instead of waited on. Planted values
go through the operator with a stand-in for Airflow 3.3's state stores (``get``/``set`` by asset and key).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.sdk import Asset

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelClockSkewError, DeyelConfigError, DeyelWatermarkError
from deyel_provider.extract.watermark import (
    HISTORY,
    MAX_MS,
    RESET_CONF,
    Watermark,
    WatermarkSigner,
    Window,
    legacy_key,
    watermark_key,
)
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.extract import DeyelExtractOperator
from tests.support.dag_bundles import dag_bundle
from tests.support.helpers import ByAsset, outlet_events
from tests.support.servers import StandInServer

FORM = "CRM_ACCOUNT"
START_FROM = "2026-01-01T00:00:00Z"
#: Far enough that an edit lies in the past of the next run whatever settle margin the connection has.
STEP_S = 120


def edit(instance_id: str, conn_id: str = "deyel_default") -> None:
    hook = DeyelHook(conn_id)
    current = hook.get_instance(FORM, instance_id)
    hook.update_instance(FORM, instance_id, {"dsNotes": "changed", "dtLastUpdate": current["dtLastUpdate"]})


def ids_in(path: str | Path) -> list[str]:
    lines = Path(str(path).removeprefix("file://")).read_text(encoding="utf-8").splitlines()
    return sorted(json.loads(line)["idObjectValue"] for line in lines)


# -- dag.test(): Airflow's own runs, clears and mapped tasks ---------------------------------------------


@pytest.fixture
def deyel_conn(deyel_conn):
    """The suite's connections, trusting a server Date up to a day from the worker's clock: these tests move
    emulators' clocks forward (``advance``) instead of waiting, tenants' clocks apart from each other."""

    def define(conn_id: str = "deyel_default", **fields):
        extra = {"max_clock_skew_seconds": 86_400, **fields.pop("extra", {})}
        return deyel_conn(conn_id, extra=extra, **fields)

    define()
    return define


@pytest.fixture
def dag_files(tmp_path, monkeypatch, airflow_db):
    """Write DAG files to a bundle of their own; returns ``load(name, source) -> DAG``."""
    load = dag_bundle(tmp_path / "dags", "watermark-tests", monkeypatch)
    monkeypatch.setenv("DEYEL_WM_OUTPUT", str(tmp_path / "lake"))
    return load


DAG_SOURCE = """
    import os

    import pendulum
    from airflow.sdk import DAG

    from deyel_provider.operators.extract import DeyelExtractOperator

    START = pendulum.datetime(2026, 1, 1, tz="UTC")

    with DAG("{dag_id}", schedule="@daily", start_date=START, catchup=False):
        DeyelExtractOperator(
            task_id="extract",
            form="CRM_ACCOUNT",
            output=os.environ["DEYEL_WM_OUTPUT"] + "/{folder}/{{{{ dag.dag_id }}}}-{{{{ run_id }}}}.jsonl",
            start_from="2026-01-01T00:00:00Z",
        )
"""


def run_day(dag, day: int, task_id: str = "extract") -> list[dict]:
    """One run of ``dag`` (``run_after`` = its logical date: the same day again is a clear of that run)."""
    moment = pendulum.datetime(2026, 1, day, tz="UTC")
    dag_run = dag.test(run_after=moment, logical_date=moment)
    assert dag_run.state == "success"
    tis = sorted(
        (ti for ti in dag_run.get_task_instances() if ti.task_id == task_id), key=lambda ti: ti.map_index
    )
    return [ti.xcom_pull(task_ids=task_id, map_indexes=ti.map_index) for ti in tis]


@pytest.mark.dag
def test_clearing_an_older_run_reads_its_own_window_again(emulator, deyel_conn, dag_files):
    """Finding 1: runs A, B, C publish, one change in B's window; B is cleared. Before: B read from C's end
    and rewrote its file empty (the change in no file). Now B reads exactly its recorded window."""
    dag = dag_files("wm_clear", DAG_SOURCE.format(dag_id="wm_clear", folder="clear"))
    emulator.advance(STEP_S)
    (a,) = run_day(dag, 2)
    assert a["records"] == 50
    emulator.advance(STEP_S)
    edit("7")
    emulator.advance(STEP_S)
    (b,) = run_day(dag, 3)
    assert ids_in(b["path"]) == ["7"]
    emulator.advance(STEP_S)
    (c,) = run_day(dag, 4)
    assert c["records"] == 0 and c["window_start"] == b["window_end"]
    emulator.advance(STEP_S)

    (b_again,) = run_day(dag, 3)  # dag.test() on B's run_after and logical date: B cleared and run again
    assert (b_again["window_start"], b_again["window_end"]) == (b["window_start"], b["window_end"])
    assert b_again["path"] == b["path"] and ids_in(b["path"]) == ["7"]
    (a_again,) = run_day(dag, 2)  # the oldest one too: its window, less the instance edited since
    assert (a_again["window_start"], a_again["window_end"]) == (a["window_start"], a["window_end"])
    assert a_again["records"] == 49 and "7" not in ids_in(a["path"])

    edit("21")
    emulator.advance(STEP_S)
    (d,) = run_day(dag, 5)  # the clears did not move the watermark back
    assert d["window_start"] == c["window_end"] and ids_in(d["path"]) == ["21"]


@pytest.mark.dag
def test_two_dags_under_one_folder_each_get_every_change(emulator, deyel_conn, dag_files):
    """Finding 2: two DAGs writing under one folder (one asset) each keep their own watermark. Before, the
    second DAG's first run started at the first DAG's end (0 records) and each lost the other's changes."""
    first = dag_files("wm_two_a", DAG_SOURCE.format(dag_id="wm_two_a", folder="shared"))
    second = dag_files("wm_two_b", DAG_SOURCE.format(dag_id="wm_two_b", folder="shared"))
    emulator.advance(STEP_S)
    (a1,) = run_day(first, 2)
    assert a1["records"] == 50
    emulator.advance(STEP_S)
    edit("7")
    emulator.advance(STEP_S)
    (a2,) = run_day(first, 3)
    assert ids_in(a2["path"]) == ["7"]

    (b1,) = run_day(second, 3)  # its first run starts at start_from, not at the other DAG's end
    assert b1["window_start"] == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert b1["records"] == 50
    edit("21")
    emulator.advance(STEP_S)
    (b2,) = run_day(second, 4)
    (a3,) = run_day(first, 4)
    assert ids_in(b2["path"]) == ["21"] and ids_in(a3["path"]) == ["21"]
    assert Path(a3["path"]).parent == Path(b2["path"]).parent


MAPPED_SOURCE = """
    import os

    import pendulum
    from airflow.sdk import DAG

    from deyel_provider.operators.extract import DeyelExtractOperator

    START = pendulum.datetime(2026, 1, 1, tz="UTC")

    with DAG("wm_mapped", schedule="@daily", start_date=START, catchup=False):
        DeyelExtractOperator.partial(
            task_id="extract",
            form="CRM_ACCOUNT",
            output=os.environ["DEYEL_WM_OUTPUT"] + "/mapped/{{ ti.map_index }}-{{ run_id }}.jsonl",
            start_from="2026-01-01T00:00:00Z",
        ).expand(deyel_conn_id=["deyel_default", "deyel_tenant_b"])
"""


@pytest.mark.dag
def test_a_task_mapped_over_two_tenants_loses_no_change(emulator, deyel_conn, dag_files):
    """Finding 2: ``.expand(deyel_conn_id=[a, b])``: each tenant keeps its own watermark, its windows on its
    own server's clock. Before, both instances shared one: run in parallel, the one publishing last moved
    it past the other's present (the other's changes in between in no file); run one after the other (as
    ``dag.test()`` does), the second took the first's window as its own, on the other server's clock: with
    the clocks ten minutes apart, a window in one server's future (the run failed) or ending ten minutes
    in its past (its recent changes not in its file)."""
    emulator.advance(600)  # tenant A's clock ten minutes ahead of tenant B's
    with run_emulator(records=50) as tenant_b:
        deyel_conn("deyel_tenant_b", url=tenant_b.url)
        dag = dag_files("wm_mapped", MAPPED_SOURCE)

        def advance() -> None:
            emulator.advance(STEP_S)
            tenant_b.advance(STEP_S)

        advance()
        first = run_day(dag, 2)
        assert [s["records"] for s in first] == [50, 50]
        advance()
        edit("7", "deyel_tenant_b")
        edit("33", "deyel_default")
        advance()
        second = run_day(dag, 3)
        assert [ids_in(s["path"]) for s in second] == [["33"], ["7"]]
        assert [s["window_start"] for s in second] == [s["window_end"] for s in first]
        # Each window ends at its own server's present: A's ten minutes after B's.
        assert second[0]["window_end"] - second[1]["window_end"] >= 590_000


PLANTER_SOURCE = """
    import hashlib
    import os

    import pendulum
    from airflow.sdk import DAG, Asset, task

    from deyel_provider.extract.watermark import watermark_key

    LAKE = Asset("file://" + os.environ["DEYEL_WM_OUTPUT"] + "/planted")

    with DAG("wm_planter", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):

        @task(outlets=[LAKE])
        def plant(**context):
            ahead = int(os.environ["DEYEL_WM_PLANTED_END"])
            key = watermark_key(
                "CRM_ACCOUNT", "dtLastUpdate", None, conn_id="deyel_default", dag_id="wm_planted",
                task_id="extract",
            )
            # The key of earlier releases too: whatever a version reads, the attacker writes.
            old_key = "deyel_watermark:CRM_ACCOUNT:dtLastUpdate:" + hashlib.sha256(b"").hexdigest()[:16]
            value = {"key": key, "v": 2, "end": ahead, "windows": [], "dropped_after": None}
            stores = context.get("asset_state_store")
            if stores is not None:  # Airflow 3.3+
                stores[LAKE].set(key, value)
                stores[LAKE].set(old_key, {"start": None, "end": ahead, "run_id": None})
            else:  # 3.0 to 3.2: the watermark travels in the asset's latest event
                context["outlet_events"][LAKE].extra = {"watermark": value}

        plant()
"""


@pytest.mark.dag
def test_a_watermark_planted_in_airflows_asset_state_fails_the_run_typed(
    emulator, deyel_conn, dag_files, monkeypatch, capsys
):
    """Finding 3 in Airflow's own terms: another DAG that may write the asset's state (or, before 3.3, emit
    its events) plants an end one hour ahead. Before, every run of the extraction succeeded with records=0;
    now it fails with DeyelWatermarkError naming the reset, and nothing is written."""
    emulator.advance(STEP_S)
    monkeypatch.setenv("DEYEL_WM_PLANTED_END", str(now_ms(emulator) + 3_600_000))
    planter = dag_files("wm_planter", PLANTER_SOURCE)
    extraction = dag_files("wm_planted", DAG_SOURCE.format(dag_id="wm_planted", folder="planted"))
    assert planter.test().state == "success"
    capsys.readouterr()
    dag_run = extraction.test(run_after=pendulum.datetime(2026, 1, 2, tz="UTC"))
    logged = capsys.readouterr()
    assert dag_run.state == "failed"
    assert "DeyelWatermarkError" in logged.out + logged.err and RESET_CONF in logged.out + logged.err
    folder = Path(os.environ["DEYEL_WM_OUTPUT"]) / "planted"
    assert not folder.exists() or list(folder.iterdir()) == []


# -- the operator with Airflow 3.3's state stores: planted values, records, resets ---------------------


class StateStore:
    """One asset's (or task's) JSON values by key, as Airflow 3.3 keeps them in its database."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.fail_writes = False

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    def set(self, key: str, value: Any, **_: Any) -> None:
        if self.fail_writes:
            raise RuntimeError("the metadata database went away")
        self.values[key] = json.loads(json.dumps(value))


class AssetStores:
    """``context["asset_state_store"]``: a store per asset."""

    def __init__(self) -> None:
        self.by_uri: dict[str, StateStore] = {}

    def __getitem__(self, asset: Asset) -> StateStore:
        return self.by_uri.setdefault(asset.uri, StateStore())


class Runs:
    """Runs of one operator with the state Airflow keeps between them."""

    def __init__(self, task: DeyelExtractOperator, folder: Path, *, state_stores: bool = True) -> None:
        self.task = task
        self.folder = folder
        self.assets = AssetStores()
        self.task_states: dict[str, StateStore] = {}
        #: Airflow 3.0 to 3.2: no state store, the asset's events (their extra) instead.
        self.state_stores = state_stores
        self.events: list[SimpleNamespace] = []

    @property
    def state(self) -> StateStore:
        assert self.task.asset is not None
        return self.assets[self.task.asset]

    def key(self) -> str:
        return watermark_key(FORM, "dtLastUpdate", None, conn_id="deyel_default", dag_id="d", task_id="x")

    def run(self, run_id: str, n: int, conf: dict | None = None) -> dict:
        """Run ``run_id``, the ``n``-th run of the schedule (its ``run_after``: ``n`` hours in)."""
        self.task.output_path = str(self.folder / f"{run_id}.jsonl")  # as rendered
        run_after = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=n)
        context = {
            "run_id": run_id,
            "dag_run": SimpleNamespace(run_id=run_id, run_after=run_after, conf=conf or {}),
            "dag": SimpleNamespace(dag_id="d"),
            "ti": SimpleNamespace(dag_id="d", map_index=-1),
            "outlet_events": outlet_events(),
        }
        if self.state_stores:
            context["asset_state_store"] = self.assets
            context["task_state_store"] = self.task_states.setdefault(run_id, StateStore())
        else:
            context["inlet_events"] = ByAsset([(self.task.asset, list(self.events))])
        summary = self.task.execute(context)
        extra = json.loads(json.dumps(context["outlet_events"][self.task.asset].extra))
        self.events.append(SimpleNamespace(extra=extra))
        return summary


def extract_task(folder: Path) -> DeyelExtractOperator:
    asset = Asset(folder.as_uri())
    return DeyelExtractOperator(
        task_id="x", form=FORM, output=str(folder / "r.jsonl"), start_from=START_FROM, asset=asset
    )


def signer_of(conn_id: str = "deyel_default") -> WatermarkSigner:
    config = DeyelHook(conn_id).config
    return WatermarkSigner.for_connection(config.client_secret, config.token_url, config.client_id)


@pytest.fixture
def runs(emulator, deyel_conn, tmp_path) -> Runs:
    folder = tmp_path / "out"
    task = DeyelExtractOperator(
        task_id="x",
        form=FORM,
        output=str(folder / "r.jsonl"),
        start_from=START_FROM,
        asset=Asset(folder.as_uri()),
    )
    emulator.advance(STEP_S)
    return Runs(task, folder)


def now_ms(emulator) -> int:
    return int(emulator.state.clock.now() * 1000)


def planted(runs: Runs, emulator) -> dict[str, dict]:
    """Values an attacker who can write the asset's state (or post an asset event) would plant."""
    key, hour = runs.key(), 3_600_000
    future = now_ms(emulator) + hour
    return {
        "end one hour ahead": {"key": key, "v": 2, "end": future, "windows": [], "dropped_after": None},
        "year 9999": {"key": key, "v": 2, "end": 253_370_764_800_000, "windows": [], "dropped_after": None},
        "10**17": {"key": key, "v": 2, "end": 10**17, "windows": [], "dropped_after": None},
        "previous release's shape": {"start": None, "end": future, "run_id": "r2"},
        "bare int": future,
        "a MAC that is not ASCII": {"key": key, "v": 2, "end": future, "windows": [], "mac": "é" * 64},
        "a string end": {"key": key, "v": 2, "end": str(future), "windows": []},
    }


@pytest.mark.parametrize(
    "case",
    [
        "end one hour ahead",
        "year 9999",
        "10**17",
        "previous release's shape",
        "bare int",
        "a MAC that is not ASCII",
        "a string end",
    ],
)
def test_a_planted_watermark_is_a_typed_error_not_an_empty_success(runs, emulator, case):
    """Finding 3: a value planted in the asset's state without the connection's key. Before: an end ahead
    made runs succeed with records=0; 9999 silenced every run; 10**17 failed with a bare ValueError."""
    runs.state.values[runs.key()] = planted(runs, emulator)[case]
    before = dict(runs.state.values)
    with pytest.raises(DeyelWatermarkError, match=RESET_CONF):
        runs.run("r2", 2)
    assert not runs.folder.exists() or list(runs.folder.iterdir()) == []
    assert runs.state.values == before  # nothing advanced


def test_a_planted_run_id_equal_to_the_next_run_does_not_make_it_reread_everything(runs, emulator):
    """Finding 3: a planted window for the next run's id (from the epoch to the present) with a forged MAC,
    and a genuine value whose window was edited (the MAC no longer matches): typed errors, no re-read."""
    first = runs.run("r1", 1)
    genuine = runs.state.values[runs.key()]
    forged = {**genuine, "windows": [*genuine["windows"], ["r2", 0, first["window_end"], None]]}
    forged["mac"] = "0" * 64
    runs.state.values[runs.key()] = forged
    with pytest.raises(DeyelWatermarkError, match="fails its MAC"):
        runs.run("r2", 2)
    edited = {**genuine, "windows": [[w[0], 0, *w[2:]] for w in genuine["windows"]]}
    runs.state.values[runs.key()] = edited  # the genuine MAC over another window
    with pytest.raises(DeyelWatermarkError, match="fails its MAC"):
        runs.run("r1", 1)
    assert sorted(p.name for p in runs.folder.iterdir()) == ["r1.jsonl"]


def test_a_value_of_another_connection_or_key_is_refused(runs, emulator, deyel_conn):
    """A genuine value copied from another tenant (other secret) or another task's key (other owner)."""
    with run_emulator(records=5, client_secret="another-secret") as other:
        deyel_conn("deyel_other", url=other.url, password="another-secret")
        theirs = Watermark(runs.key(), 1767225600000).to_json(signer_of("deyel_other"))
    runs.state.values[runs.key()] = theirs
    with pytest.raises(DeyelWatermarkError, match="fails its MAC"):
        runs.run("r2", 2)
    other_key = watermark_key(FORM, "dtLastUpdate", None, conn_id="deyel_default", dag_id="d", task_id="y")
    runs.state.values[runs.key()] = Watermark(other_key, 1767225600000).to_json(signer_of())
    with pytest.raises(DeyelWatermarkError, match="not a watermark this provider wrote under this key"):
        runs.run("r2", 2)


@pytest.mark.parametrize("ahead_ms", [3_600_000, 253_370_764_800_000, 10**17])
def test_a_signed_watermark_after_the_servers_present_is_a_typed_error(runs, emulator, ahead_ms):
    """Even with a valid MAC (written while a clock ran ahead), an end after the server's present is refused:
    before, the window was clamped to nothing and the run succeeded with records=0."""
    end = now_ms(emulator) + ahead_ms if ahead_ms < 10**12 else ahead_ms
    runs.state.values[runs.key()] = Watermark(runs.key(), end).to_json(signer_of())
    with pytest.raises(DeyelWatermarkError, match=r"after the server's present|before year 10000"):
        runs.run("r2", 2)
    assert not runs.folder.exists() or list(runs.folder.iterdir()) == []


def test_a_date_header_years_ahead_does_not_move_the_watermark(deyel_conn, tmp_path):
    """Finding 3: one response whose Date says five years ahead moved the watermark there for good."""
    five_years_ms = 5 * 365 * 86_400_000
    with run_emulator(records=20, date_offset_ms=five_years_ms) as skewed:
        deyel_conn(url=skewed.url)
        folder = tmp_path / "out"
        task = DeyelExtractOperator(
            task_id="x",
            form=FORM,
            output=str(folder / "r.jsonl"),
            start_from=START_FROM,
            asset=Asset(folder.as_uri()),
        )
        runs = Runs(task, folder)
        # The reader refuses a Date further than max_clock_skew_seconds from the worker's clock.
        with pytest.raises(DeyelClockSkewError, match="max_clock_skew_seconds"):
            runs.run("r1", 1)
        assert runs.state.values == {} and (not folder.exists() or list(folder.iterdir()) == [])


def test_without_a_state_store_a_cleared_older_run_reads_its_window_from_the_events(
    emulator, deyel_conn, tmp_path
):
    """Finding 1 on Airflow 3.0 to 3.2 (no state store): the windows travel in the asset events' extra, and
    a value planted in an event is refused as it is in the asset's state."""
    emulator.advance(STEP_S)
    folder = tmp_path / "out"
    runs = Runs(extract_task(folder), folder, state_stores=False)
    a = runs.run("a", 1)
    emulator.advance(STEP_S)
    edit("7")
    emulator.advance(STEP_S)
    b = runs.run("b", 2)
    emulator.advance(STEP_S)
    c = runs.run("c", 3)
    assert ids_in(folder / "b.jsonl") == ["7"] and c["records"] == 0 and a["records"] == 50
    b_again = runs.run("b", 2)
    assert (b_again["window_start"], b_again["window_end"]) == (b["window_start"], b["window_end"])
    assert ids_in(folder / "b.jsonl") == ["7"]
    d = runs.run("d", 4)
    assert d["window_start"] == c["window_end"]

    runs.events.append(SimpleNamespace(extra={"watermark": planted(runs, emulator)["end one hour ahead"]}))
    with pytest.raises(DeyelWatermarkError, match="latest event"):
        runs.run("e", 5)


def test_a_retry_after_the_publish_failed_rereads_its_recorded_window(runs, emulator):
    """The window is recorded when chosen (before the publish): a retry reads that window again and rewrites
    its file with the same instances, although the server's present moved and another change came since."""
    first = runs.run("r1", 1)
    emulator.advance(STEP_S)
    edit("7")
    emulator.advance(STEP_S)
    runs.state.fail_writes = True  # the file is published, then the watermark cannot be stored
    with pytest.raises(RuntimeError):
        runs.run("r2", 2)
    assert ids_in(runs.folder / "r2.jsonl") == ["7"]
    runs.state.fail_writes = False
    edit("21")
    emulator.advance(STEP_S)
    retried = runs.run("r2", 2)
    assert retried["window_start"] == first["window_end"] and ids_in(runs.folder / "r2.jsonl") == ["7"]
    third = runs.run("r3", 3)
    assert ids_in(runs.folder / "r3.jsonl") == ["21"] and third["window_start"] == retried["window_end"]


def test_a_reset_run_starts_at_start_from_and_the_next_runs_follow_it(runs, emulator):
    """The documented way out of a typed watermark error: one run with the reset flag in its conf."""
    runs.state.values[runs.key()] = planted(runs, emulator)["end one hour ahead"]
    with pytest.raises(DeyelWatermarkError):
        runs.run("r1", 1)
    reset = runs.run("r2", 2, conf={RESET_CONF: True})
    assert reset["records"] == 50
    assert reset["window_start"] == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    with pytest.raises(DeyelWatermarkError, match="older than the oldest window kept"):
        runs.run("r1", 1)  # a run from before the reset: its window is not recorded, no other one is read
    emulator.advance(STEP_S)
    edit("7")
    emulator.advance(STEP_S)
    runs.run("r3", 3)
    assert ids_in(runs.folder / "r3.jsonl") == ["7"]


def test_only_the_last_windows_are_kept_and_an_older_run_is_a_typed_error(runs):
    """The history is bounded: clearing a run older than the last HISTORY ones names how to proceed."""
    for n in range(1, HISTORY + 3):
        runs.run(f"r{n}", n)
    stored = runs.state.values[runs.key()]
    assert len(stored["windows"]) == HISTORY and stored["windows"][0][0] == "r3"
    # The task's own state (Airflow 3.3) still holds r1's window: it is read again.
    again = runs.run("r1", 1)
    assert again["window_start"] == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert again["records"] == 50
    # Without it (``[state_store] clear_on_success``, or Airflow before 3.3): a typed error, not a new window.
    runs.task_states["r2"].values.clear()
    with pytest.raises(DeyelWatermarkError, match="mark this task instance successful"):
        runs.run("r2", 2)


def test_a_previous_releases_watermark_is_not_used_the_run_starts_at_start_from(runs, emulator, caplog):
    """Migration: the unowned, unauthenticated key of earlier releases is named in a warning, not used (the
    watermark run's module logger, which reaches the task log, as caplog shows)."""
    old_end = now_ms(emulator) - 60_000
    runs.state.values[legacy_key(FORM, "dtLastUpdate", None)] = {"start": None, "end": old_end, "run_id": "x"}
    first = runs.run("r1", 1)
    warned = [r for r in caplog.records if "previous release" in r.getMessage()]
    assert first["records"] == 50
    assert [(r.name, r.levelname) for r in warned] == [("deyel_provider.extract.watermark_run", "WARNING")]


@pytest.mark.parametrize("end", [10**17, -(10**17), MAX_MS + 1, -1, True])
def test_a_previous_releases_watermark_out_of_range_is_ignored_not_a_crash(runs, emulator, caplog, end):
    """Review R3: anyone who can write the asset's state may plant the old key; an end no date can hold
    (year 3170843) is not named in the warning, and neither a first run nor a reset run fails on it."""
    runs.state.values[legacy_key(FORM, "dtLastUpdate", None)] = {"start": None, "end": end, "run_id": "x"}
    first = runs.run("r1", 1)
    reset = runs.run("r2", 2, conf={RESET_CONF: True})
    assert first["records"] == reset["records"] == 50
    logged = [r.getMessage() for r in caplog.records if r.name == "deyel_provider.extract.watermark_run"]
    assert any("resets the watermark" in line for line in logged)  # the run's lines are there...
    assert not any("previous release" in line for line in logged)  # ...but not the unusable old end


def test_mapped_instances_and_shared_keys():
    """The key names its owner: another connection, DAG, task or map index is another watermark; an
    explicit ``watermark_key`` replaces the owner (a task moved to another DAG keeps its watermark)."""
    base = {"conn_id": "a", "dag_id": "d", "task_id": "t"}
    keys = {
        watermark_key(FORM, "dtLastUpdate", None, **base),
        watermark_key(FORM, "dtLastUpdate", None, **{**base, "conn_id": "b"}),
        watermark_key(FORM, "dtLastUpdate", None, **{**base, "dag_id": "e"}),
        watermark_key(FORM, "dtLastUpdate", None, **{**base, "task_id": "u"}),
        watermark_key(FORM, "dtLastUpdate", None, **base, map_index=0),
        watermark_key(FORM, "dtLastUpdate", None, **base, map_index=1),
        watermark_key(FORM, "dtLastUpdate", "cdCountry=eq:AR", **base),
    }
    assert len(keys) == 7
    assert watermark_key(FORM, "dtLastUpdate", None, **base) == watermark_key(
        FORM, "dtLastUpdate", None, **base, map_index=-1
    )
    shared = {"shared": "crm-accounts"}
    assert watermark_key(FORM, "dtLastUpdate", None, **base, **shared) == watermark_key(
        FORM, "dtLastUpdate", None, conn_id="b", dag_id="e", task_id="u", map_index=3, **shared
    )
    window = Window("r", 1, 2, None)
    assert Watermark("k", 0).with_window(window).window_of("r") == window


def test_an_explicit_watermark_key_is_shared_on_purpose(runs, emulator):
    """``watermark_key``: a task moved to another task id (or DAG) continues where the old one ended."""
    asset = runs.task.asset
    old = DeyelExtractOperator(
        task_id="x", form=FORM, output="/unused", start_from=START_FROM, asset=asset, watermark_key="crm"
    )
    moved = DeyelExtractOperator(
        task_id="y", form=FORM, output="/unused", start_from=START_FROM, asset=asset, watermark_key="crm"
    )
    runs.task = old
    first = runs.run("r1", 1)
    emulator.advance(STEP_S)
    edit("7")
    emulator.advance(STEP_S)
    runs.task = moved
    second = runs.run("r2", 2)
    assert second["window_start"] == first["window_end"] and ids_in(runs.folder / "r2.jsonl") == ["7"]
    with pytest.raises(DeyelConfigError, match="watermark_key"):
        runs.task = DeyelExtractOperator(
            task_id="z", form=FORM, output="/unused", start_from=START_FROM, asset=asset, watermark_key=" "
        )
        runs.run("r3", 3)


@pytest.mark.parametrize(
    "body",
    [
        {"end": 10, "windows": [["r", 20, 10, None]]},  # a window that starts after it ends
        {"end": 10, "windows": "r"},
        {"end": 10, "windows": [["r", 1, 2]]},
        {"end": True, "windows": []},
        {"end": -1, "windows": []},
        {"end": 10, "windows": [["r", 1, 2, None]] * (HISTORY + 1)},
        {"end": 10, "windows": [], "dropped_after": "yesterday"},
    ],
)
def test_a_signed_value_of_the_wrong_shape_is_a_typed_error(body):
    """Even with a genuine MAC (a bug, or a value of a later format), a malformed value is refused."""
    signer = WatermarkSigner("secret", "salt")
    value = signer.sign({"key": "k", "v": 2, "dropped_after": None, **body})
    with pytest.raises(DeyelWatermarkError, match=RESET_CONF):
        Watermark.from_json(value, "k", signer, "the asset's state")
    assert Watermark.from_json(signer.sign({"key": "k", "v": 2, "end": 10, "windows": []}), "k", signer, "x")


@contextmanager
def server_without_a_date_header() -> Iterator[str]:
    """A stand-in Deyel (written apart from the emulator) that sends no ``Date``: an empty form."""

    class Handler(BaseHTTPRequestHandler):
        def send_response(self, code: int, message: str | None = None) -> None:
            self.send_response_only(code, message)  # BaseHTTPRequestHandler would add Server and Date

        def _json(self, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(200)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._json(b'{"access_token": "opaque-token-1", "token_type": "Bearer", "expires_in": 3600}')

        def do_GET(self) -> None:
            self._json(b"[]", {"X-Total-Count": "0"})

        def log_message(self, *args: object) -> None:
            pass

    server = StandInServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_without_a_date_header_the_local_clock_bounds_a_watermark_start(deyel_conn, tmp_path):
    """No ``Date``: the worker's clock stands in, with its five-minute margin either way. A watermark a
    minute ahead of it (a server clock slightly ahead) reads an empty window; one an hour ahead is refused."""
    with server_without_a_date_header() as url:
        deyel_conn(url=url)
        folder = tmp_path / "out"
        runs = Runs(extract_task(folder), folder)
        local = int(time.time() * 1000)
        runs.state.values[runs.key()] = Watermark(runs.key(), local + 60_000).to_json(signer_of())
        assert runs.run("r1", 1)["records"] == 0
        runs.state.values[runs.key()] = Watermark(runs.key(), local + 3_600_000).to_json(signer_of())
        with pytest.raises(DeyelWatermarkError, match="after the server's present"):
            runs.run("r2", 2)


def test_a_date_header_years_ahead_does_not_move_the_change_triggers_watermark(deyel_conn):
    """Finding 3, the change trigger: a Date five years ahead moved its watermark there for good (no later
    change would fire until 2031). Now a Date further than ``max_clock_skew_seconds`` from the triggerer's
    clock moves nothing: the poll is skipped (with a warning) and the watermark stays where it was."""
    from deyel_provider.triggers.deyel import DeyelChangeTrigger

    with run_emulator(records=5, date_offset_ms=5 * 365 * 86_400_000) as skewed:
        deyel_conn(url=skewed.url)
        hook = DeyelHook()
        trigger = DeyelChangeTrigger(form=FORM, start=0)
        assert trigger._present(hook) is None
        assert trigger._changes_since(hook, 0) is None  # the seeded instances wait for a trusted Date
        hook.close()
