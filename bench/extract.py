"""Extraction benchmark: DeyelExtractOperator (time slices) against a raw ``requests`` page loop (how the
provider paged before it sliced) and the HttpOperator way; parallel slices under latency for every paging
strategy; ``max_workers="auto"`` against a request-rate limit.

Every variant runs in a fresh subprocess (``bench/_extract_child.py``) that reports its own peak RSS, and the
emulator runs in a process of its own, so neither memory is counted in the other.

    python -m bench extract                     # default run: 100k for all, 1M for ours and the raw loop
    BENCH_EXTRACT_BIG=0 python -m bench extract  # skip the 1M rows (about a minute less)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID, CLIENT_SECRET = "DEYELBOT", "BOTDEYEL312!"
PAGE_SIZE = 1000
#: Ten seconds between updates: a million instances span 116 days from 2026-01-01, all in the past.
STEP_MS = 10_000


@contextmanager
def emulator(records: int, **settings: object) -> Iterator[str]:
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]
    process = subprocess.Popen(
        [sys.executable, "-m", "deyel_provider.emulator", "--port", "0", "--records", str(records), *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the emulator did not start: {url!r}")
        _warm(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _warm(url: str) -> None:
    """Build the emulator's dtLastUpdate index before anything is timed (it is built on first use)."""
    import requests

    token = requests.post(
        url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=60,
    ).json()["access_token"]
    requests.get(
        url + "/forms/CRM_ACCOUNT/instances",
        params={"search": "dtLastUpdate=gte:0", "pageSize": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    ).raise_for_status()
    requests.post(url + "/_emulator/reset", timeout=60)


def child(variant: str, url: str, conn_extra: dict | None = None, **options: object) -> dict:
    """Run one variant in a fresh interpreter; it prints one JSON line with its measurements."""
    with tempfile.TemporaryDirectory(prefix="deyel-bench-") as folder:
        connection = {"conn_type": "deyel", "host": url, "login": CLIENT_ID, "password": CLIENT_SECRET}
        env = {
            **os.environ,
            "AIRFLOW_HOME": folder,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_DEYEL_DEFAULT": json.dumps({**connection, "extra": conn_extra or {}}),
            "AIRFLOW_CONN_DEYEL_HTTP": json.dumps({"conn_type": "http", "host": url}),
        }
        args = json.dumps({"variant": variant, "url": url, "folder": folder, **options})
        result = subprocess.run(
            [sys.executable, "-m", "bench._extract_child", args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {result.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def _row(label: str, records: int, m: dict, baseline: float | None) -> str:
    if "error" in m:
        return f"| {label} | {records:,} | failed: {m['error'][:80]} | | | |"
    rate = m["records"] / m["seconds"]
    ratio = f"{rate / baseline:.2f}x" if baseline else "1.00x"
    requests = m.get("requests", "")
    return f"| {label} | {m['records']:,} | {rate:,.0f} | {ratio} | {m['peak_rss_mb']:.0f} | {requests} |"


def extraction_table(big: bool) -> None:
    print(
        "Full extraction of a static form, JSON Lines to a local file, pages of 1000, one worker "
        "(ratio: records/s over the raw page loop)\n"
    )
    print("| variant | records | records/s | vs raw page loop | peak RSS (MB) | requests |")
    print("|---|---:|---:|---:|---:|---:|")
    sizes = [100_000, 1_000_000] if big else [100_000]
    for size in sizes:
        with emulator(size, updated_step_ms=STEP_MS) as url:
            raw = child("raw", url, page_size=PAGE_SIZE)
            base = raw["records"] / raw["seconds"] if "error" not in raw else None
            ours = child("operator", url, page_size=PAGE_SIZE)
            print(_row("DeyelExtractOperator (time slices)", size, ours, base), flush=True)
            print(_row("raw requests page loop (offsets)", size, raw, base), flush=True)
            print(_row("HttpOperator + pagination_function", size, child("httpop", url), base), flush=True)
    print(
        "\nThe raw loop is what the operator did before it sliced (page after page by offset), at its"
        "\npractical limit; it loses instances when the form changes meanwhile. The HttpOperator way keeps"
        "\nevery response in memory until the last page: its peak RSS grows with the total."
    )


PAGING = {
    "page": ({}, {}),
    "offset": ({"paging": "offset"}, {"paging": "offset"}),
    "link": ({"paging": "link"}, {"paging": "link"}),
    "page, no total": ({}, {"send_total": "false"}),
}


def parallel_table() -> None:
    records, latency, page = 20_000, 50, 100
    print(
        f"\nParallel slices: {records:,} records, pages of {page}, {latency} ms latency per request "
        "(speed-up over one worker, same paging)\n"
    )
    print("| paging | max_workers | records/s | speed-up | requests | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (conn_extra, server) in PAGING.items():
        with emulator(records, latency_ms=latency, **server) as url:
            runs = [
                (w, child("operator", url, conn_extra, page_size=page, max_workers=w)) for w in (1, 4, "auto")
            ]
        base = runs[0][1]["records"] / runs[0][1]["seconds"] if "error" not in runs[0][1] else None
        for workers, m in runs:
            if "error" in m or base is None:
                print(f"| {name} | {workers} | failed: {m.get('error', '')[:60]} | | | |", flush=True)
                continue
            rate = m["records"] / m["seconds"]
            print(
                f"| {name} | {workers} | {rate:,.0f} | {rate / base:.2f}x | {m['requests']} "
                f"| {m['peak_rss_mb']:.0f} |",
                flush=True,
            )


def rate_limit_table() -> None:
    records, latency, page, limit = 60_000, 50, 100, 40
    print(
        f"\nmax_workers='auto' against a limit of {limit} requests/s (429 with Retry-After: 1), {records:,} "
        f"records, pages of {page}, {latency} ms latency\n"
    )
    print("| max_workers | records | seconds | requests/s | of the limit | 429 answers | failed |")
    print("|---|---:|---:|---:|---:|---:|---|")
    server = {"latency_ms": latency, "rate_limit": limit, "rate_window": 1.0, "rate_limit_status": 429}
    for workers in (1, 8, "auto"):
        with emulator(records, **server) as url:
            m = child("operator", url, page_size=page, max_workers=workers, stats=True)
        if "error" in m:
            print(f"| {workers} | failed: {m['error'][:80]} | | | | | yes |", flush=True)
            continue
        sent = m["api_requests"]
        rate = sent / m["seconds"]
        print(
            f"| {workers} | {m['records']:,} | {m['seconds']:.1f} | {rate:.1f} | {rate / limit:.0%} "
            f"| {m['rate_limited']} | no |",
            flush=True,
        )
    print("\nrequests/s counts every request the server answered, 429s included (what the limit counts).")


def calls_table() -> None:
    calls = 2000
    print(f"\nPer-call cost of {calls:,} authenticated GETs of one instance (emulator in its own process)\n")
    print("| client | ms per call | vs raw Session |")
    print("|---|---:|---:|")
    with emulator(1000) as url:
        raw = child("calls_raw", url, calls=calls)
        hook = child("calls_hook", url, calls=calls)
        http = child("calls_httphook", url, calls=calls)
    base = raw["seconds"] / calls
    for label, m in (
        ("raw requests.Session, fixed Bearer header", raw),
        ("DeyelHook.request", hook),
        ("HttpHook.run, token in a header (new session per call)", http),
    ):
        per_call = m["seconds"] / calls
        print(f"| {label} | {per_call * 1000:.3f} | {per_call / base:.2f}x |")


def margin_table() -> None:
    """The settle margin's cost: a data-interval run started as its interval ends waits for the end to settle
    (settle_seconds plus the Date header's one-second resolution); a watermark run waits for nothing."""
    print(
        "\nThe settle margin's cost: a scheduled data-interval run (the last hour, 60 instances changed in "
        "it) started as its interval ends, against the same run started once the end has settled\n"
    )
    print("| settle_seconds | run started | seconds | extra wait (s) |")
    print("|---:|---|---:|---:|")
    # The instances' dtLastUpdate one a minute over the last hour and a half: the window holds 60 of them.
    import time

    start_ms = int(time.time() * 1000) - 90 * 60_000
    with emulator(90, updated_start_ms=start_ms, updated_step_ms=60_000) as url:
        for settle in (0, 10, 30):
            extra = {"settle_seconds": settle}
            settled = child("scheduled", url, extra, page_size=PAGE_SIZE, ago=settle + 2)
            at_end = child("scheduled", url, extra, page_size=PAGE_SIZE, ago=0)
            if "error" in settled or "error" in at_end:
                print(f"| {settle} | failed: {(settled.get('error') or at_end.get('error'))[:80]} | | |")
                continue
            print(f"| {settle} | {settle + 2} s after its end | {settled['seconds']:.2f} | |", flush=True)
            wait = at_end["seconds"] - settled["seconds"]
            print(f"| {settle} | at its end | {at_end['seconds']:.2f} | {wait:.2f} |", flush=True)
    print(
        "\nWatermark runs (no data interval) end at the server's Date less settle_seconds and wait for "
        "nothing:\ntheir changes are read by the next run instead."
    )


def run() -> None:
    big = os.environ.get("BENCH_EXTRACT_BIG", "1") != "0"
    extraction_table(big)
    margin_table()
    parallel_table()
    rate_limit_table()
    calls_table()
