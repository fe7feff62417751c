"""Cross-process locks, shared by the token cache (renewal single-flight) and the load lease (one load of a
form at a time): a lock folder and lock files that only this user can have made, and the thread that keeps
a Redis lock's lease alive while its holder lives.

The folder may sit where other local users can create names (a shared ``AIRFLOW_HOME``, ``/tmp``): a folder
that is not a real directory of this user, or that others can write, is refused, and so is a lock file that
is not a regular file of this user (another user could otherwise plant one to block or misdirect us).
``filelock`` holds an ``flock`` on the open file: the operating system drops it when its holder dies, even by
SIGKILL. A Redis lock's lease is extended every third of the lease by a thread of the holder's process; a
holder that dies stops extending, and the lock frees itself within one lease.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

log = logging.getLogger(__name__)


class LockSetupError(Exception):
    """The lock folder or a lock file cannot be trusted or used; each caller wraps it in its own error."""


def trusted_folder(directory: Path) -> None:
    """Create the folder 0700 if needed; refuse one that is a link, not ours, or writable by others."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
    except OSError as exc:
        raise LockSetupError(f"cannot use {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise LockSetupError(f"{directory} is not a folder (a link?): refused")
    if info.st_uid != os.getuid():
        raise LockSetupError(f"{directory} belongs to another user: refused")
    if info.st_mode & 0o022:
        raise LockSetupError(f"{directory} is writable by others: refused")


def owned_file_lock(directory: Path, name: str) -> FileLock:
    """The (not yet taken) lock ``directory/name``: the folder trusted, and the file, if it exists, a
    regular file of this user (filelock >= 3.20.1 also opens it with ``O_NOFOLLOW``)."""
    trusted_folder(directory)
    path = directory / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise LockSetupError(f"cannot check {path.name}: {exc.strerror}") from None
    else:
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise LockSetupError(f"{path.name} is not a regular file of this user: refused")
    return FileLock(str(path), mode=0o600)


class LeaseKeeper:
    """Extends a held Redis lock's lease every third of the lease, from a thread, until stopped (or until
    ``until``, a ``time.monotonic()`` past which its holder counts as stuck).

    The thread lives and dies with the holder's process, so the lease outlasts the holder by one lease at
    most. :meth:`held` says whether the lease surely still holds: it is false once an extension found the
    lock taken (``LockNotOwnedError``), and once a whole lease has passed since the last extension was sent
    (a process paused past its lease learns it before anything else it does, whichever thread wakes first).

    :param lock: a taken ``redis.lock.Lock`` (``thread_local=False``).
    :param lease: the lock's timeout, in seconds.
    :param what: names the lock in the warnings, e.g. ``redis token cache: the renewal lock``.
    :param after_loss: what losing it means, for the warning.
    :param taken_at: ``time.monotonic()`` just before the call that took the lock.
    """

    def __init__(
        self,
        lock: Any,
        lease: float,
        *,
        what: str,
        after_loss: str,
        taken_at: float,
        until: float | None = None,
    ) -> None:
        self._lock = lock
        self._lease = lease
        self._what = what
        self._after_loss = after_loss
        self._valid_until = taken_at + lease
        self._lost = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(lock, until), name="deyel-lease-keeper", daemon=True
        )
        self._thread.start()

    def held(self) -> bool:
        return not self._lost and time.monotonic() < self._valid_until

    def _run(self, lock: Any, until: float | None) -> None:
        import redis

        while not self._stopped.wait(self._lease / 3):
            if until is not None and time.monotonic() >= until:
                log.warning("%s was held past its budget; its lease is no longer kept", self._what)
                return
            sent = time.monotonic()
            try:
                lock.reacquire()
            except redis.exceptions.LockNotOwnedError:
                self._lost = True
                log.warning(
                    "%s: its lease ran out before it could be extended (this process was paused for longer "
                    "than the lease?); %s",
                    self._what,
                    self._after_loss,
                )
                return
            except redis.RedisError:
                continue  # the lease may still hold: try again at the next beat
            self._valid_until = sent + self._lease

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def release(self) -> None:
        """Stop extending the lease, then release the lock."""
        import redis

        self.stop()
        try:
            self._lock.release()
        except redis.RedisError:
            pass  # the lease ran out or Redis went away: the lock frees itself either way
