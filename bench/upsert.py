"""Load benchmark: DeyelUpsertOperator's engine with 1, 4 and ``auto`` workers against a naive loop that
searches and writes each record (what one ``DeyelOperator`` call per record amounts to), at 50 ms latency.

The scenario: 10,000 records into ERP_CUSTOMER, which holds 8,000 of them already, 2,000 of those with
other values: 2,000 creates, 2,000 updates, 6,000 unchanged. Each variant gets a fresh emulator (its own
process) seeded the same way without latency; then every data request is delayed 50 ms (a ``delay``
fault, served concurrently) and the counters are reset. The naive loop always makes two requests per
record, whatever the record, so its rate is measured on the first 1,000 records (at 50 ms a request,
10,000 would take over 15 minutes).

    python -m bench upsert
    BENCH_UPSERT_RECORDS=2000 BENCH_UPSERT_LIMIT=0 python -m bench upsert   # quicker, no rate-limit table

A second table loads 2,000 records into an empty form under a limit of 40 requests/s (Deyel's 403
``REQUEST_LIMIT_EXCEEDED``), the naive loop and ``auto`` in the same scenario (it used to be a row of the
first table, divided by the naive loop of another scenario): ``auto`` halves and paces, every record gets in.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from bench.extract import emulator
from bench.harness import Column, Measurement, Table, Variant, run_table, sized

FORM, KEY = "ERP_CUSTOMER", "cdCustomer"
LATENCY_MS = 50
RATE_LIMIT = 40


def customer(i: int, **changes: Any) -> dict[str, Any]:
    return {
        KEY: f"C-{i:06d}",
        "dsName": f"Customer {i}",
        "cdCountry": ("AR", "BR", "UY", "CL", "MX")[i % 5],
        "qtEmployee": i % 700,
        "cbIsPartner": i % 3 == 0,
        "dtOpening": str(1540782000000 + i * 86_400_000),
        **changes,
    }


def scenario(records: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(instances before the load, the source): 80% of the source exists, a quarter of that differs."""
    existing, changed = records * 8 // 10, records * 2 // 10
    before = [customer(i, dsName=f"Old {i}") if i < changed else customer(i) for i in range(existing)]
    return before, [customer(i) for i in range(records)]


def _control(url: str, method: str, path: str, body: Any = None) -> Any:
    import requests

    response = requests.request(method, url + "/_emulator" + path, json=body, timeout=60)
    response.raise_for_status()
    return response.json()


def _hook(url: str) -> Any:
    from deyel_provider.hooks.deyel import DeyelHook

    connection = {"conn_type": "deyel", "host": url, "login": "DEYELBOT", "password": "BOTDEYEL312!"}
    os.environ["AIRFLOW_CONN_DEYEL_BENCH"] = json.dumps({**connection, "extra": {"cache": "memory"}})
    return DeyelHook("deyel_bench")


def _prepared(url: str, before: list[dict[str, Any]]) -> Any:
    from deyel_provider.load.upsert import load_records as upsert

    hook = _hook(url)
    upsert(hook, FORM, before, KEY, max_workers=8, progress_interval=3600)
    _control(
        url, "POST", "/faults", {"rules": [{"route": "data", "action": "delay", "delay_ms": LATENCY_MS}]}
    )
    _control(url, "POST", "/reset")
    return hook


def _measured(url: str, records: int, run: Any) -> dict[str, Any]:
    started = time.perf_counter()
    outcome = run()
    seconds = time.perf_counter() - started
    methods = _control(url, "GET", "/stats/methods")
    stats = _control(url, "GET", "/stats")
    return {
        "records": records,
        "seconds": seconds,
        "requests": sum(methods.values()),
        # Applied writes (a refused one is a request, not a write).
        "writes": stats["status_counts"].get("201", 0) + stats["status_counts"].get("202", 0),
        "refused": stats["rate_limited"],
        "outcome": outcome,
    }


def ours(before: list, source: list, workers: int | str, *, rerun: bool = False, **server: Any) -> dict:
    from deyel_provider.load.upsert import load_records as upsert

    with emulator(0, **server) as url:
        hook = _prepared(url, before)
        if rerun:
            upsert(hook, FORM, source, KEY, max_workers=workers, progress_interval=3600)
            _control(url, "POST", "/reset")
        return _measured(
            url,
            len(source),
            lambda: upsert(hook, FORM, source, KEY, max_workers=workers, progress_interval=3600).as_dict(),
        )


