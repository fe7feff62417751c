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
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Column, Measurement, Table, Variant, run_table, sized

K_TASKS = 200
P_PROCESSES = 8
R_RUNS = 10
ENDPOINT = "/forms/CRM_ACCOUNT/instances/1"


def _deyel_task(conn_id: str) -> None:
    from deyel_provider.auth.cache import PROCESS_CACHE
    from deyel_provider.hooks.deyel import DeyelHook

    hook = DeyelHook(deyel_conn_id=conn_id)
    hook.request("GET", ENDPOINT)
    # The next task in this worker must start as cold as a new task process: no token in memory, and
    # Airflow's secrets masker as empty as a new process's (else it would hold up to 16 of the worker's
    # earlier tokens, and each task would rebuild a regex of all of them: a cost no task process pays).
    PROCESS_CACHE.discard(hook.credential_key, hook.get_token())
    _empty_masker()


def _empty_masker() -> None:
    from deyel_provider.auth import masking

    masker = masking._airflow_masker()
    if masker is not None and hasattr(masker, "reset_masker"):
        masker.reset_masker()
    masking.forget_all()


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


def _warm_worker(_: Any) -> None:
    import airflow.providers.http.hooks.http  # noqa: F401

    import deyel_provider.hooks.deyel  # noqa: F401


def _http_task_own_token(_: Any) -> None:
    _http_get(_http_token())


def _run(pool: Any, emulator: Any, work: Any, clear: str, cold: Any = None) -> Measurement:
    """One run of a pattern; ``cold`` empties the shared cache first, so that every round starts as the
    first (else the second round of cache=file would find the first round's token and POST nothing)."""
    if cold is not None:
        cold()
    emulator.reset()
    started = time.perf_counter()
    work(pool)
    wall = time.perf_counter() - started
    return {"seconds": wall, "token_posts": emulator.stats()["token_requests"], "clear": clear}


def run() -> None:
    from deyel_provider.emulator import run_emulator

    logging.disable(logging.INFO)
    k_tasks, runs = sized(K_TASKS, 40), sized(R_RUNS, 4)
    tasks_per_run = k_tasks // runs
    cache_dir = tempfile.mkdtemp(prefix="deyel-bench-cache-")
    redis, why_not = _start_redis()
    try:
        with run_emulator(records=10) as emulator:
            conn = {
                "conn_type": "deyel",
                "host": emulator.url,
                "login": "DEYELBOT",
                "password": "BOTDEYEL312!",
            }
            os.environ["AIRFLOW_CONN_DEYEL_HTTP"] = json.dumps({**conn, "conn_type": "http"})
            os.environ["AIRFLOW_CONN_DEYEL_HTTP_API"] = json.dumps(
                {"conn_type": "http", "host": emulator.url}
            )
            extras = {
                "memory": {"cache": "memory"},
                "file": {"cache": "file", "cache_dir": cache_dir},
                "redis": {"cache": "redis", "cache_url": redis.url if redis is not None else ""},
            }
            for kind, extra in extras.items():
                os.environ[f"AIRFLOW_CONN_DEYEL_BENCH_{kind.upper()}"] = json.dumps({**conn, "extra": extra})

            def xcom_pattern(pool: Any) -> None:
                for _ in range(runs):
                    token = pool.apply(_http_token)  # the run's token task; its XCom holds the token in clear
                    pool.map(_http_get, [token] * tasks_per_run)

            with multiprocessing.get_context("fork").Pool(P_PROCESSES) as pool:
                # Every worker imports what the tasks use before any round (else the first round pays it).
                pool.map(_warm_worker, range(P_PROCESSES * 4))
                own = lambda p: p.map(_http_task_own_token, range(k_tasks))  # noqa: E731
                variants = [
                    Variant("HttpHook: token fetch in each task", lambda: _run(pool, emulator, own, "no")),
                    Variant(
                        "HttpHook: token task per DAG run, XCom",
                        lambda: _run(pool, emulator, xcom_pattern, "yes"),
                    ),
                ]
                colds = {"memory": None, "file": lambda: _empty(cache_dir), "redis": lambda: _flush(redis)}
                for kind in extras:
                    name = f"deyel_bench_{kind}"
                    work = lambda p, n=name: p.map(_deyel_task, [n] * k_tasks)  # noqa: E731
                    variants.append(
                        Variant(
                            f"DeyelHook cache={kind}",
                            lambda w=work, c=colds[kind]: _run(pool, emulator, w, "no", c),  # type: ignore[misc]
                            skip=why_not if kind == "redis" else None,
                        )
                    )
                run_table(
                    Table(
                        f"{k_tasks} tasks (one GET each) in {P_PROCESSES} processes, {runs} DAG runs of "
                        f"{tasks_per_run}; every task starts with an empty memory, as a task process does",
                        metric="seconds",
                        unit="wall s",
                        baseline="HttpHook: token fetch in each task",
                        columns=[
                            Column("token_posts", "token POSTs", "exact"),
                            Column("clear", "token in clear in XCom"),
                        ],
                    ),
                    variants,
                )
    finally:
        if redis is not None:
            redis.stop()


def _empty(folder: str) -> None:
    for entry in Path(folder).iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _flush(server: Any) -> None:
    import redis

    client = redis.Redis.from_url(server.url)
    try:
        client.flushdb()
    finally:
        client.close()


def _start_redis() -> tuple[Any, str | None]:
    """A private redis-server, or None and why not (the row then says "skipped: <why>")."""
    if shutil.which("redis-server") is None:
        return None, "no redis-server (make test installs it: scripts/ensure-redis.sh)"
    try:
        import redis  # noqa: F401 - the provider's redis extra
    except ImportError:
        return None, "the redis extra is not installed"
    try:
        from tests.support.redis_server import RedisServer

        return RedisServer(), None
    except (ImportError, RuntimeError) as error:
        return None, f"redis-server did not start: {error}"[:100]
