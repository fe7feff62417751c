"""Constants and small helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# The documented example credentials, which the emulator accepts by default.
CLIENT_ID = "DEYELBOT"
CLIENT_SECRET = "BOTDEYEL312!"

#: Connection extras that keep the retry policy's attempts but shrink its waits to milliseconds.
FAST_RETRY = {"retry_backoff": 0.001, "retry_max_backoff": 0.01, "retry_after_max": 0.05}


def connection_json(url: str, **extra) -> str:
    return json.dumps(
        {"conn_type": "deyel", "host": url, "login": CLIENT_ID, "password": CLIENT_SECRET, "extra": extra}
    )


def fresh_secrets_masker() -> None:
    """Empty Airflow's secrets masker and make the provider forget what it registered there.

    The masker rebuilds one regex of every registered secret at each registration: each test starts empty
    (conftest), and so does each example of a property test that makes a token, its first statement (an
    example's emulator is fresh, the tokens of the earlier ones are dead; 90 examples of one test spent 34 s
    of CPU recompiling that regex)."""
    from deyel_provider.auth import masking

    airflow_secrets_masker().reset_masker()
    masking.forget_all()


def next_example(deyel_conn=None) -> None:
    """The first statement of a property example that starts emulators: the example is a test of its own.

    Its masker starts empty (:func:`fresh_secrets_masker`), nothing an earlier example left for its server's
    URL is kept (the process token cache, the default file cache folder and ``deyel_conn``'s, refused
    credentials remembered in the state folder), and its emulators take the ports earlier examples' had
    (``PortReuse.next_round``), whose keys (the provider's scrypt of the secret and the token URL, ~35 ms of
    CPU) are cached, where each example paid them again on a port of its own. Redis is the example's to
    empty (``flushall``) if it uses one."""
    import shutil

    from deyel_provider.auth.cache import PROCESS_CACHE
    from deyel_provider.auth.file_cache import default_cache_dir
    from deyel_provider.auth.refusals import STATE_DIR_ENV
    from deyel_provider.emulator.server import PORT_REUSE

    fresh_secrets_masker()
    PROCESS_CACHE.clear()
    folders = [default_cache_dir(), *([deyel_conn.cache_folder] if deyel_conn is not None else [])]
    if os.environ.get(STATE_DIR_ENV):  # the test's own (conftest), never a shared one
        folders += Path(os.environ[STATE_DIR_ENV]).iterdir()
    for folder in map(Path, folders):
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            folder.unlink(missing_ok=True)
    PORT_REUSE.next_round()


def airflow_secrets_masker():
    """Airflow's process-wide secrets masker (the one ``mask_secret`` fills), as the provider finds it."""
    from deyel_provider.auth.masking import _airflow_masker

    masker = _airflow_masker()
    assert masker is not None, "this Airflow keeps its secrets masker where the provider does not look"
    return masker


def dagbag_class():
    """Airflow's DagBag (moved to airflow.dag_processing in 3.1)."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # 3.0
        from airflow.models.dagbag import DagBag
    return DagBag


def as_airflow_logs_it(text: str) -> str:
    """``text`` after what Airflow's log pipeline does to every line: its JWT pattern, then its masker."""
    try:
        from airflow.sdk._shared.logging.structlog import redact_jwt  # 3.1+
    except ImportError:
        from airflow.sdk.log import redact_jwt  # 3.0

    event = redact_jwt(None, "info", {"event": text})["event"]
    return str(airflow_secrets_masker().redact(event))


class ByAsset(MutableMapping):
    """A hand-made ``outlet_events`` or ``inlet_events``: Airflow's accessors take an Asset as the key, and
    an Asset is hashable only from Airflow 3.1 on. Missing keys get ``default()`` (a defaultdict's way)."""

    def __init__(
        self, items: Iterable[tuple[Any, Any]] = (), default: Callable[[], Any] | None = None
    ) -> None:
        self._by_key: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._default = default
        for asset, value in items:
            self[asset] = value

    @staticmethod
    def _key(asset: Any) -> tuple[str, str, str]:
        return (type(asset).__name__, asset.name, asset.uri)

    def __getitem__(self, asset: Any) -> Any:
        key = self._key(asset)
        if key not in self._by_key:
            if self._default is None:
                raise KeyError(asset)
            self._by_key[key] = (asset, self._default())
        return self._by_key[key][1]

    def __setitem__(self, asset: Any, value: Any) -> None:
        self._by_key[self._key(asset)] = (asset, value)

    def __delitem__(self, asset: Any) -> None:
        del self._by_key[self._key(asset)]

    def __iter__(self) -> Iterator[Any]:
        return (asset for asset, _ in self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)


def outlet_events() -> ByAsset:
    """What a task's ``context["outlet_events"]`` is to the code under test: ``[asset].extra`` settable."""
    return ByAsset(default=SimpleNamespace)


def send_json(
    handler: Any,
    body: Any,
    *,
    status: int = 200,
    headers: Iterable[tuple[str, str]] = (),
    date: bool = True,
) -> None:
    """Answer a stand-in server's request (a ``BaseHTTPRequestHandler``) with ``body`` as JSON.

    :param date: send the ``Date`` header (``send_response``); False: none, as some servers do.
    """
    data = json.dumps(body).encode()
    if date:
        handler.send_response(status)
    else:
        handler.send_response_only(status)
    for name, value in [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers]:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


@contextmanager
def partitioned_run(dag_id: str, key: str, date: datetime | None) -> Iterator[None]:
    """The next run of ``dag_id`` is the partition ``key``, as a scheduler-made run of a partitioned DAG
    (Airflow 3.2+): ``dag.test()`` makes manual runs, which carry no partition key; the key and date are set
    as the run is inserted, so its tasks see them as ``dag_run.partition_key`` and ``partition_key``."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import event

    def stamp(mapper, connection, run) -> None:
        if run.dag_id == dag_id:
            run.partition_key, run.partition_date = key, date

    event.listen(DagRun, "before_insert", stamp)
    try:
        yield
    finally:
        event.remove(DagRun, "before_insert", stamp)
