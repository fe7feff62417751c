"""Tokens shared by every host: encrypted entries in Redis that expire with the token, and a leased lock.

The renewal lock's lease is kept alive by its holder while the holder lives and renews (a thread extends it
every third of the lease), so a renewal may take longer than the lease; a holder that dies stops extending,
and the lock frees itself within one lease.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from deyel_provider.auth.cache import TokenCacheError
from deyel_provider.auth.crypto import UnreadableTokenError
from deyel_provider.auth.locks import LeaseKeeper
from deyel_provider.exceptions import DeyelConfigError

if TYPE_CHECKING:
    from deyel_provider.auth.crypto import TokenSealer
    from deyel_provider.auth.token import DeyelToken

#: Seconds before a Redis call that gets no answer counts as a fault (then the token is fetched directly).
SOCKET_TIMEOUT = 2.0

_clients: dict[str, Any] = {}
_clients_guard = threading.Lock()

log = logging.getLogger(__name__)

#: Seconds between two attempts to take a renewal lock another process holds (at most a quarter lease).
LOCK_POLL = 0.1

#: Per lock name, the holder (the lock's value) this process waited a whole renewal budget for in vain, and
#: until when (monotonic) it waits for no holder at all: while that holder keeps the lock (on purpose, or
#: stuck), or for one lease after the give-up whoever holds it (a value that changes at every renewal must
#: not buy a full wait each time), the next renewals of this process try once and fetch directly.
_given_up_on: dict[str, tuple[bytes, float]] = {}


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

    The lock has a lease that its holder keeps alive while it renews (up to ``budget``): a holder that dies
    frees it after ``lease`` seconds at most. A waiter waits while the lock is held with such a lease (its
    holder is alive), and gives up when the holder is gone (it then takes the lock itself) or after
    ``budget`` seconds; a lock without the lease, or with a longer one, is not ours and not waited for.

    :param client: a ``redis.Redis``.
    :param sealer: encrypts entries with the credential's key.
    :param lease: seconds after which a lock whose holder vanished expires.
    :param budget: seconds one renewal may take (``RenewalBudget.total``): the longest wait for the lock,
        and the longest a holder keeps its lease alive.
    """

    name = "redis"

    def __init__(self, client: Any, sealer: TokenSealer, lease: float, budget: float) -> None:
        self._client = client
        self._sealer = sealer
        self._lease = lease
        self._budget = budget

    def __repr__(self) -> str:
        return f"RedisTokenCache(lease={self._lease:g}, budget={self._budget:g})"

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
        name = f"{key}:lock"
        lock = self._client.lock(name, timeout=self._lease, thread_local=False)
        taken_at = time.monotonic()
        with self._faults("lock"):
            taken_at = self._acquire(lock, name)
        keeper = LeaseKeeper(
            lock,
            self._lease,
            what="redis token cache: the renewal lock",
            after_loss="another process may renew as well",
            taken_at=taken_at,
            until=time.monotonic() + self._budget,
        )
        try:
            yield
        finally:
            keeper.release()

    def _acquire(self, lock: Any, name: str) -> float:
        """Take the lock, waiting while a live holder of ours has it; else raise ``TokenCacheError``.

        :returns: ``time.monotonic()`` just before the call that took it (its lease counts from there).
        """
        give_up_at = time.monotonic() + self._budget
        while True:
            taken_at = time.monotonic()
            if lock.acquire(blocking=False):
                break
            with self._client.pipeline(transaction=False) as pipe:
                holder, remaining = pipe.get(name).pttl(name).execute()
            if holder is not None:
                if remaining == -1 or remaining > self._lease * 1000:
                    # Our holders always keep the lease: a lock without one, or a longer one, is not ours.
                    raise TokenCacheError(
                        self.name, "the renewal lock is held without the provider's lease: not waiting"
                    )
                given_up = _given_up_on.get(name)
                if given_up is not None and (given_up[0] == holder or time.monotonic() < given_up[1]):
                    raise TokenCacheError(
                        self.name,
                        "the renewal lock is still held by the holder this process already waited a whole "
                        "renewal budget for: not waiting again",
                    )
            if time.monotonic() >= give_up_at:
                if holder is not None:
                    _given_up_on[name] = (holder, time.monotonic() + self._lease)
                raise TokenCacheError(
                    self.name,
                    f"the renewal lock was still held after {self._budget:g} s, the budget of one renewal "
                    f"(retry policy and timeout): not waiting longer",
                )
            if holder is not None:  # else it was released between the two calls: try again at once
                time.sleep(min(LOCK_POLL, self._lease / 4))
        _given_up_on.pop(name, None)
        return taken_at
