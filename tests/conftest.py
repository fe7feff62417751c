"""Shared fixtures: an isolated Airflow home, the Deyel emulator over real HTTP, connections from env vars."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile

# Collecting the suite imports every test module and what it needs (Airflow, FastAPI, Hypothesis): a heap
# that only grows, which Python's automatic garbage collection walked again and again as it grew. Off until
# collection ends (pytest_collection below turns it back on).
gc.disable()

# Airflow reads its home and settings at import time: isolate them before anything imports airflow.
_HOME = tempfile.mkdtemp(prefix="deyel-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# Where the example extraction DAG writes (read when the DAG file is imported).
os.environ["DEYEL_DEMO_OUTPUT"] = os.path.join(_HOME, "extract-output")
os.environ["DEYEL_LOCK_DIR"] = os.path.join(_HOME, "deyel-locks")  # the file leases: a folder of this run
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(os.path.dirname(__file__), "..", "dags_examples")

import pytest  # noqa: E402

from deyel_provider.auth.cache import PROCESS_CACHE  # noqa: E402
from tests.support.helpers import FAST_RETRY, connection_json  # noqa: E402
from tests.support.wheel import venv_place, wheel_dist  # noqa: E402, F401 (session: test_packaging, test_quickstart)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    """Python's automatic garbage collection back on once collection ends (in every process: pytest-xdist's
    controller skips collection). Its gen-2 collections of the growing heap during a worker's collection
    walked 120,000-250,000 objects each: gc's CPU in six workers over ten modules was 12.7 s, 5.9 s with
    this (thread CPU measured in gc callbacks; 82 full collections, 21). One full collection first:
    whatever collection left as garbage is collected (an unclosed file in it is reported, at the first
    test), and what survives is in the oldest generation, whose next full collection waits until it has
    grown by a quarter."""
    try:
        return (yield)
    finally:
        gc.collect()
        gc.enable()


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path_factory, monkeypatch):
    """Refused credentials are remembered in marker files, loads hold file leases named after the server's
    URL: each test gets its own folders for them (outside ``tmp_path``, which tests list to prove what an
    extraction left behind), so that nothing an earlier test left for an emulator on the same port (ports
    are reused, ``_reused_emulator_ports``) meets a later one."""
    monkeypatch.setenv("DEYEL_PROVIDER_STATE_DIR", str(tmp_path_factory.mktemp("deyel-state")))
    monkeypatch.setenv("DEYEL_LOCK_DIR", str(tmp_path_factory.mktemp("deyel-locks")))


@pytest.fixture(autouse=True)
def _fresh_secrets_masker():
    """Airflow's masker rebuilds one regex of every registered secret at each registration: over a whole
    session (hundreds of tokens in one process, where a worker sees one a day) a registration takes a second
    and the renewal-timing tests break. Each test starts with an empty masker, and the provider forgets what
    it registered."""
    from tests.support.helpers import fresh_secrets_masker

    fresh_secrets_masker()


@pytest.fixture(autouse=True)
def _forget_process_tokens():
    """Emulators reuse ports: a token cached for an earlier test's server must not leak into the next test."""
    PROCESS_CACHE.clear()


@pytest.fixture(autouse=True)
def _client_clock_follows_the_emulators(monkeypatch):
    """Tests move an emulator's clock (``advance``) instead of waiting. The provider never trusts a server's
    Date past the worker's clock (``DeyelHook.clock``), so that clock moves with the running emulators'."""
    from deyel_provider.emulator.clock import Clock
    from deyel_provider.hooks.deyel import DeyelHook

    monkeypatch.setattr(DeyelHook, "clock", staticmethod(Clock.latest))


@pytest.fixture(autouse=True)
def _reused_emulator_ports():
    """This test's emulators on a free port take ports that earlier tests' emulators had (``PortReuse``):
    the key the provider derives from the secret and the token URL (scrypt, ~35 ms of CPU) is then cached,
    where a new port paid it again in every test (1,357 times in a run of the suite, ~46 s of CPU).

    A token an earlier test cached for a server on the same URL must not reach this test's emulator: the
    process cache is emptied (``_forget_process_tokens``), this process's default file cache folder too,
    the Redis tests empty every database (``redis_url``), and stand-in servers take their ports the same
    way (``tests/support/servers.StandInServer``), so that within a test no two servers share a URL."""
    import shutil

    from deyel_provider.auth.file_cache import default_cache_dir
    from deyel_provider.emulator.server import PORT_REUSE

    shutil.rmtree(default_cache_dir(), ignore_errors=True)
    with PORT_REUSE.rounds():
        yield