def naive(before: list, source: list, **server: Any) -> dict:
    """For each record: search its key, then POST it, or PATCH it whole with the dtLastUpdate just read."""
    with emulator(0, **server) as url:
        hook = _prepared(url, before)

        def loop() -> None:
            for record in source:
                search = {"search": f"{KEY}=eq:{record[KEY]}"}
                found = hook.request("GET", f"/forms/{FORM}/instances", params=search).json()
                if found:
                    values = {**record, "dtLastUpdate": found[0]["dtLastUpdate"]}
                    hook.update_instance(FORM, found[0]["idObjectValue"], values)
                else:
                    hook.create_instance(FORM, record)

        return _measured(url, len(source), loop)


COLUMNS = [
    Column("records", "records", "exact"),
    Column("seconds", "seconds"),
    Column("requests", "requests", "exact"),
    Column("requests_per_record", "requests/record"),
    Column("writes", "writes", "exact"),
]


def run() -> None:
    records = int(os.environ.get("BENCH_UPSERT_RECORDS", str(sized(10_000, 200))))
    sample = min(records, int(os.environ.get("BENCH_UPSERT_NAIVE", str(sized(1000, 50)))))
    limited = os.environ.get("BENCH_UPSERT_LIMIT", "1") != "0"
    # The progress, growth and retry lines would bury the table.
    quiet = logging.getLogger("deyel_provider")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())  # else logging's last resort prints the warnings
    before, source = scenario(records)
    changed = records * 2 // 10
    naive_label = f"naive loop (first {sample:,})"
    run_table(
        Table(
            f"{records:,} records into {FORM}, which holds {len(before):,} of them ({changed:,} with other "
            f"values): {records - len(before):,} creates, {changed:,} updates, the rest unchanged; "
            f"{LATENCY_MS} ms per request, a fresh emulator in its own process for every run",
            metric="records_per_s",
            unit="records/s",
            baseline=naive_label,
            columns=COLUMNS,
            note=(
                "naive loop: what one DeyelOperator call per step amounts to, search the key then POST or "
                "PATCH,\nfor every record. It makes two requests a record whatever the record holds, so its "
                f"rate is measured\non the first {sample:,} (its requests/record is the same at any size)."
            ),
        ),
        [
            Variant(naive_label, lambda: _rate(naive(before, source[:sample]))),
            Variant("DeyelUpsertOperator, 1 worker", lambda: _rate(ours(before, source, 1))),
            Variant("DeyelUpsertOperator, 4 workers", lambda: _rate(ours(before, source, 4))),
            Variant("DeyelUpsertOperator, auto", lambda: _rate(ours(before, source, "auto"))),
            Variant(
                "DeyelUpsertOperator, auto, rerun (nothing to write)",
                lambda: _rate(ours(before, source, "auto", rerun=True)),
            ),
        ],
    )
    if not limited:
        print("\n(BENCH_UPSERT_LIMIT=0: the rate-limit table is not run)")
        return
    # Like with like: the same creates into an empty form (seeding would be rate limited too), the same
    # limit and latency on both sides.
    fresh = source[: min(records, sized(2000, 200))]
    naive_fresh = min(len(fresh), sample)
    server: dict[str, Any] = {"rate_limit": RATE_LIMIT, "rate_window": 1.0}
    naive_limited = f"naive loop (first {naive_fresh:,})"
    run_table(
        Table(
            f"{len(fresh):,} creates into an empty {FORM} under a limit of {RATE_LIMIT} requests/s (403 "
            f"REQUEST_LIMIT_EXCEEDED), {LATENCY_MS} ms per request, on both sides",
            metric="records_per_s",
            unit="records/s",
            baseline=naive_limited,
            columns=[
                *COLUMNS,
                Column("requests_per_s", "requests/s"),
                Column("refused", "refused (403)", "exact"),
            ],
            note="auto halves and paces under the limit; every record gets in on both sides.",
        ),
        [
            Variant(naive_limited, lambda: _rate(naive([], fresh[:naive_fresh], **server))),
            Variant("DeyelUpsertOperator, auto", lambda: _rate(ours([], fresh, "auto", **server))),
        ],
    )


def _rate(m: dict[str, Any]) -> Measurement:
    return {
        **m,
        "records_per_s": m["records"] / m["seconds"],
        "requests_per_record": m["requests"] / m["records"],
        "requests_per_s": m["requests"] / m["seconds"],
    }
