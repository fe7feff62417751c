"""Hostile values: an infinite lifetime, JSON nested past Python's recursion limit, a renewal lock held on
purpose in Redis, and a hand-written Redis URL whose password holds URL delimiters."""

from __future__ import annotations

import logging
import threading

import pytest
import redis

from deyel_provider.auth.backends import redis_url as config_redis_url
from deyel_provider.auth.cache import PROCESS_CACHE
from deyel_provider.auth.redis_cache import redis_client
from deyel_provider.exceptions import DeyelBadResponseError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.deyel import DeyelOperator

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("lifetime", ["Infinity", "1e999"])
def test_an_infinite_lifetime_is_a_bad_response_with_the_redis_cache(
    emulator, deyel_conn, redis_url, lifetime
):
    deyel_conn(extra={"cache": "redis", "cache_url": redis_url})
    body = '{"access_token": "abc.def.ghi", "token_type": "Bearer", "expires_in": ' + lifetime + "}"
    emulator.set_faults([{"route": "token", "action": "status", "status": 200, "raw_body": body}])
    with pytest.raises(DeyelBadResponseError, match="expires_in that is not finite"):
        DeyelHook().get_token()


def test_a_deeply_nested_page_is_a_bad_response(emulator, deyel_conn):
    emulator.set_faults([{"route": "data", "action": "status", "status": 200, "raw_body": DEEP}])
    with pytest.raises(DeyelBadResponseError, match="nested too deeply"):
        list(DeyelHook().iter_instances("CRM_ACCOUNT"))


def test_a_deeply_nested_answer_to_the_operator_is_a_bad_response(emulator, deyel_conn):
    emulator.set_faults([{"route": "data", "action": "status", "status": 200, "raw_body": DEEP}])
    with pytest.raises(DeyelBadResponseError, match="nested too deeply"):
        DeyelOperator(task_id="call", endpoint="/forms/CRM_ACCOUNT/instances").execute({})


def test_a_deeply_nested_xcom_token_string_is_a_bad_response(emulator, deyel_conn):
    with pytest.raises(DeyelBadResponseError, match="nested too deeply"):
        DeyelHook(token=DEEP[:20_000] + DEEP[-20_000:]).get_token()


def _lock_name(hook: DeyelHook) -> str:
    return f"{hook.credential_key}:lock"


def test_a_renewal_lock_held_without_a_lease_costs_no_wait(emulator, deyel_conn, redis_url, caplog):
    deyel_conn(extra={"cache": "redis", "cache_url": redis_url})  # a renewal budget of 335 s
    hook = DeyelHook()
    redis.Redis.from_url(redis_url).set(_lock_name(hook), b"held by someone, forever")
    got: list[str] = []
    with caplog.at_level(logging.WARNING):
        worker = threading.Thread(target=lambda: got.append(hook.get_token()), daemon=True)
        worker.start()
        worker.join(20)  # an older version waited its full 45 s cache_lock_wait
    assert got, "the renewal waited for a lock held on purpose"
    assert "held without the provider's lease" in caplog.text
    assert emulator.stats()["token_requests"] == 1


def test_a_busy_renewal_lock_is_waited_for_once_per_holder(
    emulator, deyel_conn, redis_url, caplog, monkeypatch
):
    """A lock that looks like a renewal (it has the lease) is waited for once, a whole renewal budget; the
    next renewals of this process try once and fetch directly while that same holder keeps it. Counted in
    Redis SET commands (lock attempts)."""
    # A renewal budget of 1.7 s: one attempt of at most 2 x 0.5 s, + 0.5 s + a margin cut to 0.2 s.
    monkeypatch.setattr("deyel_provider.http.retry.RENEWAL_MARGIN", 0.2)
    extra = {"cache": "redis", "cache_url": redis_url, "timeout": 0.5, "retry_attempts": 1}
    deyel_conn(extra={**extra, "cache_lock_lease": 30})
    client = redis.Redis.from_url(redis_url)
    hook = DeyelHook()
    client.set(_lock_name(hook), b"someone", px=30_000)
    with caplog.at_level(logging.WARNING):
        first = hook.get_token()  # waits the whole budget for the lock, then fetches directly
    assert "the renewal lock was still held after 1.7 s, the budget of one renewal" in caplog.text
    PROCESS_CACHE.discard(hook.credential_key, first)
    client.delete(hook.credential_key)  # the next renewal finds nothing cached either
    client.config_resetstat()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert DeyelHook().get_token()
    assert "already waited a whole renewal budget for: not waiting again" in caplog.text
    sets = int(client.info("commandstats").get("cmdstat_set", {}).get("calls", 0))
    assert sets == 2  # one lock attempt, and storing the fetched token; no polling for a second
    assert emulator.stats()["token_requests"] == 2


def test_a_hand_written_cache_url_password_is_read_and_masked_whole(
    emulator, deyel_conn, redis_server, caplog
):
    from tests.support.helpers import airflow_secrets_masker

    password = "s3cr#t/Pa55?w@rd"
    url = f"redis://:{password}@127.0.0.1:{redis_server.port}/0"
    deyel_conn(extra={"cache": "redis", "cache_url": url})
    hook = DeyelHook()
    parsed = config_redis_url(hook.config)
    kwargs = redis_client(parsed).connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["host"], kwargs["port"]) == (password, "127.0.0.1", redis_server.port)
    assert airflow_secrets_masker().redact(f"password is {password}") == "password is ***"
    with caplog.at_level(logging.WARNING):
        assert hook.get_token()  # this Redis has no password: a cache fault, then a direct fetch
    assert "redis token cache" in caplog.text
    for fragment in ("s3cr", "Pa55", "w@rd"):
        assert fragment not in caplog.text
