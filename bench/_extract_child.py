"""One variant of bench/extract.py, run in a fresh interpreter so that its peak RSS is its own.

Prints one JSON line: records, seconds, peak_rss_mb.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from pathlib import Path

FORM_PATH = "/forms/CRM_ACCOUNT/instances"
#: Further measurements a variant reports besides records, seconds and peak RSS.
EXTRA: dict[str, object] = {}


def _token(url: str) -> str:
    import requests

    response = requests.post(
        url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("DEYELBOT", "BOTDEYEL312!"),
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def operator(options: dict) -> int:
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
    summary = task.execute({})
    EXTRA["requests"] = summary["requests"]
    EXTRA["bytes"] = summary["bytes"]
    if options.get("stats"):
        import requests

        counters = requests.get(options["url"] + "/_emulator/stats", timeout=30).json()
        EXTRA["api_requests"] = counters["api_requests"]
        EXTRA["rate_limited"] = counters["rate_limited"]
    return summary["records"]


def scheduled(options: dict) -> int:
    """A data-interval run as Airflow starts it: right after its interval ends (``ago`` s before now), on the
    connection's ``settle_seconds``; the seconds it takes include the wait for the end to settle."""
    from datetime import UTC, datetime, timedelta

    from deyel_provider.operators.extract import DeyelExtractOperator

    end = datetime.now(UTC) - timedelta(seconds=options.get("ago", 0))
    task = DeyelExtractOperator(
        task_id="bench",
        form="CRM_ACCOUNT",
        output=str(Path(options["folder"]) / "out.jsonl"),
        page_size=options["page_size"],
        progress_interval=3600,
    )
    summary = task.execute({"data_interval_start": end - timedelta(hours=1), "data_interval_end": end})
    EXTRA["requests"] = summary["requests"]
    return summary["records"]


def raw(options: dict) -> int:
    """The practical limit: one session, a fixed Bearer header, page after page, one line per record."""
    import requests

    url, size = options["url"], options["page_size"]
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + _token(url)
    count, page = 0, 1
    with open(Path(options["folder"]) / "out.jsonl", "w", encoding="utf-8") as out:
        while True:
            records = session.get(url + FORM_PATH, params={"page": page, "pageSize": size}, timeout=30).json()
            lines = (json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
            out.write("".join(lines))
            count += len(records)
            if len(records) < size:
                return count
            page += 1


def httpop(options: dict) -> int:
    """HttpOperator with pagination_function: every response is kept until the last page is in."""
    from airflow.providers.http.operators.http import HttpOperator

    def next_page(response):
        if len(response.json()) < 1000:
            return None
        page = int(response.request.url.split("page=")[1].split("&")[0])
        return {"data": {"page": page + 1, "pageSize": 1000}}

    def write_all(responses):
        count = 0
        with open(Path(options["folder"]) / "out.jsonl", "w", encoding="utf-8") as out:
            for response in responses:
                records = response.json()
                out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
                count += len(records)
        return count

    task = HttpOperator(
        task_id="bench",
        http_conn_id="deyel_http",
        method="GET",
        endpoint=FORM_PATH,
        data={"page": 1, "pageSize": 1000},
        headers={"Authorization": "Bearer " + _token(options["url"])},
        pagination_function=next_page,
        response_filter=write_all,
    )
    return task.execute({})


def calls_raw(options: dict) -> int:
    import requests

    url = options["url"]
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + _token(url)
    for _ in range(options["calls"]):
        session.get(url + FORM_PATH + "/1", timeout=30).raise_for_status()
    return 0


def calls_hook(options: dict) -> int:
    from deyel_provider.hooks.deyel import DeyelHook

    hook = DeyelHook()
    hook.get_token()  # the token POST is not what is measured
    for _ in range(options["calls"]):
        hook.request("GET", FORM_PATH + "/1")
    return 0


def calls_httphook(options: dict) -> int:
    from airflow.providers.http.hooks.http import HttpHook

    hook = HttpHook(method="GET", http_conn_id="deyel_http")
    headers = {"Authorization": "Bearer " + _token(options["url"])}
    for _ in range(options["calls"]):
        hook.run(FORM_PATH + "/1", headers=headers)
    return 0


VARIANTS = {f.__name__: f for f in (operator, scheduled, raw, httpop, calls_raw, calls_hook, calls_httphook)}
IMPORTS = {
    "operator": "deyel_provider.operators.extract",
    "scheduled": "deyel_provider.operators.extract",
    "raw": "requests",
    "httpop": "airflow.providers.http.operators.http",
}


def main() -> int:
    options = json.loads(sys.argv[1])
    variant = VARIANTS[options["variant"]]
    if options["variant"].startswith("calls_"):
        # Warm up imports and the connection outside the timed part.
        variant({**options, "calls": 20})
    else:
        # Import time (Airflow's is over a second) is a task's start-up, not its extraction: keep it out of
        # the timing, importing only what the variant itself uses (so that its peak RSS stays its own).
        importlib.import_module(IMPORTS[options["variant"]])
    started = time.perf_counter()
    records = variant(options)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"records": records, "seconds": seconds, "peak_rss_mb": peak_kb / 1024, **EXTRA}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