@pytest.fixture
def emulator():
    """A fresh emulator per test, so token counters and the process token cache key start clean."""
    # Imported here, not above: the xdist controller loads this file too, and starts no emulator (FastAPI and
    # uvicorn take it a second or two).
    from deyel_provider.emulator import run_emulator

    with run_emulator(records=50) as running:
        yield running


@pytest.fixture
def deyel_conn(emulator, monkeypatch, tmp_path_factory):
    """``deyel_default`` pointing at the emulator; returns a function to define more connections.

    Retries keep their default count but wait milliseconds, so tests of transient faults stay fast. The
    default file token cache gets a folder per test: emulators reuse ports, and a token cached for an
    earlier test's server would otherwise be served to the next one.
    """
    cache_folder = str(tmp_path_factory.mktemp("token-cache"))

    def define(conn_id: str = "deyel_default", *, url: str | None = None, **fields) -> str:
        body = json.loads(connection_json(url or emulator.url))
        extra = {**FAST_RETRY, "cache_dir": cache_folder, **fields.pop("extra", {})}
        body.update(fields)
        body["extra"] = extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
        return conn_id

    define()
    define.cache_folder = cache_folder  # type: ignore[attr-defined]
    return define


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server for the session, started by the tests themselves; failing to start it fails
    the tests that need it (a skipped Redis test would pass without proving anything)."""
    from tests.support.redis_server import RedisServer

    try:
        server = RedisServer()
    except RuntimeError as exc:
        pytest.fail(f"the Redis tests start their own redis-server and could not: {exc}")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """The session Redis, emptied before each test (every database: a test may name another than 0)."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def cache_dir(tmp_path):
    """A private file-cache folder per test."""
    return str(tmp_path / "token-cache")


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory):
    """Running a whole DAG needs the metadata database: a migrated SQLite in the test AIRFLOW_HOME, copied
    from the run's one migration (tests/support/airflow_db.py) instead of migrating again in each worker."""
    from airflow.configuration import conf

    from deyel_provider.compat import AIRFLOW_VERSION
    from tests.support.airflow_db import copy_migrated_db, sqlite_path

    database = sqlite_path(conf.get("database", "sql_alchemy_conn"))
    if database is None:  # another database (set by the environment): migrated where it is
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    else:
        copy_migrated_db(tmp_path_factory, database)

    if AIRFLOW_VERSION < (3, 1):
        # dag.test() on 3.0 does not register the DAG's assets, and refuses an outlet it finds inactive; a
        # deployment's DAG processor registers them, as reserialize does here for the example DAGs.
        subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "reserialize"], check=True, capture_output=True
        )


def pytest_collection_modifyitems(config, items) -> None:
    """A test that runs a whole DAG (it needs the metadata database) carries the ``dag`` marker, so
    ``-m "not dag"`` skips every slow DAG run: a missing marker fails collection instead of going unseen."""
    unmarked = [
        item.nodeid
        for item in items
        if "airflow_db" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("dag") is None
        and item.get_closest_marker("e2e") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"tests that run a DAG without @pytest.mark.dag: {unmarked}")
    # The heavy shared set-ups first, so that their worker starts them while the others take the rest.
    items.sort(key=lambda item: SCOPE_ORDER.get(xdist_scope(item.nodeid), len(SCOPE_ORDER)))


