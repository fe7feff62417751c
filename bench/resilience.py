"""Resilience benchmark: the same extraction with and without a fault mix, side by side.

20,000 instances in time slices of at most 100, JSON Lines, against an emulator in this process. The
fault mix is the chaos test's (tests/test_chaos.py): 10% 503, 2% 429 with ``Retry-After: 1``, one dropped
connection, one revoked and one expired token, all seeded. Retries wait what the server asks
(``Retry-After``, here 1 s) and otherwise back off from 10 ms, so the table shows the price of the faults,
not of long backoffs.

    python -m bench resilience
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Column, Table, Variant, run_table, sized

RECORDS = 20_000
PAGE_SIZE = 100
RETRY = {"retry_backoff": 0.01, "retry_max_backoff": 0.1, "retry_after_max": 1}
FAULT_MIX: list[dict[str, Any]] = [
    {"route": "data", "action": "revoke", "after": 40, "count": 1},
    {"route": "data", "action": "drop", "after": 90, "count": 1},
    {"route": "data", "action": "expire", "after": 140, "count": 1},
    {"route": "data", "action": "status", "status": 503, "probability": 0.10, "seed": 7},
    {"route": "data", "action": "status", "status": 429, "retry_after": 1, "probability": 0.02, "seed": 11},
]
_WAIT = re.compile(r" in ([0-9.]+) s$")


class _RetryLines(logging.Handler):
    """Counts the retry policy's warnings and adds up the waits they announce."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.waited = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        match = _WAIT.search(record.getMessage())
        self.waited += float(match.group(1)) if match else 0.0


def _extract(emulator: Any, folder: Path, name: str, faults: list[dict[str, Any]]) -> dict[str, Any]:
    from deyel_provider.auth.cache import PROCESS_CACHE
    from deyel_provider.extract.progress import Progress
    from deyel_provider.extract.run import extract
    from deyel_provider.extract.spec import OutputSpec, ReadSpec
    from deyel_provider.hooks.deyel import DeyelHook

    PROCESS_CACHE.clear()  # each run starts cold: its first token is a POST
    emulator.reset()
    emulator.set_faults(faults)
    retries = _RetryLines()
    logger = logging.getLogger("deyel_provider.http.retry")
    logger.addHandler(retries)
    target = folder / f"{name}.jsonl"
    hook = DeyelHook("deyel_bench")
    started = time.perf_counter()
    try:
        result = extract(
            hook,
            ReadSpec("CRM_ACCOUNT", page_size=PAGE_SIZE),
            OutputSpec(str(target)),
            progress=Progress(3600),
        )
    finally:
        seconds = time.perf_counter() - started
        logger.removeHandler(retries)
        hook.close()
        emulator.clear_faults()
    stats = emulator.stats()
    return {
        "records": result.records,
        "seconds": seconds,
        "retries": retries.count,
        "waited": retries.waited,
        "token_posts": stats["token_requests"],
        "requests": stats["api_requests"],
        "faults": stats["faults_injected"],
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
    }


def run() -> None:
    from deyel_provider.emulator import run_emulator

    records = sized(RECORDS, 2_000)
    # The policy's warnings are counted by a handler; the console stays for the table.
    logging.getLogger("deyel_provider").propagate = False
    with tempfile.TemporaryDirectory(prefix="deyel-bench-") as tmp, run_emulator(records=records) as emulator:
        folder = Path(tmp)
        os.environ["AIRFLOW_CONN_DEYEL_BENCH"] = json.dumps(
            {
                "conn_type": "deyel",
                "host": emulator.url,
                "login": "DEYELBOT",
                "password": "BOTDEYEL312!",
                "extra": {"cache": "memory", **RETRY},
            }
        )

        def one(name: str, faults: list[dict[str, Any]]) -> Any:
            def measured() -> dict[str, Any]:
                m = _extract(emulator, folder, name, faults)
                return {**m, "records_per_s": m["records"] / m["seconds"], "sha": m["sha256"][:12]}

            return measured

        rows = run_table(
            Table(
                f"Extraction of {records:,} instances, pages of {PAGE_SIZE}, JSON Lines; fault mix: 10% 503, "
                "2% 429 (Retry-After: 1), one dropped connection, one revoked and one expired token",
                metric="records_per_s",
                unit="records/s",
                baseline="no faults",
                columns=[
                    Column("records", "records", "exact"),
                    Column("requests", "requests", "exact"),
                    Column("faults", "faults", "exact"),
                    Column("retries", "retries", "exact"),
                    Column("waited", "waited (s)"),
                    Column("token_posts", "token POSTs", "exact"),
                    Column("sha", "output sha256"),
                ],
            ),
            [Variant("no faults", one("clean", [])), Variant("fault mix", one("faults", FAULT_MIX))],
        )
    digests = {s["sha256"] for row in rows for s in row.samples}
    print(
        f"\nEvery run's output identical: {'yes' if len(digests) == 1 else 'NO'} ({len(digests)} digest(s))"
    )
