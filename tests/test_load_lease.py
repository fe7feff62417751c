"""One load of a form at a time (issue 21): two loads of the same keys started at once in two processes make
each instance once; a second load waits for the lease or fails typed having written nothing; a holder killed
by SIGKILL frees it within one lease; a load whose lease was lost stops before its next write.

Real processes, a real redis-server, the emulator over HTTP. Two loads overlap for real: both children wait
at a barrier (a file) after their imports, and start together when the test creates it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelBusyError, DeyelConfigError, DeyelLeaseError, DeyelLeaseLostError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.load.lease import lease_name, load_lease
from deyel_provider.load.upsert import load_records as upsert
from deyel_provider.operators.upsert import DeyelUpsertOperator
from tests.support.killing import sigkilled
from tests.support.upsert import FORM, KEY, assert_state_is, customer, write_jsonl
from tests.support.warm import WarmProcess

#: Seconds of a short Redis lease (the shortest the connection accepts is 1).
LEASE = 1.5

#: A load in a child process: waits at the barrier, loads, writes its result (or its error) as JSON.
CHILD = """
import json, sys, time
from pathlib import Path
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.upsert import DeyelUpsertOperator
from deyel_provider.load.upsert import load_records as upsert
source, go, out, workers = sys.argv[1:5]
hook = DeyelHook()
hook.config  # read the connection before the barrier
Path(out + ".ready").touch()
while not Path(go).exists():
    time.sleep(0.002)
try:
    result = upsert(hook, "ERP_CUSTOMER", source, "cdCustomer", max_workers=int(workers), batch_size=100,
                    progress_interval=3600).as_dict()
except Exception as exc:
    result = {"error": type(exc).__name__, "message": str(exc)}
