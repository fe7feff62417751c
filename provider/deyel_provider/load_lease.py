"""One load at a time per (Deyel server, form): a lease held from before its first search to its end.

Deyel has no unique constraint: two loads of the same keys whose searches both run before either creates
both create (two DAG runs overlapping, a manual run beside a scheduled one, a retry beside a zombie). So a
load takes a lease on the form first, through the provider's shared lock machinery
(:mod:`deyel_provider.locks`, the token cache's too), chosen by the connection's ``cache`` extra:

- ``redis``: a Redis lock, which holds across hosts and Celery workers. Its lease (``cache_lock_lease``) is
  extended every third of it by a thread of the holder for as long as the load runs; a holder that dies
  frees it within one lease.
- anything else: an ``flock`` on a file in the cache folder (``cache_dir``), which holds across the processes
  of one host only; the operating system drops it when its holder dies, even by SIGKILL.

The name is a hash of the server's base URL and the form; not of the credentials, since two connections (two
API clients) writing the same form of the same server duplicate just the same. It names nothing secret.

A second load waits up to ``lock_timeout`` seconds (logged once), then fails with ``DeyelBusyError`` having
written nothing. A load whose lease is lost while it runs (its process paused past the lease, the lock
removed) stops before its next write with ``DeyelLeaseLostError``: :meth:`LoadLease.check` runs before each
create and update. Cost: no request to Deyel; with Redis, one round trip to take the lease, one to release
it, and one per third of a lease while the load runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import Timeout

from deyel_provider.exceptions import DeyelBusyError, DeyelLeaseError, DeyelLeaseLostError
from deyel_provider.locks import LeaseKeeper, LockSetupError, owned_file_lock

if TYPE_CHECKING:
    from deyel_provider.config import DeyelConfig

log = logging.getLogger(__name__)

#: Seconds a load waits by default for another load of the same form to end.
DEFAULT_LOCK_TIMEOUT = 300.0


def lease_name(base_url: str, form: str) -> str:
    """``deyel-load-`` and a hash of the server and the form: the same for every connection to that form."""
    digest = hashlib.sha256(json.dumps([base_url.rstrip("/"), form]).encode()).hexdigest()
    return "deyel-load-" + digest[:32]


class LoadLease:
    """A held lease: :meth:`check`, before each write, raises ``DeyelLeaseLostError`` once it is lost."""

    def __init__(self, form: str, backend: str, held: Callable[[], bool]) -> None:
        self._form = form
        self._backend = backend
        self._held = held

    def __repr__(self) -> str:
        return f"LoadLease(form={self._form!r}, backend={self._backend!r})"

    def check(self) -> None:
        if not self._held():
            raise DeyelLeaseLostError(
                f"the load lease of {self._form} ({self._backend}) was lost while the load ran (this process "
                f"was paused past cache_lock_lease, or the lock was removed): another load may hold it, so "
                f"this one stopped before its next write; what it wrote is kept, and a rerun converges"
            )


@contextmanager
def load_lease(config: DeyelConfig, form: str, *, timeout: float, logger: Any = log) -> Iterator[LoadLease]:
    """Hold the lease of ``form`` on the connection's server, waiting up to ``timeout`` seconds for it."""
    name = lease_name(config.base_url, form)
    lease = _redis_lease if config.cache == "redis" else _file_lease
    with lease(config, name, form, timeout, logger) as held:
        yield held


@contextmanager
def _file_lease(
    config: DeyelConfig, name: str, form: str, timeout: float, logger: Any
) -> Iterator[LoadLease]:
    from deyel_provider.auth.file_cache import default_cache_dir

    directory = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    try:
        lock = owned_file_lock(directory, f"{name}.lock")
    except LockSetupError as exc:
        raise DeyelLeaseError(
            f"the load lease of {form}: {exc}; set cache_dir to a folder of this user that others cannot "
            f"write (nothing was written)"
        ) from None
    backend = f"file lock in {directory}"
    logger.info(
        "one load of %s at a time on this host (%s; cache=redis makes it hold across hosts)", form, backend
    )
    started = time.monotonic()
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if timeout == 0:
                raise
            _waiting(logger, form, timeout)
            lock.acquire(timeout=timeout)
    except Timeout:
        raise _busy(form, backend, timeout) from None
    except OSError as exc:
        raise DeyelLeaseError(
            f"the load lease of {form}: cannot lock in {directory}: {exc.strerror} (nothing was written)"
        ) from None
    _taken(logger, form, started)
    path = Path(lock.lock_file)
    try:
        # Removed or replaced while held (a cleanup of the folder), the file no longer excludes anyone.
        taken = _identity(path)
        yield LoadLease(form, backend, lambda: _identity(path) == taken)
    finally:
        lock.release()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


@contextmanager
def _redis_lease(
    config: DeyelConfig, name: str, form: str, timeout: float, logger: Any
) -> Iterator[LoadLease]:
    import redis

    from deyel_provider.auth.backends import redis_url
    from deyel_provider.auth.redis_cache import LOCK_POLL, redis_client

    lease = config.cache_lock_lease
    backend = f"Redis lock, lease {lease:g} s"
    logger.info("one load of %s at a time across hosts (%s)", form, backend)
    lock = redis_client(redis_url(config)).lock(f"{name}:lease", timeout=lease, thread_local=False)
    started = time.monotonic()
    give_up_at = started + timeout
    waiting = False
    try:
        while True:
            taken_at = time.monotonic()
            if lock.acquire(blocking=False):
                break
            if taken_at >= give_up_at:
                raise _busy(form, backend, timeout)
            if not waiting:
                _waiting(logger, form, timeout)
                waiting = True
            time.sleep(min(LOCK_POLL, lease / 4, give_up_at - taken_at))
    except redis.RedisError as exc:
        # The class name only: a connection error's text may carry the URL (and its password).
        raise DeyelLeaseError(
            f"the load lease of {form}: Redis failed ({type(exc).__name__}); nothing was written: check that "
            f"Redis is up and cache_url / cache_conn_id"
        ) from None
    _taken(logger, form, started)
    keeper = LeaseKeeper(
        lock,
        lease,
        what=f"the load lease of {form}",
        after_loss="the load stops before its next write",
        taken_at=taken_at,
    )
    try:
        yield LoadLease(form, backend, keeper.held)
    finally:
        keeper.stop()
        try:
            lock.release()
        except redis.RedisError:
            pass  # the lease ran out or Redis went away: the lock frees itself either way


def _waiting(logger: Any, form: str, timeout: float) -> None:
    logger.info("another load of %s holds its lease: waiting up to %g s (lock_timeout)", form, timeout)


def _taken(logger: Any, form: str, started: float) -> None:
    waited = time.monotonic() - started
    if waited >= 0.1:
        logger.info("took the load lease of %s after waiting %.1f s", form, waited)


def _busy(form: str, backend: str, timeout: float) -> DeyelBusyError:
    waited = "did not wait (lock_timeout=0)" if timeout == 0 else f"waited lock_timeout={timeout:g} s"
    return DeyelBusyError(
        f"another load of {form} holds its load lease ({backend}): this load {waited} and wrote nothing; "
        f"run it again once the other has ended, or give it a longer lock_timeout"
    )
