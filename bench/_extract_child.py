"""One run of one variant of bench/extract.py, in a fresh interpreter so that its peak RSS is its own.

Each variant is split in two: its set-up (imports, the token, the session, a warm-up where the table says
so), done before the clock starts, and the returned ``work``, the only part timed. Every variant gets the
same set-up: a token and a session made outside the timed part, whichever side it is on.

Prints one JSON line: records, seconds, peak_rss_mb, cpu_s (this process's CPU in the timed part) and the
variant's own counters (``operator``: ``import_s``, the wall seconds its output's libraries took to import
before the clock, unless ``imports_in_clock``).
"""

from __future__ import annotations

import json
import queue
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FORM_PATH = "/forms/CRM_ACCOUNT/instances"
#: Further measurements a variant reports besides records, seconds and peak RSS.
EXTRA: dict[str, object] = {}
Work = Callable[[], int]


def _token(url: str) -> str:
    import requests

    response = requests.post(
        url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("DEYELBOT", "BOTDEYEL312!"),
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def _session(url: str, token: str | None = None) -> Any:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + (token or _token(url))
    return session


def _jsonl(records: list[Any]) -> str:
    """The operator's JSON Lines: compact separators, non-ASCII kept (what every variant writes)."""
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)


def _total(response: Any) -> int | None:
    raw = response.headers.get("X-Total-Count")
    return int(raw) if raw is not None and raw.isdigit() else None


def operator(options: dict) -> Work:
    from deyel_provider.operators.extract import DeyelExtractOperator

    task = DeyelExtractOperator(
        task_id="bench",
        form="CRM_ACCOUNT",
        output=str(Path(options["folder"]) / options.get("output", "out.jsonl")),
        format=options.get("format", "jsonl"),
        compression=options.get("compression"),
        incremental_field=None,
        page_size=options["page_size"],
        max_workers=options.get("max_workers", 1),
        max_workers_ceiling=options.get("ceiling", 8),
        progress_interval=3600,
    )
    # The token and the session, as the raw loop has them before its clock starts.
    task.hook.get_token()
    task.hook.get_conn()
    if not options.get("imports_in_clock"):
        EXTRA["import_s"] = _output_libraries(options)

    def work() -> int:
        summary = task.execute({})
        EXTRA["requests"] = summary["requests"]
        EXTRA["bytes"] = summary["bytes"]
        if options.get("stats"):
            import requests

            counters = requests.get(options["url"] + "/_emulator/stats", timeout=30).json()
            EXTRA["api_requests"] = counters["api_requests"]
            EXTRA["rate_limited"] = counters["rate_limited"]
        return int(summary["records"])

    return work


def _output_libraries(options: dict) -> float:
    """Import the output's libraries before the clock starts, as every variant's other imports are: a cost
    paid once per task process, not per record, reported apart (``import_s``, seconds) so that a table shows
    it rather than hides it. Parquet's is pyarrow's and, where pandas is installed, pandas': pyarrow imports
    it at its first array made from a list (most of the 0.4-0.6 s, wall, the lake table shows). A writer
    made and dropped imports what the run's writer would: the same code, so the two cannot drift apart."""
    started = time.perf_counter()
    if options.get("format") == "parquet":
        from deyel_provider.extract.formats.parquet import ParquetWriter

        ParquetWriter(lambda number: None)  # opens no file until its first row group
    elif options.get("compression") == "zstd":
        from deyel_provider.storage.compression import zstd_module

        zstd_module()
    return round(time.perf_counter() - started, 3)  # milliseconds: a JSON Lines run's 1e-06 s is 0


def scheduled(options: dict) -> Work:
    """A data-interval run as Airflow starts it: right after its interval ends (``ago`` s before now), on the
    connection's ``settle_seconds``; the seconds it takes include the wait for the end to settle."""
    from datetime import UTC, datetime, timedelta

    from deyel_provider.operators.extract import DeyelExtractOperator

    task = DeyelExtractOperator(
        task_id="bench",
        form="CRM_ACCOUNT",
        output=str(Path(options["folder"]) / "out.jsonl"),
        page_size=options["page_size"],
        progress_interval=3600,
    )
    task.hook.get_token()

    def work() -> int:
        end = datetime.now(UTC) - timedelta(seconds=options.get("ago", 0))
        context = {"data_interval_start": end - timedelta(hours=1), "data_interval_end": end}
        summary = task.execute(context)  # type: ignore[arg-type]
        EXTRA["requests"] = summary["requests"]
        return int(summary["records"])

    return work


def raw(options: dict) -> Work:
    """The practical limit of a hand-written loop: one session, a fixed Bearer header, page after page by
    offset, each page parsed once and written as the operator writes it; it ends on a short page or when
    the offset reaches the count header."""
    url, size = options["url"], options["page_size"]
    session = _session(url)

    def work() -> int:
        count = offset = requests = 0
        with open(Path(options["folder"]) / "out.jsonl", "w", encoding="utf-8") as out:
            while True:
                response = session.get(url + FORM_PATH, params={"offset": offset, "limit": size}, timeout=60)
                response.raise_for_status()
                requests += 1
                records = response.json()
                out.write(_jsonl(records))
                count += len(records)
                offset += len(records)
                total = _total(response)
                if len(records) < size or (total is not None and offset >= total):
                    EXTRA["requests"] = requests
                    return count

    return work


