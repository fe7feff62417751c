"""Extraction benchmark: DeyelExtractOperator (time slices) against a raw ``requests`` page loop, the
HttpOperator way and the server's limit; parallel slices under latency for every paging strategy;
``max_workers="auto"`` against a request-rate limit; the per-call cost; the settle margin's wait.

Every table goes through bench/harness.py: its variants run interleaved, N rounds, compared by medians.
Every variant runs in a fresh subprocess (``bench/_extract_child.py``) that reports its own peak RSS and
does its set-up (token, session) before its clock starts, and the emulator runs in a process of its own,
so neither memory is counted in the other.

    python -m bench extract                     # 100k and 1M instances
    BENCH_EXTRACT_BIG=0 python -m bench extract  # 100k only
    python -m bench --quick extract             # small sizes: checks that every table runs
    BENCH_BEFORE=2c8146a python -m bench extract  # plus a row for the operator of that commit's provider/

``BENCH_BEFORE`` (a git revision of this repository) adds the operator as that revision left it to the
extraction table, in the same interleaved rounds: a before/after pair measured on one machine at one time
(2c8146a is the tree before issue 24's engine work).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.harness import Column, Measurement, Table, Variant, quick, rate, run_table, sized

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID, CLIENT_SECRET = "DEYELBOT", "BOTDEYEL312!"
PAGE_SIZE = 1000
#: Ten seconds between updates: a million instances span 116 days from 2026-01-01, all in the past.
STEP_MS = 10_000
#: The extraction table pages by offset on every side (the emulator and the operator's connection agree).
OFFSET = {"paging": "offset"}
RSS = Column("peak_rss_mb", "peak RSS (MB, max)", "max")
REQUESTS = Column("requests", "requests", "exact")
RECORDS = Column("records", "records", "exact")


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
        params={"search": "dtLastUpdate=gte:0", "pageSize": "1", "limit": "1"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    ).raise_for_status()
    requests.post(url + "/_emulator/reset", timeout=60)


@contextmanager
def provider_at(revision: str) -> Iterator[str]:
    """A folder holding ``provider/`` as ``revision`` left it (``git archive``), to put first on PYTHONPATH:
    it wins over the editable install's path entry, so a child imports that revision's deyel_provider."""
    with tempfile.TemporaryDirectory(prefix="deyel-bench-before-") as folder:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", revision, "provider"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        yield str(Path(folder) / "provider")


def child(
    variant: str, url: str, conn_extra: dict | None = None, pythonpath: str | None = None, **options: object
) -> Measurement:
    """Run one variant in a fresh interpreter; its measurement, with records/s. Raises if it failed (the
    harness makes that a failed row). ``pythonpath`` puts another provider tree first."""
    with tempfile.TemporaryDirectory(prefix="deyel-bench-") as folder:
        connection = {"conn_type": "deyel", "host": url, "login": CLIENT_ID, "password": CLIENT_SECRET}
        extra = {"cache": "memory", **(conn_extra or {})}
        env = {
            **os.environ,
            "AIRFLOW_HOME": folder,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_DEYEL_DEFAULT": json.dumps({**connection, "extra": extra}),
            "AIRFLOW_CONN_DEYEL_HTTP": json.dumps({"conn_type": "http", "host": url}),
        }
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
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
        tail = (result.stderr or result.stdout).strip().splitlines()[-2:]
        raise RuntimeError(f"exit {result.returncode}: {' | '.join(tail)}")
    m = json.loads(lines[-1])
    return rate(m.pop("records"), m.pop("seconds"), **m)


def extraction_table(sizes: list[int]) -> None:
    before = os.environ.get("BENCH_BEFORE")
    for size in sizes:
        with emulator(size, updated_step_ms=STEP_MS, **OFFSET) as url, ExitStack() as stack:
            old_tree = stack.enter_context(provider_at(before)) if before else None

            def variant(name: str, conn: dict | None = OFFSET, url: str = url, tree: Any = None) -> Any:
                return lambda: child(name, url, conn, tree, page_size=PAGE_SIZE)

            previous = (
                [Variant(f"DeyelExtractOperator at {before}", variant("operator", tree=old_tree))]
                if before
                else []
            )

            run_table(
                Table(
                    f"Full extraction of a static form, {size:,} instances, JSON Lines to a local file, "
                    f"offset paging, pages of {PAGE_SIZE}, one worker",
                    metric="records_per_s",
                    unit="records/s",
                    baseline="raw page loop (offsets)",
                    references=["server limit"],
                    columns=[RECORDS, RSS, REQUESTS],
                    note=(
                        "raw page loop: one requests.Session, page after page by offset, each page parsed "
                        "once and\nwritten as compact JSON Lines (what the operator writes). HttpOperator: "
                        "pagination_function\n(next offset from the count header), every page parsed once "
                        "in response_filter; it keeps\nevery response until the last page. server limit: the "
                        "same pages, bytes downloaded and dropped\n(no parsing, no writing), two requests in "
                        "flight: the most any client could do here.\nTokens and sessions are made before "
                        "each clock starts, on every side."
                    ),
                ),
                [
                    Variant("DeyelExtractOperator (time slices)", variant("operator")),
                    Variant("raw page loop (offsets)", variant("raw")),
                    Variant("HttpOperator + pagination_function", variant("httpop")),
                    Variant("server limit", variant("server_limit")),
                    *previous,
                ],
            )


PAGING = {
    "page": ({}, {}),
    "offset": ({"paging": "offset"}, {"paging": "offset"}),
    "link": ({"paging": "link"}, {"paging": "link"}),
    "page, no total": ({}, {"send_total": "false"}),
}


def parallel_table() -> None:
    records, latency, page = sized(20_000, 2_000), 50, 100
    for name, (conn_extra, server) in PAGING.items():
        with emulator(records, latency_ms=latency, **server) as url:

            def workers(w: int | str, url: str = url, conn: dict = conn_extra) -> Any:
                return lambda: child("operator", url, conn, page_size=page, max_workers=w)

            run_table(
                Table(
                    f"Parallel slices, {name} paging: {records:,} records, pages of {page}, {latency} ms "
                    "latency per request",
                    metric="records_per_s",
                    unit="records/s",
                    baseline="1 worker",
                    columns=[REQUESTS, RSS],
                ),
                [
                    Variant("1 worker", workers(1)),
                    Variant("4 workers", workers(4)),
                    Variant("auto", workers("auto")),
                ],
            )


def rate_limit_table() -> None:
    records, latency, page, limit = sized(60_000, 3_000), 50, 100, 40
    server = {"latency_ms": latency, "rate_limit": limit, "rate_window": 1.0, "rate_limit_status": 429}

    def limited(workers: int | str) -> Any:
        def run() -> Measurement:
            with emulator(records, **server) as url:  # a fresh emulator: its own limit window and counters
                m = child("operator", url, page_size=page, max_workers=workers, stats=True)
            sent = m["api_requests"] / m["seconds"]
            return {**m, "requests_per_s": sent, "of_limit": 100 * sent / limit}

        return run

    run_table(
        Table(
            f"max_workers against a limit of {limit} requests/s (429 with Retry-After: 1), "
            f"{records:,} records, pages of {page}, {latency} ms latency",
            metric="requests_per_s",
            unit="requests/s",
            baseline="1 worker",
            columns=[
                RECORDS,
                Column("seconds", "seconds"),
                Column("of_limit", "% of the limit"),
                Column("rate_limited", "429 answers", "exact"),
            ],
            note=(
                "requests/s counts every request the server answered, 429s included (what the limit counts)."
            ),
        ),
        [Variant("1 worker", limited(1)), Variant("8 workers", limited(8)), Variant("auto", limited("auto"))],
    )


def calls_table() -> None:
    calls = sized(2000, 200)

    def per_call(name: str, url: str) -> Any:
        def run() -> Measurement:
            m = child(name, url, calls=calls)
            return {**m, "ms_per_call": m["seconds"] * 1000 / calls}

        return run

    with emulator(1000) as url:
        run_table(
            Table(
                f"Per-call cost of {calls:,} authenticated GETs of one instance (emulator in its own "
                "process); each side's token, session and 20 warm-up calls made before its clock starts",
                metric="ms_per_call",
                unit="ms per call",
                baseline="raw requests.Session",
                note="HttpHook.run builds a new session for every call: that is its way, measured as it is.",
            ),
            [
                Variant("raw requests.Session", per_call("calls_raw", url)),
                Variant("DeyelHook.request", per_call("calls_hook", url)),
                Variant("HttpHook.run, Bearer header", per_call("calls_httphook", url)),
            ],
        )


def margin_table() -> None:
    """The settle margin's cost: a data-interval run started as its interval ends waits for the end to settle
    (settle_seconds plus the Date header's one-second resolution); a watermark run waits for nothing."""
    settles = (0, 2) if quick() else (0, 10, 30)
    # The instances' dtLastUpdate one a minute over the last hour and a half: the window holds 60 of them.
    start_ms = int(time.time() * 1000) - 90 * 60_000
    with emulator(90, updated_start_ms=start_ms, updated_step_ms=60_000) as url:

        def scheduled(settle: int, ago: int) -> Any:
            extra = {"settle_seconds": settle}
            return lambda: child("scheduled", url, extra, page_size=PAGE_SIZE, ago=ago)

        variants = []
        for settle in settles:
            variants.append(Variant(f"settle_seconds={settle}, started at its end", scheduled(settle, 0)))
            variants.append(
                Variant(
                    f"settle_seconds={settle}, started {settle + 2} s after", scheduled(settle, settle + 2)
                )
            )
        rows = run_table(
            Table(
                "The settle margin's cost: a scheduled data-interval run (the last hour, 60 instances "
                "changed in it) started as its interval ends, against the same run once its end has settled",
                metric="seconds",
                unit="seconds",
                columns=[REQUESTS],
            ),
            variants,
        )
    by_label = {row.label: row for row in rows}
    print()
    for settle in settles:
        at_end = by_label[f"settle_seconds={settle}, started at its end"].median("seconds")
        settled = by_label[f"settle_seconds={settle}, started {settle + 2} s after"].median("seconds")
        wait = "n/a" if at_end is None or settled is None else f"{at_end - settled:.2f} s"
        print(f"- extra wait at settle_seconds={settle}: {wait} (difference of the medians)")
    print(
        "\nWatermark runs (no data interval) end at the server's Date less settle_seconds and wait for "
        "nothing:\ntheir changes are read by the next run instead."
    )


def run() -> None:
    if quick():
        sizes = [5_000]
    else:
        sizes = [100_000, 1_000_000] if os.environ.get("BENCH_EXTRACT_BIG", "1") != "0" else [100_000]
    extraction_table(sizes)
    calls_table()
    parallel_table()
    rate_limit_table()
    margin_table()
