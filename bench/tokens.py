"""Token POSTs and wall time for K tasks in P processes: shared caches vs the HttpOperator way.

Each "task" runs in a worker of a multiprocessing pool and starts cold, as an Airflow task process does
(nothing cached in memory), then makes one authenticated GET. Compared, in one run:

- HttpHook, token in each task: every task POSTs for its own token (one Deyel server session each).
- HttpHook, token task per DAG run: one POST per run, the token passed to the run's tasks in clear by XCom.
- DeyelHook with ``cache=memory``: one token per task process (what a process-local cache gives).
- DeyelHook with ``cache=file`` and ``cache=redis``: one token for every run and process.

    python -m bench tokens
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import tempfile
import time
from typing import Any

K_TASKS = 200
P_PROCESSES = 8
R_RUNS = 10
ENDPOINT = "/forms/CRM_ACCOUNT/instances/1"


def _deyel_task(conn_id: str) -> None:
    from deyel_provider.auth.cache import PROCESS_CACHE
    from deyel_provider.hooks.deyel import DeyelHook

    hook = DeyelHook(deyel_conn_id=conn_id)
    hook.request("GET", ENDPOINT)
    # The next task in this worker must start as cold as a new task process.
    PROCESS_CACHE.discard(hook.credential_key, hook.get_token())


def _http_token() -> str:
    from airflow.providers.http.hooks.http import HttpHook

    response = HttpHook(method="POST", http_conn_id="deyel_http").run(
        "/oauth/token", data={"grant_type": "client_credentials"}
    )
    return str(response.json()["access_token"])


def _http_get(token: str) -> None:
    from airflow.providers.http.hooks.http import HttpHook

    # A connection without login: requests would replace the Bearer header with the Basic one.
    HttpHook(method="GET", http_conn_id="deyel_http_api").run(
        ENDPOINT, headers={"Authorization": f"Bearer {token}"}
    )


def _http_task_own_token(_: Any) -> None:
    _http_get(_http_token())


def _run(pool: Any, emulator: Any, work: Any) -> tuple[int, float]:
    emulator.reset()
    started = time.perf_counter()
    work(pool)
    return emulator.stats()["token_requests"], time.perf_counter() - started


def run() -> None:
    from deyel_provider.emulator import run_emulator

    logging.disable(logging.INFO)
    tasks_per_run = K_TASKS // R_RUNS
    cache_dir = tempfile.mkdtemp(prefix="deyel-bench-cache-")
    redis = _start_redis()
    with run_emulator(records=10) as emulator:
        conn = {"conn_type": "deyel", "host": emulator.url, "login": "DEYELBOT", "password": "BOTDEYEL312!"}
        os.environ["AIRFLOW_CONN_DEYEL_HTTP"] = json.dumps({**conn, "conn_type": "http"})
        os.environ["AIRFLOW_CONN_DEYEL_HTTP_API"] = json.dumps({"conn_type": "http", "host": emulator.url})
        extras = {
            "memory": {"cache": "memory"},
            "file": {"cache": "file", "cache_dir": cache_dir},
        }
        if redis is not None:
            extras["redis"] = {"cache": "redis", "cache_url": redis.url}
        for kind, extra in extras.items():
            os.environ[f"AIRFLOW_CONN_DEYEL_BENCH_{kind.upper()}"] = json.dumps({**conn, "extra": extra})

        def xcom_pattern(pool: Any) -> None:
            for _ in range(R_RUNS):
                token = pool.apply(_http_token)  # the run's token task; its XCom holds the token in clear
                pool.map(_http_get, [token] * tasks_per_run)

        rows: list[tuple[str, int, float, str]] = []
        with multiprocessing.get_context("fork").Pool(P_PROCESSES) as pool:
            posts, wall = _run(pool, emulator, lambda p: p.map(_http_task_own_token, range(K_TASKS)))
            rows.append(("HttpHook: token fetch in each task", posts, wall, "no"))
            posts, wall = _run(pool, emulator, xcom_pattern)
            rows.append(("HttpHook: token task per DAG run, XCom", posts, wall, "yes"))
            for kind in extras:
                name = f"deyel_bench_{kind}"
                posts, wall = _run(pool, emulator, lambda p, n=name: p.map(_deyel_task, [n] * K_TASKS))
                rows.append((f"DeyelHook cache={kind}", posts, wall, "no"))
    if redis is not None:
        redis.stop()
    print(
        f"{K_TASKS} tasks (one GET each) in {P_PROCESSES} processes, {R_RUNS} DAG runs of {tasks_per_run}\n"
    )
    print(f"| {'pattern':<40} | token POSTs | wall s | token in clear in XCom |")
    print(f"|{'-' * 42}|------------:|-------:|------------------------|")
    for name, posts, wall, clear in rows:
        print(f"| {name:<40} | {posts:>11} | {wall:>6.2f} | {clear:<22} |")
    if redis is None:
        print("\n(redis-server not found: the redis row is missing; make test installs it)")


def _start_redis() -> Any:
    try:
        from tests.support.redis_server import RedisServer

        return RedisServer()
    except (ImportError, RuntimeError):
        return None