#: Test files that share the ``wheel_dist`` session fixture (one ``make dist`` for both).
WHEEL_MODULES = ("tests/test_packaging.py", "tests/test_quickstart.py")
#: The units handed out first, longest first (seconds each took under ``make test`` on 2 cores, 6 workers):
#: a worker takes the next unit when it finishes one, so a long unit handed out last ends the run alone
#: while the others wait (test_settle's 63 s started at 227 s made a 329 s run of what ended at 300 s
#: elsewhere). A unit missing here only goes after these, in file order.
SCOPE_ORDER = {
    scope: rank
    for rank, scope in enumerate(
        [
            "e2e",  # 180 s, and its deployments start while the others take the rest
            "wheel",  # 85 s
            "tests/test_deletes_streaming.py",  # 110-130
            "tests/test_deletes.py",  # 55-80
            "tests/test_example_dags.py",  # 55-65
            "tests/test_settle.py",  # 45-63
            "tests/test_resume.py",  # 45-61
            "tests/test_fan_out.py",  # 56-59
            "tests/test_slicing.py",  # 51-55
            "tests/test_docs_site.py",  # 40-53
            "tests/test_probe.py",  # 43-49
            "tests/test_deletes_review.py",  # 36-45
            "tests/test_token_cache.py",  # 34-40
            "tests/test_write_back_duplicates.py",  # 34-39
            "tests/test_json_codec.py",  # 21-39
            "tests/test_extract.py",  # 27-38
            "tests/test_keys.py",  # 31-34
            "tests/test_docs_snippet_dag.py",  # 15-43
            "tests/test_example_dags_wait.py",  # 18-34
            "tests/test_upsert.py",  # 29
            "tests/test_page_walker.py",  # 23-28
            "tests/test_leak_scan_echo.py",  # 19-28
            "tests/test_watermarks.py",  # 14-28
        ]
    )
}


def xdist_scope(nodeid: str) -> str:
    """The work unit a test belongs to under ``pytest -n N --dist loadgroup`` (make test): one worker runs a
    unit's tests one after another, in the order of the file.

    - ``e2e``: the real deployments (session fixtures: Airflow components, PostgreSQL, Chromium) are CPU
      heavy and ``local_deployment`` serves three files; one worker runs them all, once;
    - ``wheel``: ``make dist`` once for the packaging and quickstart tests (the ``wheel_dist`` fixture);
    - otherwise the test's file: its module-scoped fixtures (an emulator, a built site, a clean virtualenv)
      are made once, and its tests keep their order.

    Each worker is a process of its own with its own AIRFLOW_HOME (the ``mkdtemp`` above), SQLite database,
    temp folders, and emulators and redis-server on free ports.
    """
    module = nodeid.split("::", 1)[0]
    if module.startswith("tests/e2e/"):
        return "e2e"
    if module in WHEEL_MODULES:
        return "wheel"
    return module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` with the units of :func:`xdist_scope`. pytest-xdist 3.8 groups tests by renaming
    them (``nodeid@group``), which pytest 9.2 no longer lets a plugin do: its own grouping silently spread the
    e2e tests over every worker, each starting its own deployments."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SuiteScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

        def schedule(self) -> None:
            # The collection's order (the heavy units first, see above), not the number of tests per unit.
            self.config.option.loadscopereorder = False
            super().schedule()

    return SuiteScheduling(config, log)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """This process's Airflow home is removed. A pytest-xdist worker then ends as soon as the controller
    lets it go, without the interpreter's shutdown: the controller stops every worker at once after the
    last test anywhere, and waits for each to exit. Six interpreters tearing down everything they imported
    (Airflow's modules, the heaps of about 250 tests each) kept both cores busy for seconds at the end of
    every run, for nothing: the results are sent by then (8.7 s from the last test's end to the end of a
    fresh clone's .ci/run, 1.9 s with this and the fork server killed). Registered last, this exit handler
    runs first, and does what the ones it skips had to: no child is left running, the fork server is
    reaped, multiprocessing's temporary folder is removed."""
    import shutil

    shutil.rmtree(_HOME, ignore_errors=True)
    if hasattr(config, "workerinput"):  # an xdist worker (not a pytest its subprocess would start)
        import atexit

        atexit.register(_end_worker_now)


def _end_worker_now() -> None:
    import multiprocessing
    import shutil

    from tests.support.warm import stop_fork_server

    stop_fork_server()
    # The folder of the fork server's socket (get_temp_dir() would make one where there is none).
    if folder := multiprocessing.current_process()._config.get("tempdir"):  # type: ignore[attr-defined]
        shutil.rmtree(folder, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