Path(out).write_text(json.dumps(result))
"""


def start_load(source: str, folder: Path, name: str, *, workers: int = 4) -> tuple[WarmProcess, Path]:
    """A load in a process of its own, forked from one that imported Airflow once (tests/support/warm.py)."""
    out = folder / f"{name}.json"
    go = folder / "go"
    return WarmProcess(CHILD, [source, str(go), str(out), str(workers)]), out


def wait_for(condition, what: str, children=(), timeout: float = 60) -> None:
    """Poll ``condition`` (a state another process reaches), failing if a child died first."""
    deadline = time.monotonic() + timeout
    while not condition():
        for child in children:
            assert child.poll() is None, f"a load ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def finish(child: WarmProcess, out: Path) -> dict[str, Any]:
    try:
        child.wait(120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    return json.loads(out.read_text())


def instances(emulator) -> int:
    return len(emulator.state.store.all_ids(FORM))


def use_backend(backend: str, deyel_conn, redis_server, **url) -> None:
    if backend == "redis":
        redis.Redis.from_url(redis_server.url).flushdb()
        deyel_conn(**url, extra={"cache": "redis", "cache_url": redis_server.url, "cache_lock_lease": LEASE})
    # else: the deyel_conn default, cache=file in a folder of this test


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_two_loads_of_the_same_keys_at_once_create_each_instance_once(
    backend, emulator, deyel_conn, redis_server, tmp_path
):
    use_backend(backend, deyel_conn, redis_server)
    source = [customer(i) for i in range(1000)]
    path = write_jsonl(tmp_path / "customers.jsonl", source)
    loads = [start_load(path, tmp_path, name) for name in ("first", "second")]
    children = [child for child, _ in loads]
    try:
        wait_for(lambda: all(Path(f"{out}.ready").exists() for _, out in loads), "the barrier", children)
        (tmp_path / "go").touch()
        results = [finish(child, out) for child, out in loads]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert all("error" not in result for result in results), results
    assert instances(emulator) == 1000
    assert_state_is(emulator, source)
    # One load made them all; the other, started at the same time, waited and found them as they should be.
    made = sorted((r["created"], r["unchanged"], r["updated"]) for r in results)
    assert made == [(0, 1000, 0), (1000, 0, 0)]
    assert emulator.methods().get("POST", 0) == 1000
    assert emulator.methods().get("PATCH", 0) == 0


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_a_second_load_that_does_not_wait_fails_typed_and_writes_nothing(
    backend, emulator, deyel_conn, redis_server, tmp_path
):
    use_backend(backend, deyel_conn, redis_server)
    source = [customer(i) for i in range(10)]
    with load_lease(DeyelHook().config, FORM, timeout=0):
        emulator.reset()
        with pytest.raises(DeyelBusyError) as raised:
            DeyelUpsertOperator(task_id="load", form=FORM, source=source, key=KEY, lock_timeout=0).execute({})
    message = str(raised.value)
    assert FORM in message and "another load" in message and "lock_timeout" in message
    assert "did not wait" in message and "wrote nothing" in message
    assert emulator.methods() == {}  # not even a search
    assert instances(emulator) == 0
    # The lease is free again: the same load now runs.
    assert upsert(DeyelHook(), FORM, source, KEY, lock_timeout=0).created == 10


def test_a_second_load_waits_for_the_first_then_gives_up_typed(emulator, deyel_conn, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with load_lease(DeyelHook().config, FORM, timeout=0):
        with pytest.raises(DeyelBusyError, match=r"waited lock_timeout=0\.2 s"):
            upsert(DeyelHook(), FORM, [customer(1)], KEY, lock_timeout=0.2)
    waiting = [r for r in caplog.records if "holds its lease: waiting up to" in r.getMessage()]
    assert len(waiting) == 1  # logged once, however long the wait
    assert instances(emulator) == 0


def test_a_killed_holder_frees_the_lease_within_one_lease(emulator, deyel_conn, redis_server, tmp_path):
    use_backend("redis", deyel_conn, redis_server)
    source = [customer(i) for i in range(20)]
    path = write_jsonl(tmp_path / "customers.jsonl", source)
    # The holder's first search is held back: it holds the lease and has written nothing when it is killed.
    emulator.set_faults([{"route": "data", "method": "GET", "action": "delay", "delay_ms": 5000, "count": 1}])
    holder, _ = start_load(path, tmp_path, "holder", workers=1)
    (tmp_path / "go").touch()
    with sigkilled(holder):
        wait_for(lambda: emulator.stats()["faults_injected"] == 1, "the holder's first search", [holder])
    killed_at = time.monotonic()
    emulator.clear_faults()
    key = lease_name(DeyelHook().config.base_url, FORM) + ":lease"
    assert redis.Redis.from_url(redis_server.url).pttl(key) > 0  # the dead holder's lease is still there

    result = upsert(DeyelHook(), FORM, source, KEY, lock_timeout=30)
    waited = time.monotonic() - killed_at
    assert result.created == 20
    assert_state_is(emulator, source)
    # Within one lease of the kill (plus a margin for a loaded 2-core machine and the 20 creates).
    assert waited < LEASE + 5


def test_a_load_whose_lease_was_lost_stops_before_its_next_write(deyel_conn, redis_server, tmp_path):
    with run_emulator(records=50, latency_ms=20) as emulator:
        use_backend("redis", deyel_conn, redis_server, url=emulator.url)
        lost_lease(emulator, redis_server, tmp_path)


def lost_lease(emulator, redis_server, tmp_path) -> None:
    source = [customer(i) for i in range(300)]
    path = write_jsonl(tmp_path / "customers.jsonl", source)
    key = lease_name(DeyelHook().config.base_url, FORM) + ":lease"
    client = redis.Redis.from_url(redis_server.url)
    load, out = start_load(path, tmp_path, "paused", workers=1)
    (tmp_path / "go").touch()
    try:
        wait_for(lambda: emulator.methods().get("POST", 0) >= 10, "the tenth create", [load])
        # Paused past its lease (a stopped VM, a swapped-out worker): the lease expires, another takes it.
        os.kill(load.pid, signal.SIGSTOP)
        wait_for(lambda: not client.exists(key), "the lease to expire")
        assert client.set(key, b"another-load", px=60_000, nx=True)
        posts = emulator.methods()["POST"]
        os.kill(load.pid, signal.SIGCONT)
        result = finish(load, out)
    finally:
        if load.poll() is None:
            os.kill(load.pid, signal.SIGCONT)
            load.kill()
            load.wait()
    assert result["error"] == "DeyelLeaseLostError", result
    assert "stopped before its next write" in result["message"] and FORM in result["message"]
    # At most the one create its single worker had checked the lease for just before the pause.
    assert emulator.methods()["POST"] - posts <= 1
    assert emulator.methods().get("PATCH", 0) == 0
    assert instances(emulator) < 300
    assert client.get(key) == b"another-load"  # the stopped load did not release another's lease


def lease_file() -> Path:
    from deyel_provider.load.lease import lock_folder

    return lock_folder() / (lease_name(DeyelHook().config.base_url, FORM) + ".lock")


def test_a_removed_lease_file_counts_as_a_lost_lease(emulator, deyel_conn):
    with load_lease(DeyelHook().config, FORM, timeout=0) as lease:
        lease.check()
        lease_file().unlink()  # a cleanup of the folder while the load runs
        with pytest.raises(DeyelLeaseLostError, match="stopped before its next write"):
            lease.check()


def test_a_lease_file_planted_as_a_link_is_refused_before_any_request(emulator, deyel_conn, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    planted = lease_file()
    planted.parent.mkdir(mode=0o700, exist_ok=True)
    planted.symlink_to(target)
    try:
        with pytest.raises(DeyelLeaseError, match="not a regular file of this user") as raised:
            upsert(DeyelHook(), FORM, [customer(1)], KEY)
    finally:
        # The lock folder is the worker's for the whole run, and a later test's emulator may get this port
        # (the lease's name): left there, the link refused test_numeric_keys' load in one full run.
        planted.unlink()
    assert "DEYEL_LOCK_DIR" in str(raised.value)
    assert emulator.methods() == {}


def test_a_lease_folder_others_can_write_is_refused_before_any_request(
    emulator, deyel_conn, tmp_path, monkeypatch
):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    monkeypatch.setenv("DEYEL_LOCK_DIR", str(folder))
    with pytest.raises(DeyelLeaseError, match="writable by others"):
        upsert(DeyelHook(), FORM, [customer(1)], KEY)
    assert emulator.methods() == {}


@pytest.mark.parametrize("bad", [-1, float("inf"), float("nan"), True, "60"])
def test_lock_timeout_must_be_a_number_of_seconds(emulator, deyel_conn, bad):
    with pytest.raises(DeyelConfigError, match="lock_timeout"):
        upsert(DeyelHook(), FORM, [customer(1)], KEY, lock_timeout=bad)


# -- review of issue 21: the lease before any request, one lease per server and host, no squatter ----------

#: A form without a schema: its fields have no prefix, so a load reads a sample to infer the key's type.
LEGACY = "LEGACY_ITEMS"


class _Waiting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "holds its lease: waiting" in record.getMessage():
            self.waiting.set()


def _load_while_held(during_wait: Any, source: list[dict[str, Any]]) -> list[BaseException]:
    """Hold LEGACY's lease, start a load (it waits), run ``during_wait`` (what another load or user does
    meanwhile), release; return the load's error, if any."""
    logger = logging.getLogger("deyel_provider.load.lease")
    level = logger.level
    logger.setLevel(logging.INFO)
    recorder = _Waiting()
    logger.addHandler(recorder)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upsert(DeyelHook(), LEGACY, source, "code", batch_size=10, lock_timeout=60)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    try:
        with load_lease(DeyelHook().config, LEGACY, timeout=0):
            thread = threading.Thread(target=run)
            thread.start()
            assert recorder.waiting.wait(30), "the load never waited for the lease"
            during_wait()
        thread.join(60)
        assert not thread.is_alive()
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
    return errors


def _legacy_keys(emulator) -> Counter[str]:
    store = emulator.state.store
    return Counter(str((store.get(LEGACY, i) or {}).get("code")) for i in store.all_ids(LEGACY))


def test_a_load_waiting_for_the_lease_has_sent_no_request_so_a_wrong_separator_is_still_named(deyel_conn):
    """The server's separator is '|'. The form is empty when the load starts; while it waits another load
    creates all but each batch's first key. A sample read before the wait (empty) would skip the separator
    proof: the load reads it after, and fails typed with nothing created twice."""
    source = [{"code": f"K-{i:04d}", "label": f"item {i}"} for i in range(30)]
    with run_emulator(records=0, in_separator="|") as emulator:
        deyel_conn(url=emulator.url)
        store = emulator.state.store
        store.delete(LEGACY, store.create(LEGACY, {"code": "gone"})[0])  # the form exists, empty
        emulator.reset()

        def other_load() -> None:
            assert emulator.methods() == {}  # the waiting load has sent nothing
            for i, r in enumerate(source):
                if i % 10:
                    store.create(LEGACY, dict(r))

        errors = _load_while_held(other_load, source)
        held = _legacy_keys(emulator)
    assert [type(e) for e in errors] == [DeyelConfigError] and "in_separator" in str(errors[0])
    assert max(held.values()) == 1


def test_a_form_cleared_while_a_load_waits_does_not_fail_a_correct_load(deyel_conn):
    """Right separator. The form holds 10 instances when the load starts and is cleared while it waits: a
    sample read before the wait would prove the separator on instances gone, failing a correct load."""
    source = [{"code": f"N-{i:04d}", "label": f"item {i}"} for i in range(5)]
    with run_emulator(records=0) as emulator:
        deyel_conn(url=emulator.url)
        store = emulator.state.store
        old = [store.create(LEGACY, {"code": f"OLD-{i}", "label": "old"})[0] for i in range(10)]

        def clear() -> None:
            for ident in old:
                store.delete(LEGACY, ident)

        errors = _load_while_held(clear, source)
        held = _legacy_keys(emulator)
    assert not errors, f"a correct load failed: {errors[0]!r}"
    assert held == Counter(r["code"] for r in source)


