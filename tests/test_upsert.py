"""DeyelUpsertOperator against the emulator: the final state equals the source, a rerun writes nothing, faults
(lost answers, concurrent editors, rate limits, dropped connections, a kill -9) leave no duplicate and the
right state, rejects are reported, bad input fails before any write. Counts come from the emulator."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import subprocess
import sys
from datetime import UTC
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deyel_provider.emulator import run_emulator
from deyel_provider.emulator.faults import REQUEST_LIMIT_BODY
from deyel_provider.exceptions import (
    DeyelBadResponseError,
    DeyelConfigError,
    DeyelIncompleteError,
    DeyelRejectedError,
    DeyelRequestError,
    DeyelSourceError,
)
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.load.upsert import load_records as upsert
from deyel_provider.operators.upsert import DeyelUpsertOperator
from tests.support.branches import Branches
from tests.support.helpers import fresh_secrets_masker
from tests.support.killing import sigkilled, wait_until
from tests.support.upsert import FORM, KEY, assert_state_is, customer, stored, write_jsonl


def seed(emulator, records) -> None:
    """Instances that exist before the load (written straight into the store: no request counted)."""
    for record in records:
        emulator.state.store.create(FORM, dict(record))


def load(source, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("progress_interval", 3600)
    return DeyelUpsertOperator(task_id="load", form=FORM, source=source, key=KEY, **kwargs).execute({})


def counts(result: dict[str, Any]) -> tuple[int, int, int, int]:
    return result["created"], result["updated"], result["unchanged"], result["rejected"]


def mixed(size: int, existing: int, changed: int, prefix: str = "C-"):
    """``existing`` instances already in Deyel (the first ``changed`` of them differ from the source) and a
    source of ``size`` records: the existing keys plus new ones."""
    source = [customer(i, prefix) for i in range(size)]
    before = [
        customer(i, prefix, dsName=f"Old name {i}", qtEmployee=i % 700 + 1)
        if i < changed
        else customer(i, prefix)
        for i in range(existing)
    ]
    return before, source


# -- the load and its rerun --------------------------------------------------------------------------------


def test_5000_records_end_equal_to_the_source_and_a_rerun_writes_nothing(emulator, deyel_conn, tmp_path):
    before, source = mixed(5000, existing=3000, changed=1000)
    seed(emulator, before)
    path = write_jsonl(tmp_path / "customers.jsonl", source)
    emulator.reset()

    first = load(path, max_workers=4)
    assert counts(first) == (2000, 1000, 2000, 0)
    assert first["records"] == 5000 and first["rejects_path"] is None and first["seconds"] > 0
    # One search per 100 records, one write per record that needs one, once per load a page of one that
    # proves the count header counts the search, not the page (page_walker), and one eq search per chunk
    # whose in search found nothing (20 chunks of new keys; the separator is proven by the chunks before,
    # whose in searches found instances): nothing else.
    assert emulator.methods() == {"GET": 71, "POST": 2000, "PATCH": 1000}
    assert emulator.stats()["status_counts"] == {"200": 71, "201": 2000, "202": 1000}
    assert_state_is(emulator, source)

    emulator.reset()
    again = load(path, max_workers=4)
    assert counts(again) == (0, 0, 5000, 0)
    assert emulator.methods() == {
        "GET": 51
    }  # +1: a page of one proves the count header counts the search (page_walker)
    assert_state_is(emulator, source)


def test_csv_parquet_and_xcom_sources_load_the_same_values(emulator, deyel_conn, tmp_path):
    records = [customer(i) for i in range(120)]
    records[5]["nuRevenue"] = None
    with open(tmp_path / "c.csv", "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(records[0]))
        writer.writeheader()
        for record in records:
            writer.writerow(
                {
                    k: "" if v is None else str(v).lower() if isinstance(v, bool) else v
                    for k, v in record.items()
                }
            )

    # CSV cells are typed by their column's prefix: the instances hold numbers and booleans, not text.
    assert counts(load(str(tmp_path / "c.csv"))) == (120, 0, 0, 0)
    assert_state_is(emulator, records)
    emulator.reset()
    assert counts(load(records, max_workers="auto")) == (0, 0, 120, 0)  # the XCom list: same values
    assert emulator.methods() == {
        "GET": 3
    }  # +1: a page of one proves the count header counts the search (page_walker)

    import duckdb

    jsonl, parquet = write_jsonl(tmp_path / "p.jsonl", records), tmp_path / "p.parquet"
    duckdb.read_json(jsonl).write_parquet(str(parquet))
    assert counts(load(str(parquet))) == (0, 0, 120, 0)


def test_a_parquet_source_without_pyarrow_is_a_typed_error_before_any_request(
    emulator, deyel_conn, tmp_path, monkeypatch
):
    """pyarrow is an optional dependency: where it is missing (a None in sys.modules makes its import raise
    ImportError, as an absent package does), a Parquet source fails typed, naming the fix, sending nothing."""
    import duckdb

    parquet = tmp_path / "p.parquet"
    duckdb.read_json(write_jsonl(tmp_path / "p.jsonl", [customer(1)])).write_parquet(str(parquet))
    for module in [name for name in sys.modules if name == "pyarrow" or name.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    emulator.reset()
    with pytest.raises(DeyelConfigError, match=r"needs pyarrow \(pip install pyarrow\)"):
        load(str(parquet))
    assert emulator.methods().keys() <= {"GET"}  # nothing written


def test_python_and_warehouse_values_become_deyel_values(emulator, deyel_conn):
    from datetime import date, datetime
    from decimal import Decimal

    opened = datetime(2018, 10, 29, 3, 0, tzinfo=UTC)
    source = [
        {KEY: 1001, "dsName": "Numeric code", "dtOpening": opened, "nuRevenue": Decimal("12.50")},
        {KEY: "C-2", "dsName": "Dates", "dtOpening": date(2018, 10, 29), "qtEmployee": Decimal("7")},
        {KEY: "C-3", "dsName": "Naive", "dtOpening": datetime(2018, 10, 29, 3), "nuRevenue": float("nan")},
        {KEY: "C-4", "dsName": "Epoch number", "dtOpening": 1540782000000},
    ]
    assert counts(load(source)) == (4, 0, 0, 0)
    state = stored(emulator)
    assert (state["1001"]["dtOpening"], state["1001"]["nuRevenue"]) == ("1540782000000", 12.5)
    assert (state["C-2"]["dtOpening"], state["C-2"]["qtEmployee"]) == ("1540771200000", 7)
    assert (state["C-3"]["dtOpening"], state["C-3"]["nuRevenue"]) == ("1540782000000", None)
    assert state["C-4"]["dtOpening"] == "1540782000000"
    emulator.reset()
    assert counts(load(source)) == (0, 0, 4, 0)  # the same values, told apart from nothing


def test_numbers_are_compared_exactly_past_a_floats_precision(emulator, deyel_conn):
    from deyel_provider.load.values import same

    big = 2**53 + 1  # 9007199254740993: as a float, the same as 2**53
    # Deyel 8.0 sends numbers as text: "1000" and "12.50" hold what the source's 1000.0 and 12.5 say.
    seed(emulator, [customer(1, qtEmployee=big), customer(2, qtEmployee="1000", nuRevenue="12.50")])
    emulator.reset()
    source = [customer(1, qtEmployee=big - 1), customer(2, qtEmployee=1000.0, nuRevenue=12.5)]
    assert counts(load(source)) == (0, 1, 1, 0)
    assert emulator.methods() == {
        "GET": 2,
        "PATCH": 1,
    }  # +1: a page of one proves the count header counts the search (page_walker)
    assert stored(emulator)["C-00001"]["qtEmployee"] == big - 1
    assert same(1000, 1000.0) and same(1000, "1000") and same(1000.0, "1000") and same("1000", 1000)
    assert not same(big, str(big - 1)) and not same(str(big), big - 1) and not same(12.5, "12.51")


def test_uuids_and_times_become_text_and_values_without_a_deyel_form_fail_before_any_write(
    emulator, deyel_conn
):
    from datetime import time, timedelta
    from uuid import UUID

    code = UUID("12345678-1234-5678-1234-567812345678")
    source = [
        customer(1, dsName=code),
        customer(2, dsName=time(10, 30)),
        customer(3, dsName=time(8, 0, 0, 5)),
    ]
    assert counts(load(source)) == (3, 0, 0, 0)
    state = stored(emulator)
    assert [state[f"C-0000{i}"]["dsName"] for i in (1, 2, 3)] == [str(code), "10:30:00", "08:00:00.000005"]
    emulator.reset()
    assert counts(load(source)) == (0, 0, 3, 0)

    for bad, where, what in [
        ([customer(4), customer(5, dsName=b"\x00bin")], "record 2", "'dsName' a bytes value"),
        ([customer(4, qtEmployee=timedelta(seconds=5))], "record 1", "'qtEmployee' a timedelta value"),
        ([customer(4, lsAddress=[{"lsAddress/dsCity": {1, 2}}])], "record 1", "'lsAddress' a set value"),
    ]:
        emulator.reset()
        with pytest.raises(DeyelSourceError, match=f"{where} holds in {what}, which has no Deyel form"):
            load(bad)
        assert emulator.stats()["api_requests"] == 0


def test_modes_insert_and_update(emulator, deyel_conn):
    before, source = mixed(10, existing=6, changed=3)
    seed(emulator, before)
    emulator.reset()
    inserted = load(source, mode="insert")
    assert counts(inserted) == (4, 0, 6, 0)  # existing instances are left as they are, changed or not
    assert emulator.methods() == {
        "GET": 3,  # + the eq of the last missing key (the in search found 6 of 10)
        "POST": 4,
    }  # +1: a page of one proves the count header counts the search (page_walker)
    assert stored(emulator)["C-00000"]["dsName"] == "Old name 0"

    emulator.reset()
    fresh = [*source, customer(99)]
    updated = load(fresh, mode="update", max_rejects=1)
    assert counts(updated) == (0, 3, 7, 1)  # the record without an instance is a reject, not a create
    assert emulator.methods() == {
        "GET": 2,
        "PATCH": 3,
    }  # +1: a page of one proves the count header counts the search (page_walker)
    assert_state_is(emulator, source)


def test_only_the_fields_asked_for_are_compared_and_written(emulator, deyel_conn):
    seed(emulator, [customer(1, dsName="Kept", qtEmployee=5)])
    emulator.reset()
    result = load([customer(1, dsName="Ignored", qtEmployee=6)], fields=["qtEmployee"])
    assert counts(result) == (0, 1, 0, 0)
    instance = stored(emulator)["C-00001"]
    assert (instance["dsName"], instance["qtEmployee"]) == ("Kept", 6)


def test_a_record_saved_by_someone_else_twice_is_a_reject_and_progress_is_logged(
    emulator, deyel_conn, caplog
):
    """One conflict is settled by a re-read; a second one on the same record leaves it to the other user."""
    seed(emulator, [customer(1, dsName="Old"), customer(2, dsName="Old")])
    emulator.reset()
    emulator.set_faults(
        [{"route": "data", "method": "PATCH", "action": "edit", "count": 2, "body": {"dsName": "Theirs"}}]
    )
    caplog.set_level(logging.INFO, logger="deyel_provider.load")
    result = upsert(
        DeyelHook(),
        FORM,
        [customer(1), customer(2)],
        KEY,
        max_rejects=1,
        progress_interval=1e-9,
    )
    assert counts(result.as_dict()) == (0, 1, 0, 1)
    # The search (and its page of one proving the count header); for the first record a PATCH (409), a
    # re-read, a PATCH (409 again); the second's PATCH.
    assert emulator.methods() == {"GET": 3, "PATCH": 3}
    assert stored(emulator)["C-00001"]["dsName"] == "Theirs"
    assert stored(emulator)["C-00002"]["dsName"] == "Customer 2"
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("deyel_provider.load.")]
    assert any(
        m.startswith("rejected record 1 (key 'C-00001'): The instance was modified by another user")
        and m.endswith("[dtLastUpdate]")
        for m in logged
    )
    assert any(
        m.startswith("progress: 1 records (0 created, 0 updated, 0 unchanged, 1 rejected)") for m in logged
    )
    assert logged[-1].startswith("loaded ERP_CUSTOMER: 0 created, 1 updated, 0 unchanged, 1 rejected in ")


# -- faults --------------------------------------------------------------------------------------------------

#: (rules, requests expected beyond the fault-free 2 GET (the search and the page of one that proves its count
#: header) / 40 POST / 10 PATCH, given the faults injected).
FAULTS = {
    "create applied, then 504": (
        [{"method": "POST", "action": "apply_status", "probability": 0.25, "seed": 1}],
        lambda n: {"GET": n},  # each lost create is settled by one key search, never sent again
    ),
    "create applied, then the connection drops": (
        [{"method": "POST", "action": "apply_drop", "probability": 0.25, "seed": 2}],
        lambda n: {"GET": n},
    ),
    "connection dropped before the create": (
        [{"method": "POST", "action": "drop", "count": 3}],
        lambda n: {"GET": n, "POST": n},  # not applied: the search finds nothing, the POST is sent again
    ),
    # Two rules: the second fires on the third PATCH, not on the retry of the first.
    "409 from a concurrent editor": (
        [
            {"method": "PATCH", "action": "edit", "count": 1, "body": {"dsName": "Edited by someone"}},
            {"method": "PATCH", "action": "edit", "after": 1, "count": 1, "body": {"qtEmployee": 0}},
        ],
        lambda n: {"GET": n, "PATCH": n},  # re-read, then the PATCH again with the new dtLastUpdate
    ),
    "update applied, then 504": (
        [
            {"method": "PATCH", "action": "apply_status", "count": 1},
            {"method": "PATCH", "action": "apply_status", "after": 1, "count": 1},
        ],
        lambda n: {"GET": n, "PATCH": n},  # the replay meets 409 and a re-read shows it was applied
    ),
    "429 and REQUEST_LIMIT_EXCEEDED": (
        [
            {"method": "POST", "action": "status", "status": 429, "retry_after": 0, "after": 5, "count": 2},
            {"method": "PATCH", "action": "status", "status": 403, "body": REQUEST_LIMIT_BODY, "count": 2},
            {"method": "GET", "action": "status", "status": 429, "retry_after": 0, "count": 1},
        ],
        lambda n: {"GET": 1, "POST": 2, "PATCH": 2},  # refused unprocessed: simply sent again
    ),
    "search answer lost": ([{"method": "GET", "action": "drop", "count": 2}], lambda n: {"GET": n}),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_faults_leave_no_duplicate_and_the_right_state(emulator, deyel_conn, case):
    rules, extra = FAULTS[case]
    before, source = mixed(60, existing=20, changed=10)
    seed(emulator, before)
    emulator.reset()
    emulator.set_faults([{"route": "data", **rule} for rule in rules])

    result = load(source)

    injected = emulator.stats()["faults_injected"]
    assert injected > 0
    assert counts(result) == (40, 10, 10, 0)
    expected = {"GET": 3, "POST": 40, "PATCH": 10}  # search + eq of a missing key
    for method, more in extra(injected).items():
        expected[method] += more
    assert emulator.methods() == expected
    assert_state_is(emulator, source)
    emulator.clear_faults()
    emulator.reset()
    assert counts(load(source)) == (0, 0, 60, 0)
    assert emulator.methods() == {
        "GET": 2
    }  # +1: a page of one proves the count header counts the search (page_walker)


def _rule(action: str, method: str | None, status: int, probability: float, seed: int) -> dict[str, Any]:
    # A 429 says the call was not processed: a server that applied the write never sends it.
    if action == "apply_status" and status == 429:
        status = 504
    rule = {"action": action, "status": status, "probability": probability, "seed": seed, "count": 1}
    return {**rule, "method": method} if method else rule


RUNS = itertools.count()
FAULT_RULES = st.builds(
    _rule,
    st.sampled_from(["apply_status", "apply_drop", "drop", "status"]),
    st.sampled_from(["POST", "PATCH", "GET", None]),
    st.sampled_from([502, 503, 504, 429]),
    st.sampled_from([0.1, 0.3, 0.6, 1.0]),
    st.integers(0, 1000),
)


def test_any_mix_of_faults_converges_and_a_rerun_writes_nothing(emulator, deyel_conn):
    """At most four faults (one per rule) hit any request, so every call succeeds within its five attempts;
    whatever they are, and with parallel workers, the form ends equal to the source with no duplicate."""
    branches = Branches()

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        rules=st.lists(FAULT_RULES, max_size=4),
        editor=st.booleans(),
        workers=st.sampled_from([1, 3, "auto"]),
        run=st.builds(lambda: next(RUNS)),
    )
    def example(rules, editor, workers, run):
        fresh_secrets_masker()
        prefix = f"run{run}-"
        before, source = mixed(30, existing=10, changed=5, prefix=prefix)
        seed(emulator, before)
        faults = [{"route": "data", **rule} for rule in rules]
        if editor:
            faults.append(
                {"route": "data", "method": "PATCH", "action": "edit", "count": 1, "body": {"dsName": "x"}}
            )
        emulator.set_faults(faults)
        injected = emulator.stats()["faults_injected"]
        try:
            result = upsert(DeyelHook(), FORM, source, KEY, max_workers=workers, batch_size=7)
        finally:
            fired = emulator.stats()["faults_injected"] - injected
            emulator.clear_faults()
        assert counts(result.as_dict()) == (20, 5, 5, 0)
        assert_state_is(emulator, source, prefix)
        emulator.reset()
        assert counts(upsert(DeyelHook(), FORM, source, KEY, batch_size=7).as_dict()) == (0, 0, 30, 0)
        assert set(emulator.methods()) == {"GET"}
        # No failure branch (every example must converge); what must be common is a fault that fired.
        branches.took("converged under faults" if fired else "converged, no fault fired")

    example()
    branches.assert_share("converged under faults", at_least=0.4)


KILL_SCRIPT = """
import sys
from deyel_provider.operators.upsert import DeyelUpsertOperator
DeyelUpsertOperator(
    task_id="load", form="ERP_CUSTOMER", source=sys.argv[1], key="cdCustomer", max_workers=2
).execute({})
"""


def test_a_load_killed_mid_way_converges_when_run_again(emulator, deyel_conn, tmp_path):
    source = [customer(i) for i in range(400)]
    path = write_jsonl(tmp_path / "customers.jsonl", source)
    # The 151st create is applied, then its answer is held back: the process is killed while it waits, so
    # it never learns that this instance exists.
    emulator.set_faults(
        [
            {
                "route": "data",
                "method": "POST",
                "action": "apply_status",
                "after": 150,
                "count": 1,
                "delay_ms": 2000,
            }
        ]
    )
    child = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, path], env=os.environ.copy())
    with sigkilled(child):
        wait_until(child, lambda: emulator.stats()["faults_injected"], "the 151st create")
    emulator.clear_faults()
    # The held create is applied; creates sent beside it may have been cut off by the kill (the emulator
    # never read their bodies), so fewer than 151 can be stored on a busy machine (149 seen under xdist).
    applied = len(stored(emulator))
    assert 0 < applied < 400

    emulator.reset()
    result = load(path, max_workers=2)
    assert result["created"] + result["unchanged"] == 400 and result["updated"] == 0
    assert result["unchanged"] == applied  # the instance whose answer the killed process never saw included
    assert emulator.methods()["POST"] == result["created"]
    assert_state_is(emulator, source)


# -- rejects -------------------------------------------------------------------------------------------------


def test_rejects_are_listed_with_deyels_errors_and_too_many_fail_the_task(emulator, deyel_conn, tmp_path):
    seed(emulator, [customer(0), customer(1)])
    bad = {
        "C-00002": customer(2, dsName=None),  # required
        "C-00003": customer(3, qtEmployee="many"),  # a number field
        "C-00004": customer(4, dsNickname="Bob"),  # not a field of the form
        "C-00001": customer(1, cbIsPartner="yes"),  # an update Deyel refuses
    }
    good = [customer(0, dsName="Renamed"), customer(5), customer(6)]
    source = [good[0], bad["C-00001"], bad["C-00002"], bad["C-00003"], good[1], bad["C-00004"], good[2]]
    target = tmp_path / "out" / "rejects.jsonl"
    emulator.reset()

    with pytest.raises(DeyelRejectedError) as failed:
        load(source, rejects=str(target), max_rejects=3)
    message = str(failed.value)
    assert "4 records of the source list were rejected, more than max_rejects=3" in message
    assert str(target.as_uri()) in message and "record 2 (key 'C-00001')" in message
    # Every other record was written, each refused one was tried once.
    assert emulator.methods() == {
        "GET": 3,  # + the eq of the last missing key
        "POST": 5,
        "PATCH": 2,
    }  # +1: a page of one proves the count header counts the search (page_walker)
    assert_state_is(emulator, [good[0], customer(1), good[1], good[2]])

    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    by_key = {line["key"]: line for line in lines}
    assert sorted(by_key) == sorted(bad)
    assert by_key["C-00002"] == {
        "key": "C-00002",
        "where": "record 3",
        "errors": [{"message": "The field 'dsName' is required", "attribute-name": "dsName"}],
        "status": 400,
        "record": bad["C-00002"],
    }
    assert by_key["C-00003"]["errors"][0]["attribute-name"] == "qtEmployee"
    assert by_key["C-00004"]["errors"] == [
        {"message": f"The form '{FORM}' has no field 'dsNickname'", "attribute-name": "dsNickname"}
    ]
    assert by_key["C-00001"]["errors"][0]["attribute-name"] == "cbIsPartner"
    assert os.listdir(target.parent) == ["rejects.jsonl"]  # published by rename, no temporary left

    # Allowed: the task succeeds, reports them, and the file is replaced by this run's.
    target.unlink()
    link_target = tmp_path / "elsewhere.txt"
    link_target.write_text("not to be overwritten")
    target.symlink_to(link_target)  # a link planted at the final name is replaced, never followed
    result = load(source, rejects=str(target), max_rejects=4)
    assert counts(result) == (0, 0, 3, 4) and result["rejects_path"] == target.as_uri()
    assert not target.is_symlink() and len(target.read_text().splitlines()) == 4
    assert link_target.read_text() == "not to be overwritten"


def test_an_instance_key_held_twice_in_deyel_is_a_reject(emulator, deyel_conn):
    seed(emulator, [customer(1), customer(1, dsName="Twin")])
    emulator.reset()
    with pytest.raises(
        DeyelRejectedError,
        match=r"more than one instance of ERP_CUSTOMER has this cdCustomer \(ids '1', '2'\)",
    ):
        load([customer(1), customer(2)])
    assert emulator.methods() == {
        "GET": 3,  # + the eq of the missing key
        "POST": 1,
    }  # +1: a page of one proves the count header counts the search (page_walker)


# -- bad input fails before any write ------------------------------------------------------------------------


def test_bad_input_is_a_typed_error_before_any_request(emulator, deyel_conn, tmp_path):
    def fails(error, match, source, **kwargs):
        with pytest.raises(error, match=match):
            load(source, **kwargs)
        assert emulator.stats()["api_requests"] == 0 and emulator.stats()["token_requests"] == 0

    with pytest.raises(DeyelConfigError, match=r"mode must be one of \['upsert', 'insert', 'update'\]"):
        DeyelUpsertOperator(task_id="t", form=FORM, source=[], key=KEY, mode="merge")
    # A templated mode is checked once rendered (here it is not: the raw text is no mode).
    fails(DeyelConfigError, "mode must be one of", [customer(1)], mode="{{ params.mode }}")
    with pytest.raises(DeyelConfigError, match="key must name a field"):
        DeyelUpsertOperator(task_id="t", form=FORM, source=[], key="cd,Customer")

    twice = [customer(1), customer(2), customer(3), customer(2, dsName="Other"), customer(1)]
    fails(
        DeyelSourceError,
        r"2 values of the key 'cdCustomer' appear in more than one record \('C-00001' at record 1, record 5; "
        r"'C-00002' at record 2, record 4\)",
        twice,
    )
    # 7 and 7.0 are the same key: a search cannot tell them apart.
    fails(DeyelSourceError, "'7' at record 1, record 2", [{KEY: 7, "dsName": "a"}, {KEY: 7.0, "dsName": "b"}])
    fails(DeyelSourceError, r"record 2 has no 'cdCustomer', the key", [customer(1), {"dsName": "No key"}])
    fails(DeyelSourceError, r"record 1 has a list in 'cdCustomer'", [{KEY: ["a"], "dsName": "x"}])
    # A comma separates the search's filters: this key would be searched as cdCustomer=eq:a AND dsName=eq:b,
    # never found, and created again on every run.
    fails(
        DeyelSourceError,
        r"record 2 has 'a,dsName=eq:b' in 'cdCustomer', the key: a key holding ',' cannot be searched",
        [customer(1), {KEY: "a,dsName=eq:b", "dsName": "b"}],
    )

    (tmp_path / "no-key.csv").write_text("dsName,qtEmployee\nA,1\n")
    fails(
        DeyelSourceError,
        r"the header has no column 'cdCustomer' \(the key\); columns: \['dsName'",
        str(tmp_path / "no-key.csv"),
    )
    (tmp_path / "broken.jsonl").write_text(json.dumps(customer(1)) + "\n\n{oops\n")
    fails(DeyelSourceError, r"broken.jsonl: line 3 is not JSON", str(tmp_path / "broken.jsonl"))
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    fails(DeyelSourceError, r"line 1 is list, not an object", str(tmp_path / "list.jsonl"))
    fails(DeyelSourceError, r"missing.jsonl does not exist", str(tmp_path / "missing.jsonl"))
    fails(DeyelConfigError, r"cannot tell the format .* pass source_format", str(tmp_path / "data.txt"))
    fails(DeyelSourceError, "looks like a rendered list", "[{'cdCustomer': 'C-1'}]")
    fails(DeyelSourceError, "source must name a file", str(tmp_path) + "/")
    fails(DeyelConfigError, "batch_size must be a whole number from 1 to 1000", [customer(1)], batch_size=0)


def test_templated_arguments_are_rendered(emulator, deyel_conn, tmp_path):
    path = write_jsonl(tmp_path / "2026-01-02.jsonl", [customer(1)])
    task = DeyelUpsertOperator(
        task_id="t",
        form="{{ params.form }}",
        source=str(tmp_path / "{{ ds }}.jsonl"),
        key="{{ params.key }}",
        mode="{{ params.mode }}",
    )
    task.render_template_fields({"params": {"form": FORM, "key": KEY, "mode": "insert"}, "ds": "2026-01-02"})
    assert (task.form, task.source, task.key, task.mode) == (FORM, path, KEY, "insert")
    assert counts(task.execute({})) == (1, 0, 0, 0)


# -- batching ------------------------------------------------------------------------------------------------


def test_searches_stay_under_the_servers_url_limit_and_odd_keys_are_found(deyel_conn):
    long = [customer(i, prefix="LONG-" + "x" * 34 + "-") for i in range(100)]  # 45-character keys
    odd = [
        customer(1, prefix="semi;colon-"),
        customer(2, prefix="eq=ua:ls-"),
        customer(3, prefix="spa ce&amp="),
    ]
    with run_emulator(records=0, max_url_length=1000) as emulator:
        deyel_conn(url=emulator.url)
        # 100 keys in one search make a request line of about 4,800 characters: refused, the load fails.
        with pytest.raises(DeyelRequestError, match="URI Too Long") as refused:
            load(long)
        assert refused.value.status == 414 and stored(emulator) == {}

        emulator.reset()
        assert counts(load(long + odd, max_search_length=800)) == (103, 0, 0, 0)
        head = len("cdCustomer%3Din%3A")
        per_search = (800 - head) // len("LONG-" + "x" * 34 + "-00000%3B")  # 15 keys of 48 encoded characters
        # A search per group of long keys (the first chunk of 100), then for the second chunk: the key
        # holding ';' alone, the two others ('=', ':', '&', a space: a filter's value is all after its
        # 'op:') in one.
        searches = -(-100 // per_search) + 2
        # On an empty form each in search finds nothing: each is confirmed by an eq search of its first key
        # (all but the ';' key's eq search), and one page of the form shows no instance to prove the
        # separator on.
        assert emulator.methods() == {"GET": searches + (searches - 1) + 1, "POST": 103}
        assert emulator.stats()["status_counts"].get("414") is None

        emulator.reset()
        assert counts(load(long + odd, max_search_length=800)) == (0, 0, 103, 0)
        # The first search now finds 15: once per load, a page of one proves the count header counts it.
        assert emulator.methods() == {"GET": searches + 1}
        assert_state_is(emulator, long + odd)

        emulator.reset()
        assert counts(load(odd, batch_size=1)) == (0, 0, 3, 0)  # one eq search per record
        # +1: the first search's one instance with a total of 1 proves nothing (a header counting the page
        # says so too); its next page does: empty, with a total of 1, the header counts more than the page.
        assert emulator.methods() == {"GET": 4}


# -- what the server's answers prove -------------------------------------------------------------------------

SUMMARY_ONLY = [{"idObjectValue": "1", "links": [{"rel": "self", "href": "/forms/ERP_CUSTOMER/instances/1"}]}]
FILTER_IGNORED = [{"idObjectValue": "7", KEY: "C-09999", "dsName": "Not asked for"}]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (SUMMARY_ONLY, "instance '1' came without cdCustomer"),
        (FILTER_IGNORED, "instance '7' has cdCustomer='C-09999', a value not asked for"),
    ],
)
def test_a_search_answer_the_key_does_not_explain_fails_before_any_write(emulator, deyel_conn, body, match):
    seed(emulator, [customer(1), customer(9999)])
    emulator.reset()
    emulator.set_faults(
        [{"route": "data", "method": "GET", "action": "status", "status": 200, "body": body, "count": 10}]
    )
    with pytest.raises(DeyelBadResponseError, match=f"{match}, so the server did not apply the search"):
        load([customer(1, dsName="Changed"), customer(2)])
    assert set(emulator.methods()) == {"GET"}  # neither the create of C-00002 nor the update of C-00001


@pytest.mark.parametrize(
    ("server", "searches", "searches_again"),
    [
        # Chunk 1 (100 keys, all in Deyel): 50 of 101 asked proves nothing, then pages of 50 up to an empty
        # one; chunk 2 (80 in Deyel): 50, 30, and an empty page (a short page is no end: page_walker);
        # chunk 3: empty. Again, chunks 2 and 3 hold 100 and 50: 50 + 50 + empty, and 50 of 51 + empty.
        # The first load's chunks 2 (80 of 100 found) and 3 (all new) are each confirmed by an eq search of
        # their last missing key: + 2.
        ({"page_size_max": 50, "send_total": False}, 3 + 3 + 1 + 2, 3 + 3 + 2),
        ({"page_size_max": 50}, 2 + 2 + 1 + 2, 2 + 2 + 1),  # the total (of the search) ends each search
        # Pages of 30 whatever is asked: each search of more than 30 ends at an empty page.
        ({"ignore_page_size": True, "page_size_default": 30, "send_total": False}, 5 + 4 + 1 + 2, 5 + 5 + 3),
        ({}, 3 + 1 + 2, 3 + 1),  # +1: a page of one proves the count header counts the search, not the page
    ],
    ids=["capped-no-total", "capped-total", "size-ignored-no-total", "plain"],
)
def test_a_server_that_caps_pages_below_the_batch_creates_no_duplicate(
    deyel_conn, server, searches, searches_again
):
    before, source = mixed(250, existing=180, changed=20)
    with run_emulator(records=0, **server) as emulator:
        deyel_conn(url=emulator.url)
        seed(emulator, before)
        emulator.reset()
        # A short page (50 of the 101 asked) is not taken as the last: the chunk's keys are all found.
        assert counts(load(source, batch_size=100)) == (70, 20, 160, 0)
        assert emulator.methods() == {"GET": searches, "POST": 70, "PATCH": 20}
        assert_state_is(emulator, source)
        emulator.reset()
        assert counts(load(source, batch_size=100)) == (0, 0, 250, 0)
        assert emulator.methods() == {"GET": searches_again}


def test_a_total_that_ignores_the_search_names_total_header_none_which_then_loads_right(deyel_conn):
    before, source = mixed(150, existing=100, changed=10)
    with run_emulator(records=0, total_ignores_search=True) as emulator:
        deyel_conn(url=emulator.url)
        seed(emulator, [*before, customer(1, prefix="other-")])
        emulator.reset()
        with pytest.raises(
            DeyelIncompleteError,
            match=r"X-Total-Count header says 101 instances match, but the pages held 100 and then ended: "
            r"the header does not count the search .* total_header to none",
        ):
            load(source)
        assert set(emulator.methods()) == {"GET"}

        deyel_conn(url=emulator.url, extra={"total_header": "none"})
        assert counts(load(source)) == (50, 10, 90, 0)
        assert_state_is(emulator, source, prefix="C-")


def test_a_load_that_cannot_start_leaves_no_temporary_rejects_file(emulator, deyel_conn, tmp_path):
    deyel_conn(extra={"paging": "pages"})
    with pytest.raises(DeyelConfigError, match="extra field 'paging' must be one of"):
        load([customer(1)], rejects=str(tmp_path / "out" / "rejects.jsonl"))
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []
