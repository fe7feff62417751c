"""Adversarial review of issue 21 (b44a17f): reproductions that FAIL on b44a17f when they show a real bug.

Each test names the finding of the review report it reproduces.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from deyel_provider.emulator import run_emulator
from deyel_provider.emulator.forms import TARGET_FORM
from deyel_provider.exceptions import DeyelBusyError, DeyelConfigError, DeyelLeaseError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.load_lease import load_lease
from deyel_provider.upsert import upsert
from tests.helpers import send_json
from tests.test_write_back_duplicates import KEY, KeyServer, _KeyHandler, source_of

#: A form without a schema: its fields have no prefix, so a load reads a sample to infer the key's type.
LEGACY = "LEGACY_ITEMS"


# -- finding 1: a server that applies only the first values of an `in` ---------------------------------------


class _CappedInHandler(_KeyHandler):
    """Honours only the first ``in_cap`` values of an ``in`` clause (as a server with a bound on IN lists)."""

    def do_GET(self) -> None:
        server = self.server
        query = dict(parse_qsl(urlsplit(self.path).query))
        name, _, rest = query.get("search", "").partition("=")
        rows = sorted(server.rows.values(), key=lambda r: int(r["rid"]))
        if name:
            op, _, value = rest.partition(":")
            values = value.split(server.separator)
            wanted = set(values[: server.in_cap]) if op == "in" else {value}  # type: ignore[attr-defined]
            rows = [r for r in rows if str(r.get(name)) in wanted]
        take = int(query.get("take", 100))
        skip = int(query.get("skip", 0))
        send_json(self, rows[skip : skip + take], headers=[("X-Found", str(len(rows)))])


@contextmanager
def capped_in_server(deyel_conn, in_cap: int) -> Iterator[KeyServer]:
    server = KeyServer()
    server.RequestHandlerClass = _CappedInHandler
    server.in_cap = in_cap  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    extra = {"paging": "offset", "offset_param": "skip", "limit_param": "take", "total_header": "X-Found"}
    deyel_conn(url=server.url, extra={**extra, "id_field": "rid", "cache": "memory"})
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_review_partial_in_does_not_duplicate(deyel_conn):
    """Every key exists; the server applies only the first 5 values of each `in`. The separator proof (2
    values) passes, the in clause matched something so no eq confirmation runs, and the 5 keys it did not
    apply are created again."""
    source = source_of(20)
    with capped_in_server(deyel_conn, in_cap=5) as server:
        for r in source:
            server.add(dict(r))
        try:
            upsert(DeyelHook(), TARGET_FORM, source, KEY, batch_size=10)
        except DeyelConfigError:
            pass  # a typed refusal is fine
        doubled = {k: n for k, n in server.held().items() if n > 1}
    assert not doubled, f"{len(doubled)} keys held twice, e.g. {sorted(doubled)[:3]}"


# -- finding 2: the sample read before the lease wait --------------------------------------------------------


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "holds its lease: waiting" in record.getMessage():
            self.waiting.set()


def _load_while_held(emulator, seed_during_wait, source: list[dict[str, Any]]) -> list[BaseException]:
    """Hold the form's lease, start a load (which samples, then waits), run ``seed_during_wait`` (what another
    load or user does meanwhile), release; return the load's error, if any."""
    logger = logging.getLogger("review21")
    logger.setLevel(logging.INFO)
    recorder = _Recorder()
    logger.addHandler(recorder)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upsert(DeyelHook(), LEGACY, source, "code", batch_size=10, lock_timeout=60, logger=logger)
        except BaseException as exc:
            errors.append(exc)

    try:
        with load_lease(DeyelHook().config, LEGACY, timeout=0):
            thread = threading.Thread(target=run)
            thread.start()
            assert recorder.waiting.wait(30), "the load never waited for the lease"
            seed_during_wait()
        thread.join(60)
    finally:
        logger.removeHandler(recorder)
    return errors


def _legacy_keys(emulator) -> Counter[str]:
    store = emulator.state.store
    return Counter(str((store.get(LEGACY, i) or {}).get("code")) for i in store.all_ids(LEGACY))


def test_review_sample_before_lease_misses_wrong_separator_after_another_load(deyel_conn):
    """The server's separator is '|', the connection's ';'. The form is empty when the load samples it (for
    the key's type), then the load waits while another load creates all but each batch's first key. The
    empty pre-wait sample skips the separator proof; each eq confirmation tries a new key: duplicates."""
    source = [{"code": f"K-{i:04d}", "label": f"item {i}"} for i in range(30)]
    with run_emulator(records=0, in_separator="|") as emulator:
        deyel_conn(url=emulator.url)
        store = emulator.state.store
        store.delete(LEGACY, store.create(LEGACY, {"code": "gone"})[0])  # the form exists, empty

        def other_load() -> None:
            for i, r in enumerate(source):
                if i % 10:
                    store.create(LEGACY, dict(r))

        errors = _load_while_held(emulator, other_load, source)
        doubled = {k: n for k, n in _legacy_keys(emulator).items() if n > 1}
    assert not doubled, (
        f"{len(doubled)} keys held twice after the load ({[type(e).__name__ for e in errors]})"
    )


def test_review_stale_sample_fails_a_correct_load_after_a_cleared_form(deyel_conn):
    """Right separator. The load samples 10 existing instances, then waits for the lease; meanwhile the
    form is cleared (a user deletes old rows). The separator proof searches the stale sample's keys, finds
    nothing and fails a correct load with a DeyelConfigError naming in_separator."""
    source = [{"code": f"N-{i:04d}", "label": f"item {i}"} for i in range(5)]
    with run_emulator(records=0) as emulator:
        deyel_conn(url=emulator.url)
        store = emulator.state.store
        old = [store.create(LEGACY, {"code": f"OLD-{i}", "label": "old"})[0] for i in range(10)]

        def clear() -> None:
            for ident in old:
                store.delete(LEGACY, ident)

        errors = _load_while_held(emulator, clear, source)
        held = _legacy_keys(emulator)
    assert not errors, f"a correct load failed: {errors[0]!r}"
    assert held == Counter(r["code"] for r in source)


# -- finding 3: a fractional numeric key written as a float --------------------------------------------------


def test_review_fractional_numeric_key_is_written_exactly(emulator, deyel_conn):
    """key_type number, a key given as text with more digits than a float holds: it is written as a
    float (rounded), searched as its exact text, never found again, so every run creates it once more.
    The code before issue 21 wrote the text as given and found it on the rerun."""
    source = [{"qtEmployee": "1.00000000000000000001", "cdCustomer": "C-1", "dsName": "one"}]
    for n in (998, 999):  # two instances, so that the separator proof has two values (see the next finding)
        emulator.state.store.create(TARGET_FORM, {"qtEmployee": n, "cdCustomer": f"C-{n}", "dsName": "x"})
    for _ in range(2):
        upsert(DeyelHook(), TARGET_FORM, source, "qtEmployee", batch_size=10)
    store = emulator.state.store
    held = [
        (store.get(TARGET_FORM, i) or {}).get("qtEmployee")
        for i in store.all_ids(TARGET_FORM)
        if (store.get(TARGET_FORM, i) or {}).get("cdCustomer") == "C-1"
    ]
    assert len(held) == 1, f"two runs made {len(held)} instances of one key: {held}"


# -- finding 0: the separator proof searches a text in a numeric key -----------------------------------------


def test_review_numeric_key_form_with_one_instance_can_still_create(deyel_conn):
    """The form holds one instance (say, the first run loaded one record). The separator proof pads its
    single sample value with ABSENT_KEY, a text, in an `in` on a numeric field: the server answers 400 and
    every load that has something to create fails, run after run."""
    with run_emulator(records=0) as emulator:
        deyel_conn(url=emulator.url)
        emulator.state.store.create(TARGET_FORM, {"qtEmployee": 7, "cdCustomer": "C-7", "dsName": "seven"})
        source = [
            {"qtEmployee": 8, "cdCustomer": "C-8", "dsName": "eight"},
            {"qtEmployee": 9, "cdCustomer": "C-9", "dsName": "nine"},
        ]
        result = upsert(DeyelHook(), TARGET_FORM, source, "qtEmployee", batch_size=10)
        assert result.created == 2


# -- finding 4: the lease's name depends on how the connection spells the server -----------------------------


def _conn(deyel_conn, emulator, conn_id: str, url: str, **extra: Any) -> DeyelHook:
    deyel_conn(conn_id, url=url, extra=extra)
    return DeyelHook(conn_id)


def test_review_two_spellings_of_one_server_share_the_lease(emulator, deyel_conn):
    """Two connections to one server, its host written in another case: two loads at once are not excluded."""
    port = urlsplit(emulator.url).port
    first = _conn(deyel_conn, emulator, "deyel_a", f"http://localhost:{port}")
    second = _conn(deyel_conn, emulator, "deyel_b", f"http://LOCALHOST:{port}")
    with load_lease(first.config, TARGET_FORM, timeout=0):
        with pytest.raises(DeyelBusyError):
            with load_lease(second.config, TARGET_FORM, timeout=0):
                pass


def test_review_two_cache_folders_share_the_lease(emulator, deyel_conn, tmp_path):
    """Two connections to one server and form, each with its own cache_dir (two teams' token caches): the
    file leases live in two folders and exclude nothing."""
    first = _conn(deyel_conn, emulator, "deyel_a", emulator.url, cache_dir=str(tmp_path / "a"))
    second = _conn(deyel_conn, emulator, "deyel_b", emulator.url, cache_dir=str(tmp_path / "b"))
    with load_lease(first.config, TARGET_FORM, timeout=0):
        with pytest.raises(DeyelBusyError):
            with load_lease(second.config, TARGET_FORM, timeout=0):
                pass


# -- finding 5: cache=memory (or none) now needs a trusted lock folder ---------------------------------------


def test_review_memory_cache_load_does_not_need_a_lock_folder(emulator, deyel_conn, tmp_path):
    """cache=memory touches no folder for tokens; before issue 21 a load worked with any cache_dir. Now the
    load lease takes a file lock there and refuses a group-writable folder (a shared AIRFLOW_HOME), so a
    load that used to succeed fails with DeyelLeaseError."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o775)  # noqa: S103 - the shared folder is the point
    deyel_conn(extra={"cache": "memory", "cache_dir": str(shared)})
    result = upsert(DeyelHook(), TARGET_FORM, [{"cdCustomer": "M-1", "dsName": "m"}], "cdCustomer")
    assert result.created == 1


# -- finding 7: a Redis lease key without the provider's expiry ----------------------------------------------


def test_review_a_squatted_redis_lease_is_not_reported_as_another_load(emulator, deyel_conn, redis_url):
    """Anyone who can write the Redis DB can SET the lease key without expiry (its name is a hash of the
    base URL and form): every load then waits lock_timeout and reports 'another load holds its lease',
    forever. The token cache's lock refuses such a holder at once ('held without the provider's lease')."""
    import redis

    from deyel_provider.load_lease import lease_name

    deyel_conn(extra={"cache": "redis", "cache_url": redis_url})
    client = redis.Redis.from_url(redis_url)
    client.set(lease_name(DeyelHook().config.base_url, TARGET_FORM) + ":lease", "squatter")  # no TTL
    with pytest.raises(DeyelLeaseError) as raised:
        upsert(DeyelHook(), TARGET_FORM, [{"cdCustomer": "R-1", "dsName": "r"}], "cdCustomer", lock_timeout=0)
    assert "another load" not in str(raised.value), str(raised.value)
    assert not any(t.name == "deyel-lease-keeper" for t in threading.enumerate())