def _conn(deyel_conn, conn_id: str, url: str, **extra: Any) -> DeyelHook:
    deyel_conn(conn_id, url=url, extra=extra)
    return DeyelHook(conn_id)


@pytest.mark.parametrize("spelling", ["http://LOCALHOST:{port}/", "HTTP://localhost:{port}"])
def test_two_spellings_of_one_server_share_the_lease(emulator, deyel_conn, spelling):
    port = urlsplit(emulator.url).port
    first = _conn(deyel_conn, "deyel_a", f"http://localhost:{port}")
    second = _conn(deyel_conn, "deyel_b", spelling.format(port=port))
    with load_lease(first.config, FORM, timeout=0):
        with pytest.raises(DeyelBusyError):
            with load_lease(second.config, FORM, timeout=0):
                pass


def test_the_server_identity_drops_default_ports_and_case_but_keeps_the_paths_case():
    from deyel_provider.load.lease import server_identity

    assert server_identity("HTTPS://Deyel.Example:443/api/") == "https://deyel.example/api"
    assert server_identity("http://deyel.example:80") == "http://deyel.example"
    assert server_identity("https://deyel.example:8443/") == "https://deyel.example:8443"
    assert server_identity("http://[::1]:8080/x") == "http://[::1]:8080/x"
    assert server_identity("https://d.example/API") != server_identity("https://d.example/api")


def test_two_connections_with_their_own_cache_folders_share_the_lease(emulator, deyel_conn, tmp_path):
    """Two teams' connections to one server, each with its own token cache folder: one lock folder."""
    first = _conn(deyel_conn, "deyel_a", emulator.url, cache_dir=str(tmp_path / "a"))
    second = _conn(deyel_conn, "deyel_b", emulator.url, cache_dir=str(tmp_path / "b"))
    with load_lease(first.config, FORM, timeout=0):
        with pytest.raises(DeyelBusyError):
            with load_lease(second.config, FORM, timeout=0):
                pass


def test_a_memory_cache_load_needs_no_private_cache_dir(emulator, deyel_conn, tmp_path):
    """cache=memory writes nothing to cache_dir: a group-writable one (a shared AIRFLOW_HOME) is no reason
    to refuse the load; its lease lives in the per-user lock folder."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o775)  # noqa: S103 - the shared folder is the point
    for cache in ("memory", "none"):
        deyel_conn(extra={"cache": cache, "cache_dir": str(shared)})
        result = upsert(DeyelHook(), FORM, [customer(1 if cache == "memory" else 2)], KEY)
        assert result.created == 1
    assert list(shared.iterdir()) == []


def test_an_executor_of_several_hosts_with_a_file_lease_warns_once(emulator, deyel_conn, monkeypatch, caplog):
    import deyel_provider.load.lease as load_lease_module

    monkeypatch.setattr(load_lease_module, "_warned_about_executor", False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with load_lease(DeyelHook().config, FORM, timeout=0):
                pass
    warned = [r.getMessage() for r in caplog.records if "several hosts" in r.getMessage()]
    assert len(warned) == 1 and "cache=redis" in warned[0], warned
    monkeypatch.setattr(load_lease_module, "_warned_about_executor", False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    caplog.clear()
    with load_lease(DeyelHook().config, FORM, timeout=0):
        pass
    assert not [r for r in caplog.records if "several hosts" in r.getMessage()]


@pytest.mark.parametrize("expiry", [None, 3600])
def test_a_redis_lease_key_without_the_providers_lease_is_refused_at_once(
    emulator, deyel_conn, redis_url, expiry
):
    """Anyone who can write the Redis DB can SET the lease key without expiry (or a long one): a load
    refuses at once, not after lock_timeout as if another load held it."""
    deyel_conn(extra={"cache": "redis", "cache_url": redis_url})
    client = redis.Redis.from_url(redis_url)
    key = lease_name(DeyelHook().config.base_url, FORM) + ":lease"
    client.set(key, "squatter", ex=expiry)
    emulator.reset()
    try:
        with pytest.raises(DeyelLeaseError, match="held without the provider's lease") as raised:
            upsert(DeyelHook(), FORM, [customer(1)], KEY, lock_timeout=60)
    finally:
        client.delete(key)
    assert "another load" not in str(raised.value)
    assert emulator.methods() == {}
    assert not any(t.name == "deyel-lease-keeper" for t in threading.enumerate())
