"""Chaos: an extraction of 20,000 instances through 503s, 429s, a dropped connection, a revoked and an expired
token writes exactly the bytes of a fault-free run, and its log shows the retries that got it there."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest

from deyel_provider.emulator import run_emulator
from deyel_provider.operators.extract import DeyelExtractOperator
from tests.support.contract import Before

RECORDS = 20_000
PAGE_SIZE = 100

#: The fault mix on data calls. One-off rules come first: a request they take is not also drawn for by the
#: random ones, and every rule's seen/applied counters depend only on the request sequence, which is itself
#: determined by the seeds. So the same faults hit the same requests on every run.
FAULT_MIX = [
    {"route": "data", "action": "revoke", "after": 40, "count": 1},
    {"route": "data", "action": "drop", "after": 90, "count": 1},
    {"route": "data", "action": "expire", "after": 140, "count": 1},
    {"route": "data", "action": "status", "status": 503, "probability": 0.10, "seed": 7},
    {"route": "data", "action": "status", "status": 429, "retry_after": 1, "probability": 0.02, "seed": 11},
]


def extract_to(path, **op_kwargs) -> dict:
    task = DeyelExtractOperator(
        task_id="chaos",
        form="CRM_ACCOUNT",
        output=str(path),
        incremental_field=None,
        page_size=PAGE_SIZE,
        **op_kwargs,
    )
    return task.execute({})


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def big_emulator(deyel_conn):
    with run_emulator(records=RECORDS) as emulator:
        deyel_conn(url=emulator.url)
        yield emulator


def test_an_extraction_under_a_fault_mix_writes_exactly_the_fault_free_bytes(big_emulator, tmp_path, caplog):
    emulator = big_emulator
    emulator.set_faults(FAULT_MIX)
    caplog.set_level(logging.INFO)
    chaotic = tmp_path / "chaos.jsonl"
    result = extract_to(chaotic)
    stats = emulator.stats()
    rules = emulator.state.faults.rules()
    logged = list(caplog.records)

    # The reference: the same extraction without faults (it reuses the last token: no token request).
    emulator.clear_faults()
    emulator.reset()
    clean = tmp_path / "clean.jsonl"
    clean_result = extract_to(clean)
    clean_stats = emulator.stats()
    requests = clean_result["requests"]
    assert (clean_stats["token_requests"], clean_stats["api_requests"]) == (0, requests)
    assert clean_stats["faults_injected"] == 0

    # The output: byte for byte the fault-free one, every record once.
    assert chaotic.read_bytes() == clean.read_bytes()
    assert sha256(chaotic) == sha256(clean)
    ids = [json.loads(line)["idObjectValue"] for line in chaotic.read_bytes().splitlines()]
    assert len(ids) == RECORDS == len(set(ids))
    updated = Before.of(emulator).updated
    assert ids == sorted(updated, key=lambda i: (updated[i], int(i)))  # by (dtLastUpdate, id)
    assert result["records"] == clean_result["records"] == RECORDS
    assert result["slices"] == clean_result["slices"]
    assert result["requests"] == requests  # the same plan: retries and replays are not new slices
    assert result["bytes"] == clean_result["bytes"] == chaotic.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chaos.jsonl", "clean.jsonl"]  # no temporary left

    # Every kind of fault fired: the one-off rules once each, the random ones many times.
    applied = {rule["action"] + str(i): rule["applied"] for i, rule in enumerate(rules)}
    assert (applied["revoke0"], applied["drop1"], applied["expire2"]) == (1, 1, 1)
    errors_503, errors_429 = applied["status3"], applied["status4"]
    # Seeded: about 10% and 2% of the ~300 requests (the same numbers on every run).
    assert 10 < errors_503 < 60 and 0 < errors_429 < 20

    # The first token, the one after the revocation, the one after the expiry: the token endpoint is not
    # faulted, and a 401 is renewed by the auth before the retry policy sees anything, so exactly three.
    assert stats["token_requests"] == 3
    assert stats["api_unauthorized"] == 2
    assert stats["faults_injected"] == 3 + errors_503 + errors_429
    assert stats["status_counts"]["503"] == errors_503
    assert stats["status_counts"]["429"] == errors_429
    # Each slice is asked for once, plus once more per 503, 429 and dropped connection (retries), plus once
    # more per renewed token (the auth's replay after the 401).
    assert stats["api_requests"] == requests + errors_503 + errors_429 + 1 + 2

    # The log tells the story: one retry line per transient failure, renewals for the two 401s.
    retries = [r.getMessage() for r in logged if r.name == "deyel_provider.http.retry"]
    assert len(retries) == errors_503 + errors_429 + 1
    assert sum("(HTTP 503)" in line for line in retries) == errors_503
    assert sum("(HTTP 429)" in line for line in retries) == errors_429
    assert sum("(DeyelConnectionError)" in line for line in retries) == 1
    assert all(line.startswith("Deyel GET /forms/CRM_ACCOUNT/instances failed") for line in retries)
    assert any("retry 1 of 4" in line for line in retries)
    renewals = [r.getMessage() for r in logged if "replaying it once with a renewed token" in r.getMessage()]
    assert len(renewals) == 2
    assert all(r.levelno < logging.ERROR for r in logged if r.name.startswith("deyel_provider"))
