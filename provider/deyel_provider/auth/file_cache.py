"""Tokens shared by every process of one host: one encrypted 0600 file per credential, under a file lock.

The folder may sit where other local users can create names (a shared ``AIRFLOW_HOME``, ``/tmp``). So a
folder that is not a real directory of this user, or that others can write, is refused (the provider then
warns and fetches directly); entries are opened without following links and without blocking, must be
regular files, and are read up to a small cap: a FIFO, a link to ``/dev/zero`` or a huge file planted under
an entry's name is a cache fault, not a hung or exhausted worker. The lock file must be a regular file too
(filelock >= 3.20.1 also opens it with ``O_NOFOLLOW``).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import Timeout

from deyel_provider.auth.cache import TokenCacheError
from deyel_provider.auth.crypto import UnreadableTokenError
from deyel_provider.auth.locks import LockSetupError, owned_file_lock, trusted_folder

if TYPE_CHECKING:
    from deyel_provider.auth.crypto import TokenSealer
    from deyel_provider.auth.token import DeyelToken

#: Largest entry read: a sealed token is a few KiB; anything bigger is not ours.
MAX_ENTRY_BYTES = 64 * 1024


def default_cache_dir() -> Path:
    """``$AIRFLOW_HOME/deyel-token-cache``: every task of a host sees the same Airflow home."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
    return Path(home) / "deyel-token-cache"


class FileTokenCache:
    """One file per credential in ``directory``, replaced atomically; renewals serialised by ``filelock``.

    The operating system holds a ``flock`` exactly as long as its holder lives and frees it when the holder
    dies, even by SIGKILL: a waiter waits while the lock is held, since its holder is alive and renewing,
    up to the budget of one renewal (which a live holder does not overrun: it stops itself), and a dead
    renewer blocks nobody.

    :param directory: the cache folder (created 0700 when missing).
    :param sealer: encrypts entries with the credential's key.
    :param budget: seconds one renewal may take (``RenewalBudget.total``): the longest wait for the lock.
    """

    name = "file"

    def __init__(self, directory: Path, sealer: TokenSealer, budget: float) -> None:
        self._directory = directory
        self._sealer = sealer
        self._budget = budget

    def __repr__(self) -> str:
        return f"FileTokenCache(directory={str(self._directory)!r})"

    def _path(self, key: str) -> Path:
        return self._directory / f"{key}.token"

    def _trusted(self) -> None:
        try:
            trusted_folder(self._directory)
        except LockSetupError as exc:
            raise TokenCacheError(self.name, str(exc)) from None

    def _read_entry(self, path: Path) -> bytes | None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: a link planted under the entry's name
            raise TokenCacheError(self.name, f"cannot read {path.name}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                raise TokenCacheError(self.name, f"{path.name} is not a regular file of this user: refused")
            data = handle.read(MAX_ENTRY_BYTES + 1)
        if len(data) > MAX_ENTRY_BYTES:
            raise TokenCacheError(self.name, f"{path.name} is larger than a token entry: refused")
        return data

    def get(self, key: str) -> DeyelToken | None:
        self._trusted()
        data = self._read_entry(self._path(key))
        if data is None:
            return None
        try:
            return self._sealer.open(data)
        except UnreadableTokenError as exc:
            raise TokenCacheError(self.name, f"{self._path(key).name}: {exc}") from None

    def put(self, key: str, token: DeyelToken) -> None:
        data = self._sealer.seal(token)
        self._trusted()
        try:
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
        self._trusted()
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
        try:
            lock = owned_file_lock(self._directory, f"{key}.lock")
        except LockSetupError as exc:
            raise TokenCacheError(self.name, str(exc)) from None
        try:
            lock.acquire(timeout=self._budget)
        except Timeout:
            raise TokenCacheError(
                self.name,
                f"another process held the renewal lock for more than {self._budget:g} s, the budget of "
                f"one renewal (retry policy and timeout): not waiting longer",
            ) from None
        except OSError as exc:
            raise TokenCacheError(self.name, f"cannot lock in {self._directory}: {exc.strerror}") from None
        try:
            yield
        finally:
            lock.release()