def server_limit(options: dict) -> Work:
    """The most any client could get from this emulator: the same offset pages downloaded with two requests
    in flight, the bytes read and dropped (no parsing, no writing); the count header plans the offsets."""
    from concurrent.futures import ThreadPoolExecutor

    url, size = options["url"], options["page_size"]
    token = _token(url)
    sessions: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for _ in range(2):
        sessions.put(_session(url, token))
    pool = ThreadPoolExecutor(max_workers=2)

    def get(offset: int) -> tuple[int, Any]:
        session = sessions.get()
        try:
            response = session.get(url + FORM_PATH, params={"offset": offset, "limit": size}, timeout=60)
            response.raise_for_status()
            return len(response.content), response
        finally:
            sessions.put(session)

    def work() -> int:
        first_bytes, first = get(0)
        total = _total(first)
        if total is None:
            raise RuntimeError("the server limit needs the count header (X-Total-Count)")
        pages = list(pool.map(lambda o: get(o)[0], range(size, total, size)))
        EXTRA["requests"] = 1 + len(pages)
        EXTRA["bytes"] = first_bytes + sum(pages)
        pool.shutdown()
        return total

    return work


def httpop(options: dict) -> Work:
    """HttpOperator with ``pagination_function``, as the http provider's docs show it: the function returns
    the next page's ``data`` from the previous response, and ``response_filter`` gets every response at the
    end. The function decides from the count header, so each page's JSON is parsed once (in the filter),
    written as the operator writes it. Every response stays in memory until the last page is in: that is the
    HttpOperator way, and its peak RSS shows it."""
    from airflow.providers.http.operators.http import HttpOperator

    size = options["page_size"]

    def next_page(response: Any) -> dict | None:
        offset = int(parse_qs(urlsplit(response.request.url).query)["offset"][0])
        total = _total(response)
        if total is None or offset + size >= total:
            return None
        return {"data": {"offset": offset + size, "limit": size}}

    def write_all(responses: list[Any]) -> int:
        count = 0
        with open(Path(options["folder"]) / "out.jsonl", "w", encoding="utf-8") as out:
            for response in responses:
                records = response.json()
                out.write(_jsonl(records))
                count += len(records)
        EXTRA["requests"] = len(responses)
        return count

    task = HttpOperator(
        task_id="bench",
        http_conn_id="deyel_http",
        method="GET",
        endpoint=FORM_PATH,
        data={"offset": 0, "limit": size},
        headers={"Authorization": "Bearer " + _token(options["url"])},
        pagination_function=next_page,
        response_filter=write_all,
    )
    return lambda: int(task.execute({}))


def _calls(one_call: Callable[[], object], calls: int) -> Work:
    for _ in range(20):  # connections opened and code paths warm before the clock starts
        one_call()

    def work() -> int:
        for _ in range(calls):
            one_call()
        return calls

    return work


def calls_raw(options: dict) -> Work:
    session = _session(options["url"])
    target = options["url"] + FORM_PATH + "/1"
    return _calls(lambda: session.get(target, timeout=30).raise_for_status(), options["calls"])


def calls_hook(options: dict) -> Work:
    from deyel_provider.hooks.deyel import DeyelHook

    hook = DeyelHook()
    hook.get_token()
    return _calls(lambda: hook.request("GET", FORM_PATH + "/1"), options["calls"])


def calls_httphook(options: dict) -> Work:
    from airflow.providers.http.hooks.http import HttpHook

    hook = HttpHook(method="GET", http_conn_id="deyel_http")
    headers = {"Authorization": "Bearer " + _token(options["url"])}
    # HttpHook.run builds a new session for every call: that is its cost, measured.
    return _calls(lambda: hook.run(FORM_PATH + "/1", headers=headers), options["calls"])


VARIANTS: dict[str, Callable[[dict], Work]] = {
    f.__name__: f
    for f in (operator, scheduled, raw, server_limit, httpop, calls_raw, calls_hook, calls_httphook)
}


def peak_rss_mb() -> float:
    """This interpreter's own peak RSS. Not ``ru_maxrss``: Linux carries it over ``execve`` from the forked
    copy of the parent, so a child of a bench process that had imported Airflow reported the parent's 119 MB
    for a 35 MB loop. VmHWM belongs to the new address space."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def main() -> int:
    options = json.loads(sys.argv[1])
    work = VARIANTS[options["variant"]](options)
    started, cpu = time.perf_counter(), time.process_time()
    records = work()
    seconds = time.perf_counter() - started
    EXTRA["cpu_s"] = time.process_time() - cpu
    print(json.dumps({"records": records, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), **EXTRA}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
