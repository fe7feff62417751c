"""Tokens shared by every process of one host: one encrypted 0600 file per credential, under a file lock."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from deyel_provider.auth.cache import TokenCacheError
from deyel_provider.auth.crypto import UnreadableTokenError

if TYPE_CHECKING:
    from deyel_provider.auth.crypto import TokenSealer
    from deyel_provider.auth.token import DeyelToken


def default_cache_dir() -> Path:
    """``$AIRFLOW_HOME/deyel-token-cache``: every task of a host sees the same Airflow home."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
    return Path(home) / "deyel-token-cache"


class FileTokenCache:
    """One file per credential in ``directory``, replaced atomically; renewals serialised by ``filelock``.

    The operating system frees a ``flock`` when its holder dies, even by SIGKILL, so a dead renewer never
    blocks the others.

    :param directory: the cache folder (created 0700 when missing).
    :param sealer: encrypts entries with the credential's key.
    :param lock_wait: seconds to wait for another process's renewal.
    """

    name = "file"

    def __init__(self, directory: Path, sealer: TokenSealer, lock_wait: float) -> None:
        self._directory = directory
        self._sealer = sealer
        self._lock_wait = lock_wait

    def __repr__(self) -> str:
        return f"FileTokenCache(directory={str(self._directory)!r})"

    def _path(self, key: str) -> Path:
        return self._directory / f"{key}.token"

    def get(self, key: str) -> DeyelToken | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenCacheError(self.name, f"cannot read {self._path(key)}: {exc.strerror}") from None
        try:
            return self._sealer.open(data)
        except UnreadableTokenError as exc:
            raise TokenCacheError(self.name, f"{self._path(key).name}: {exc}") from None

    def put(self, key: str, token: DeyelToken) -> None:
        data = self._sealer.seal(token)
        try:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp creates the file 0600; os.replace makes the new entry appear whole or not at all.
            fd, tmp = tempfile.mkstemp(dir=self._directory, prefix=f".{key}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self._path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise TokenCacheError(self.name, f"cannot write in {self._directory}: {exc.strerror}") from None

    def discard(self, key: str, access_token: str) -> None:
        with self.lock(key):
            try:
                current = self.get(key)
            except TokenCacheError:
                current = None  # unreadable: drop it as well
            else:
                if current is None or current.access_token != access_token:
                    return
            try:
                self._path(key).unlink(missing_ok=True)
            except OSError as exc:
                raise TokenCacheError(self.name, f"cannot remove {self._path(key)}: {exc.strerror}") from None

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        lock = FileLock(str(self._directory / f"{key}.lock"), timeout=self._lock_wait, mode=0o600)
        try:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            raise TokenCacheError(
                self.name, f"another process held the renewal lock for more than {self._lock_wait:g} s"
            ) from None
        except OSError as exc:
            raise TokenCacheError(self.name, f"cannot lock in {self._directory}: {exc.strerror}") from None
        try:
            yield
        finally:
            lock.release()
