"""Decides when a token is fresh, and renews it once however many callers ask at the same time."""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import TYPE_CHECKING

from airflow.sdk.log import mask_secret

if TYPE_CHECKING:
    from collections.abc import Callable

    from deyel_provider.auth.cache import TokenCache
    from deyel_provider.auth.token import DeyelToken

log = logging.getLogger(__name__)

_masked: set[str] = set()
_masked_guard = threading.Lock()


def mask_token(token: DeyelToken) -> None:
    """Register the token's secrets with Airflow's log masker, once per process."""
    for secret in (token.access_token, token.refresh_token):
        if secret and secret not in _masked:
            mask_secret(secret)
            with _masked_guard:
                _masked.add(secret)


def credential_key(token_url: str, client_id: str, client_secret: str) -> str:
    """Cache key of one credential: rotating the secret changes the key, so an old token is never served."""
    secret_hash = hashlib.sha256(client_secret.encode()).hexdigest()
    material = "\n".join((token_url, client_id, secret_hash))
    return "deyel-token-" + hashlib.sha256(material.encode()).hexdigest()[:32]


class TokenProvider:
    """Serves a fresh token from the cache, fetching a new one (single-flight) only when needed.

    :param fetch: performs the token request (the token client's grant).
    :param cache: where tokens are shared.
    :param key: the credential's cache key.
    :param margin: renew this many seconds before expiry (capped at half the lifetime by the token).
    """

    def __init__(self, fetch: Callable[[], DeyelToken], cache: TokenCache, key: str, margin: float) -> None:
        self._fetch = fetch
        self._cache = cache
        self._key = key
        self._margin = margin

    def __repr__(self) -> str:
        return f"TokenProvider(cache={self._cache.name!r}, margin={self._margin:g})"

    def token(self) -> DeyelToken:
        token = self._fresh_from_cache()
        if token is not None:
            return token
        with self._cache.lock(self._key):
            # Someone may have renewed while we waited for the lock: look again before fetching.
            token = self._fresh_from_cache()
            if token is not None:
                return token
            token = self._fetch()
            mask_token(token)
            self._cache.put(self._key, token)
            log.info("Obtained a new Deyel access token (valid %.0f s)", token.lifetime)
            return token

    def invalidate(self, access_token: str) -> None:
        """Forget a token the server rejected, unless the cache already holds a newer one."""
        self._cache.discard(self._key, access_token)

    def _fresh_from_cache(self) -> DeyelToken | None:
        token = self._cache.get(self._key)
        if token is not None and token.is_fresh(self._margin):
            mask_token(token)
            return token
        return None
