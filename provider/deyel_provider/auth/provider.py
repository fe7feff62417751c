"""Decides when a token is fresh, and renews it once however many callers ask at the same time.

Two tiers: the process's memory, then (optionally) a store shared with other processes and hosts. A fault of
the shared store is handled here, and only here: a warning naming the backend, then a direct fetch.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import TYPE_CHECKING, Protocol

from deyel_provider.auth.cache import TokenCacheError
from deyel_provider.auth.masking import register_token
from deyel_provider.exceptions import DeyelAuthError, DeyelConfigError, DeyelError

if TYPE_CHECKING:
    from deyel_provider.auth.cache import TokenCache
    from deyel_provider.auth.token import DeyelToken
    from deyel_provider.http.redact import Redactor
    from deyel_provider.http.retry import RenewalBudget

log = logging.getLogger(__name__)

#: After a failed renewal, keep serving the still-valid token this long before trying again.
RENEWAL_RETRY_INTERVAL = 10.0
#: The process's renewal lead is ``margin * (1 + JITTER_SPREAD * u)``, u uniform in [0, 1) per process.
JITTER_SPREAD = 0.5

_jitter: tuple[int, float] = (-1, 0.0)


class Grant(Protocol):
    """The full grant (client credentials or password), ending by ``deadline`` (a ``time.monotonic()``)."""

    def __call__(self, *, deadline: float | None = None) -> DeyelToken: ...


class RefreshGrant(Protocol):
    """The refresh grant for ``refresh_token``, ending by ``deadline``."""

    def __call__(self, refresh_token: str, *, deadline: float | None = None) -> DeyelToken: ...


def process_jitter() -> float:
    """A number in [0, 1) drawn once per process (again after a fork), so a fleet renews over a spread."""
    global _jitter
    if _jitter[0] != os.getpid():
        _jitter = (os.getpid(), random.random())
    return _jitter[1]


def mask_token(token: DeyelToken, *, credential: str = "", now: float | None = None) -> None:
    """Mask the token's secrets in Airflow's logs while they are valid, keeping what is registered with its
    masker bounded per credential (its cache key) in a long-lived process
    (:mod:`deyel_provider.auth.masking`). The refresh token renews the access token after it expires: it
    stays registered one lifetime longer."""
    register_token(token.access_token, token.expires_at, credential=credential, now=now)
    if token.refresh_token:
        register_token(token.refresh_token, token.expires_at + token.lifetime, credential=credential, now=now)


class TokenProvider:
    """Serves a fresh token from the caches, fetching a new one (single-flight) only when needed.

    :param fetch: performs the full grant (client credentials or password).
    :param cache: the process tier (memory); its lock makes the threads of a process single-flight.
    :param key: the credential's cache key.
    :param margin: renew this many seconds before expiry (plus a per-process jitter; capped at half the
        lifetime by the token).
    :param shared: the tier shared with other processes and hosts (file, redis), if any; its lock makes
        processes single-flight.
    :param refresh: renews with a refresh token (password grant); None when the grant gives none.
    :param preset: a token handed over by another task (XCom), used while it is valid and not rejected.
    :param budget: the budget of one renewal: the grants stop retrying once ``budget.fetching`` seconds are
        spent (and end with their last typed error), so whoever waits for this renewal (the threads of this
        process, the processes waiting on the shared lock for ``budget.total`` seconds) is not kept waiting
        past it. None: no bound beyond the retry policy's own.
    """

    def __init__(
        self,
        fetch: Grant,
        cache: TokenCache,
        key: str,
        margin: float,
        *,
        shared: TokenCache | None = None,
        refresh: RefreshGrant | None = None,
        preset: DeyelToken | None = None,
        redactor: Redactor | None = None,
        budget: RenewalBudget | None = None,
    ) -> None:
        self._fetch = fetch
        self._redactor = redactor
        self._cache = cache
        self._key = key
        self._margin = margin * (1 + JITTER_SPREAD * process_jitter())
        self._shared = shared
        self._refresh = refresh
        self._preset = preset
        self._refresh_token: str | None = None
        self._retry_at = 0.0
        self._budget = budget

    def __repr__(self) -> str:
        shared = self._shared.name if self._shared is not None else None
        return f"TokenProvider(cache={self._cache.name!r}, shared={shared!r}, margin={self._margin:g})"

    def token(self) -> DeyelToken:
        preset = self._preset
        if preset is not None and preset.is_valid():
            return preset
        token = self._fresh(self._cache.get(self._key))
        if token is not None:
            return token
        with self._cache.lock(self._key):
            # Someone may have renewed while we waited for the lock: look again before fetching.
            current = self._cache.get(self._key)
            token = self._fresh(current)
            if token is not None:
                return token
            token = self._renew(current) if self._shared is None else self._through_shared_tier(current)
            self._cache.put(self._key, token)
            return token

    def invalidate(self, access_token: str) -> None:
        """Forget a token the server rejected, unless a cache already holds a newer one."""
        if self._preset is not None and self._preset.access_token == access_token:
            self._preset = None
        current = self._cache.get(self._key)
        if current is not None and current.access_token == access_token and current.refresh_token:
            # The access token is dead, not its refresh token: keep it for the renewal.
            self._refresh_token = current.refresh_token
        self._cache.discard(self._key, access_token)
        if self._shared is not None:
            try:
                self._shared.discard(self._key, access_token)
            except TokenCacheError as exc:
                self._warn(exc)

    def _through_shared_tier(self, current: DeyelToken | None) -> DeyelToken:
        assert self._shared is not None
        shared = self._shared
        fetched: DeyelToken | None = None
        try:
            token = self._fresh(shared.get(self._key))
            if token is not None:
                return token
            with shared.lock(self._key):
                # Someone may have renewed while we waited: look again. A waiter only looks (masking the
                # token waits until the lock is released: it may be a round trip to the task supervisor).
                stored = shared.get(self._key)
                if stored is None or not stored.is_fresh(self._margin):
                    fetched = self._renew(stored or current)
                    if fetched is not (stored or current):
                        shared.put(self._key, fetched)
                    return fetched
            self._known(stored)
            return stored
        except TokenCacheError as exc:
            self._warn(exc)
            # A fault after the fetch (storing, releasing) must not cost a second token.
            if fetched is not None:
                return fetched
            token = self._renew(current)
            # Overwrite what could not be read (a corrupted entry would otherwise stay); best effort.
            try:
                shared.put(self._key, token)
            except TokenCacheError:
                pass
            return token

    def _renew(self, current: DeyelToken | None) -> DeyelToken:
        """A new token: the refresh grant when there is a refresh token, else the full grant.

        While renewals fail and ``current`` is still valid, ``current`` is served (and retried later).
        """
        now = time.time()
        if current is not None and current.is_valid(now) and now < self._retry_at:
            return current
        deadline = time.monotonic() + self._budget.fetching if self._budget is not None else None
        try:
            token = self._new_token(current, deadline)
        except DeyelConfigError:
            raise
        except DeyelError as exc:
            if current is None or not current.is_valid():
                raise
            self._retry_at = time.time() + RENEWAL_RETRY_INTERVAL
            log.warning(
                "Could not renew the Deyel token (%s); the current one stays valid for %.0f s and is "
                "used meanwhile",
                type(exc).__name__,
                current.expires_at - time.time(),
            )
            return current
        self._known(token)
        self._refresh_token = token.refresh_token or self._refresh_token
        log.info("Obtained a new Deyel access token (valid %.0f s)", token.lifetime)
        return token

    def _new_token(self, current: DeyelToken | None, deadline: float | None) -> DeyelToken:
        refresh_token = (current.refresh_token if current is not None else None) or self._refresh_token
        if self._refresh is not None and refresh_token:
            try:
                token = self._refresh(refresh_token, deadline=deadline)
            except DeyelAuthError:
                log.info("The refresh token was refused; requesting a new token with the full grant")
            else:
                if token.refresh_token is None:
                    # Deyel sends the same refresh token back; keep it if a server leaves it out.
                    token = type(token)(
                        token.access_token,
                        expires_at=token.expires_at,
                        issued_at=token.issued_at,
                        refresh_token=refresh_token,
                    )
                return token
        return self._fetch(deadline=deadline)

    def _fresh(self, token: DeyelToken | None) -> DeyelToken | None:
        if token is not None and token.is_fresh(self._margin):
            self._known(token)
            return token
        return None

    def _known(self, token: DeyelToken) -> None:
        """A token of this connection: masked in Airflow's logs, and redacted by the provider itself."""
        mask_token(token, credential=self._key)
        if self._redactor is not None:
            self._redactor.add(token.access_token, token.refresh_token)

    def _warn(self, exc: TokenCacheError) -> None:
        log.warning("%s; fetching the Deyel token directly, without the shared cache", exc)
