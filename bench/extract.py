"""Extraction benchmark: DeyelExtractOperator against a raw ``requests`` loop and the HttpOperator way.

Every variant runs in a fresh subprocess (``bench/_extract_child.py``) that reports its own peak RSS, and the
emulator runs in a process of its own, so neither memory is counted in the other. Pages of 1000 instances.

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
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def child(variant: str, url: str, **options: object) -> dict:
    """Run one variant in a fresh interpreter; it prints one JSON line with its measurements."""
    with tempfile.TemporaryDirectory(prefix="deyel-bench-") as folder:
        env = {
            **os.environ,
            "AIRFLOW_HOME": folder,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_DEYEL_DEFAULT": json.dumps(
                {"conn_type": "deyel", "host": url, "login": CLIENT_ID, "password": CLIENT_SECRET}
            ),
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
        return f"| {label} | {records:,} | failed: {m['error'][:80]} | | |"
    rate = m["records"] / m["seconds"]
    ratio = f"{rate / baseline:.2f}x" if baseline else "1.00x"
    return f"| {label} | {m['records']:,} | {rate:,.0f} | {ratio} | {m['peak_rss_mb']:.0f} |"


def extraction_table(big: bool) -> None:
    print("Extraction, JSON Lines to a local file, pages of 1000 (ratio: records/s over the raw loop)\n")
    print("| variant | records | records/s | vs raw loop | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    sizes = [100_000, 1_000_000] if big else [100_000]
    for size in sizes:
        with emulator(size) as url:
            raw = child("raw", url, page_size=PAGE_SIZE)
            base = raw["records"] / raw["seconds"] if "error" not in raw else None
            ours = child("operator", url, page_size=PAGE_SIZE)
            print(_row("DeyelExtractOperator", size, ours, base), flush=True)
            print(_row("raw requests loop", size, raw, base), flush=True)
            print(_row("HttpOperator + pagination_function", size, child("httpop", url), base), flush=True)
    print(
        "\nThe HttpOperator way keeps every response in memory until the last page (then the text goes to "
        "XCom):\nits peak RSS grows with the total, where the operator's and the raw loop's stay flat."
    )


def parallel_table() -> None:
    records, latency, page = 20_000, 50, 100
    print(f"\nParallel fetching: {records:,} records, pages of {page}, {latency} ms latency per request\n")
    print("| max_workers | records | records/s | speed-up | peak RSS (MB) |")
    print("|---:|---:|---:|---:|---:|")
    with emulator(records, latency_ms=latency) as url:
        seq = child("operator", url, page_size=page, max_workers=1)
        par = child("operator", url, page_size=page, max_workers=4)
    base = seq["records"] / seq["seconds"]
    for workers, m in ((1, seq), (4, par)):
        rate = m["records"] / m["seconds"]
        print(f"| {workers} | {m['records']:,} | {rate:,.0f} | {rate / base:.2f}x | {m['peak_rss_mb']:.0f} |")


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


def run() -> None:
    big = os.environ.get("BENCH_EXTRACT_BIG", "1") != "0"
    extraction_table(big)
    parallel_table()
    calls_table()
