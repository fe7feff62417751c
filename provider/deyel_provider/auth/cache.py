"""Where tokens are kept between requests: the cache interface, the in-process cache and the null cache."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from deyel_provider.auth.token import DeyelToken


class TokenCacheError(Exception):
    """A shared cache could not serve a request (store down, folder unwritable, lock not taken, bad entry).

    Backends raise it; the token provider alone decides what happens next (a warning and a direct fetch), so
    a cache fault never fails a task.

    :param backend: the backend's name, for the warning.
    """

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend} token cache: {message}")


class TokenCache(Protocol):
    """A place to keep tokens by credential key, with a lock that makes renewal single-flight."""

    name: str

    def get(self, key: str) -> DeyelToken | None: ...

    def put(self, key: str, token: DeyelToken) -> None: ...

    def discard(self, key: str, access_token: str) -> None:
        """Drop the entry, but only if it still holds ``access_token`` (another holder may have renewed)."""

    def lock(self, key: str) -> AbstractContextManager[object]: ...


class MemoryTokenCache:
    """Tokens shared by every hook of this process; a lock per credential serialises renewals."""

    name = "memory"

    def __init__(self) -> None:
        self._tokens: dict[str, DeyelToken] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryTokenCache(entries={len(self._tokens)})"

    def get(self, key: str) -> DeyelToken | None:
        return self._tokens.get(key)

    def put(self, key: str, token: DeyelToken) -> None:
        self._tokens[key] = token

    def discard(self, key: str, access_token: str) -> None:
        with self._guard:
            current = self._tokens.get(key)
            if current is not None and current.access_token == access_token:
                del self._tokens[key]

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()

    def lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


class NoTokenCache:
    """Keeps nothing: every request fetches a token (``cache=none``, for debugging)."""

    name = "none"

    def __repr__(self) -> str:
        return "NoTokenCache()"

    def get(self, key: str) -> DeyelToken | None:
        return None

    def put(self, key: str, token: DeyelToken) -> None:
        pass

    def discard(self, key: str, access_token: str) -> None:
        pass

    def lock(self, key: str) -> AbstractContextManager[object]:
        return nullcontext()


#: One per process, so that every hook (and every task run in this process) shares its tokens.
PROCESS_CACHE = MemoryTokenCache()
