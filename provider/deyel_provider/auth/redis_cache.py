"""Tokens shared by every host: encrypted entries in Redis that expire with the token, and a leased lock."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from deyel_provider.auth.cache import TokenCacheError
from deyel_provider.auth.crypto import UnreadableTokenError
from deyel_provider.exceptions import DeyelConfigError

if TYPE_CHECKING:
    from deyel_provider.auth.crypto import TokenSealer
    from deyel_provider.auth.token import DeyelToken

#: Seconds before a Redis call that gets no answer counts as a fault (then the token is fetched directly).
SOCKET_TIMEOUT = 2.0

_clients: dict[str, Any] = {}
_clients_guard = threading.Lock()

#: Per lock name, until when this process does not wait for that renewal lock again: one renewal paid the
#: full wait, the next ones try once and fetch directly (someone may hold the lock on purpose).
_busy_until: dict[str, float] = {}


def redis_client(url: str) -> Any:
    """One client (and connection pool) per URL and process; redis-py resets the pool after a fork."""
    try:
        import redis
    except ImportError:
        raise DeyelConfigError(
            "cache 'redis' needs redis-py: pip install 'airflow-provider-deyel[redis]'"
        ) from None
    with _clients_guard:
        client = _clients.get(url)
        if client is None:
            try:
                client = redis.Redis.from_url(
                    url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
                )
            except ValueError:
                # Not the parser's text: it may quote the URL, password included.
                raise DeyelConfigError(
                    "cache_url is not a Redis URL (redis://[:password@]host:6379/0)"
                ) from None
            _clients[url] = client
        return client


class RedisTokenCache:
    """Entries under the credential key with the token's TTL; renewals serialised by a Redis lock.

    The lock has a lease: a holder that dies frees it after ``lease`` seconds at most.

    :param client: a ``redis.Redis``.
    :param sealer: encrypts entries with the credential's key.
    :param lease: seconds after which a lock whose holder vanished expires.
    :param lock_wait: seconds to wait for another process's renewal.
    """

    name = "redis"

    def __init__(self, client: Any, sealer: TokenSealer, lease: float, lock_wait: float) -> None:
        self._client = client
        self._sealer = sealer
        self._lease = lease
        self._lock_wait = lock_wait

    def __repr__(self) -> str:
        return f"RedisTokenCache(lease={self._lease:g}, lock_wait={self._lock_wait:g})"

    @contextmanager
    def _faults(self, what: str) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.RedisError as exc:
            # The class name only: a connection error's text may carry the URL (and its password).
            raise TokenCacheError(self.name, f"{what} failed ({type(exc).__name__})") from None

    def get(self, key: str) -> DeyelToken | None:
        with self._faults("GET"):
            data = self._client.get(key)
        if data is None:
            return None
        try:
            return self._sealer.open(data)
        except UnreadableTokenError as exc:
            raise TokenCacheError(self.name, f"entry {key}: {exc}") from None

    def put(self, key: str, token: DeyelToken) -> None:
        ttl = math.ceil(token.expires_at - time.time())
        if ttl <= 0:
            return
        with self._faults("SET"):
            self._client.set(key, self._sealer.seal(token), ex=ttl)

    def discard(self, key: str, access_token: str) -> None:
        import redis

        with self._faults("discard"), self._client.pipeline() as pipe:
            # Optimistic compare-and-delete: the entry is encrypted, so the comparison happens here.
            try:
                pipe.watch(key)
                data = pipe.get(key)
                if data is not None:
                    try:
                        holds_it = self._sealer.open(data).access_token == access_token
                    except UnreadableTokenError:
                        holds_it = True  # unreadable: drop it as well
                    if holds_it:
                        pipe.multi()
                        pipe.delete(key)
                        pipe.execute()
            except redis.WatchError:
                pass  # someone replaced the entry meanwhile: it no longer holds the rejected token

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        import redis

        name = f"{key}:lock"
        with self._faults("lock"):
            remaining = self._client.pttl(name)
        if remaining == -1 or remaining > self._lease * 1000:
            # Our holders always set the lease: a lock without one, or a longer one, is not a renewal.
            raise TokenCacheError(
                self.name, "the renewal lock is held without the provider's lease: not waiting"
            )
        wait = self._lock_wait if time.monotonic() >= _busy_until.get(name, 0.0) else 0.0
        lock = self._client.lock(name, timeout=self._lease, blocking_timeout=wait, thread_local=False)
        with self._faults("lock"):
            acquired = lock.acquire(blocking=wait > 0)
        if not acquired:
            _busy_until[name] = time.monotonic() + self._lease
            raise TokenCacheError(self.name, f"the renewal lock was not free within {wait:g} s")
        _busy_until.pop(name, None)
        try:
            yield
        finally:
            try:
                lock.release()
            except redis.RedisError:
                pass  # the lease ran out or Redis went away: the lock frees itself either way
