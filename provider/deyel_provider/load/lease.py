"""One load at a time per (Deyel server, form): a lease held from before its first search to its end.

Deyel has no unique constraint: two loads of the same keys whose searches both run before either creates
both create (two DAG runs overlapping, a manual run beside a scheduled one, a retry beside a zombie). So a
load takes a lease on the form first, through the provider's shared lock machinery
(:mod:`deyel_provider.auth.locks`, the token cache's too), chosen by the connection's ``cache`` extra:

- ``redis``: a Redis lock, which holds across hosts and Celery workers. Its lease (``cache_lock_lease``) is
  extended every third of it by a thread of the holder for as long as the load runs; a holder that dies
  frees it within one lease.
- anything else: an ``flock`` on a file in one folder per user of the host (:func:`lock_folder`:
  ``$DEYEL_LOCK_DIR`` or ``~/.cache/deyel-locks``, not the connection's ``cache_dir``, so connections with
  different cache folders meet the same lock), which holds across the processes of one host only; the
  operating system drops it when its holder dies, even by SIGKILL. Under an Airflow executor that may run
  tasks on several hosts (not Local/Sequential), the first such load of a process logs a warning.

The name is a hash of the server's base URL (one spelling per server: :func:`server_identity`) and the form;
not of the credentials, since two connections (two API clients) writing the same form of the same server
duplicate just the same. It names nothing secret. A Redis key without the provider's lease (no expiry, or a
longer one) is refused at once, as the token cache's lock does: waiting for it would wait for nobody.

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
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from filelock import Timeout

from deyel_provider.auth.locks import LeaseKeeper, LockSetupError, owned_file_lock
from deyel_provider.exceptions import DeyelBusyError, DeyelLeaseError, DeyelLeaseLostError

if TYPE_CHECKING:
    from deyel_provider.connection.settings import DeyelConfig

log = logging.getLogger(__name__)

#: Seconds a load waits by default for another load of the same form to end.
DEFAULT_LOCK_TIMEOUT = 300.0


#: Environment variable naming the folder of the file leases (default: :func:`lock_folder`).
LOCK_DIR_ENV = "DEYEL_LOCK_DIR"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Executors that run every task on one host, where a file lease keeps loads apart.
_ONE_HOST_EXECUTORS = ("LocalExecutor", "SequentialExecutor", "DebugExecutor")
_warned_about_executor = False


def lease_name(base_url: str, form: str) -> str:
    """``deyel-load-`` and a hash of the server and the form: the same for every connection to that form,
    however its URL is spelled (:func:`server_identity`)."""
    digest = hashlib.sha256(json.dumps([server_identity(base_url), form]).encode()).hexdigest()
    return "deyel-load-" + digest[:32]


def server_identity(base_url: str) -> str:
    """``base_url`` as one spelling per server: scheme and host lowercased, a default port dropped, no
    trailing slash (``HTTPS://Deyel.Example:443/api/`` is ``https://deyel.example/api``); the path keeps its
    case (a server may tell paths apart by it)."""
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    try:
        port = parts.port
    except ValueError:
        port = None
    where = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{where}{parts.path.rstrip('/')}{query}"


def lock_folder() -> Path:
    """The folder of the file leases: ``$DEYEL_LOCK_DIR``, else ``~/.cache/deyel-locks`` of this user (its
    home from the password database, not ``$HOME``): one per user of a host, whatever the connection's
    ``cache_dir``, so every load of a form on this host, whichever connection it uses, meets the same lock."""
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    try:
        import pwd

        home = pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        home = os.path.expanduser("~")
    return Path(home) / ".cache" / "deyel-locks"


def _warn_if_several_hosts() -> None:
    """Once per process: a file lease under an executor that spreads tasks over hosts excludes nothing."""
    global _warned_about_executor
    if _warned_about_executor:
        return
    try:
        from airflow.configuration import conf

        executor = str(conf.get("core", "executor", fallback="") or "")
    except Exception:  # no Airflow configuration to read: nothing to warn about
        return
    names = [e.strip().rsplit(".", 1)[-1].split(":")[-1] for e in executor.split(",") if e.strip()]
    if not names or all(n in _ONE_HOST_EXECUTORS for n in names):
        return
    _warned_about_executor = True
    log.warning(
        "the load lease is a file lock on this host, but Airflow's executor (%s) may run loads on several "
        "hosts: loads of one form on two hosts are not kept apart, and may both create the same keys. Set "
        "the connection's cache=redis (with cache_url) to hold the lease across hosts",
        executor[:100],
    )


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
def load_lease(config: DeyelConfig, form: str, *, timeout: float) -> Iterator[LoadLease]:
    """Hold the lease of ``form`` on the connection's server, waiting up to ``timeout`` seconds for it."""
    name = lease_name(config.base_url, form)
    lease = _redis_lease if config.cache == "redis" else _file_lease
    with lease(config, name, form, timeout) as held:
        yield held


@contextmanager
def _file_lease(config: DeyelConfig, name: str, form: str, timeout: float) -> Iterator[LoadLease]:
    directory = lock_folder()
    try:
        lock = owned_file_lock(directory, f"{name}.lock")
    except LockSetupError as exc:
        raise DeyelLeaseError(
            f"the load lease of {form}: {exc}; set the environment variable {LOCK_DIR_ENV} to a folder of "
            f"this user that others cannot write, or use cache=redis (nothing was written)"
        ) from None
    backend = f"file lock in {directory}"
    _warn_if_several_hosts()
    log.info(
        "one load of %s at a time on this host (%s; cache=redis makes it hold across hosts)", form, backend
    )
    started = time.monotonic()
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if timeout == 0:
                raise
            _waiting(form, timeout)
            lock.acquire(timeout=timeout)
    except Timeout:
        raise _busy(form, backend, timeout) from None
    except OSError as exc:
        raise DeyelLeaseError(
            f"the load lease of {form}: cannot lock in {directory}: {exc.strerror} (nothing was written)"
        ) from None
    _taken(form, started)
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
def _redis_lease(config: DeyelConfig, name: str, form: str, timeout: float) -> Iterator[LoadLease]:
    import redis

    from deyel_provider.auth.backends import redis_url
    from deyel_provider.auth.redis_cache import LOCK_POLL, redis_client

    lease = config.cache_lock_lease
    backend = f"Redis lock, lease {lease:g} s"
    log.info("one load of %s at a time across hosts (%s)", form, backend)
    lock = redis_client(redis_url(config)).lock(f"{name}:lease", timeout=lease, thread_local=False)
    started = time.monotonic()
    give_up_at = started + timeout
    waiting = False
    try:
        while True:
            taken_at = time.monotonic()
            if lock.acquire(blocking=False):
                break
            remaining = lock.redis.pttl(lock.name)
            if remaining == -1 or remaining > lease * 1000:
                # Our holders always set the lease: a key without one, or a longer one, is not a load's.
                raise DeyelLeaseError(
                    f"the load lease of {form} is held without the provider's lease (Redis key "
                    f"{lock.name} has {'no expiry' if remaining == -1 else 'a longer expiry'}): not a load "
                    f"of this provider with cache_lock_lease={lease:g} s; not waiting. Delete that key, or "
                    f"give every connection to this server the same cache_lock_lease (nothing was written)"
                )
            if taken_at >= give_up_at:
                raise _busy(form, backend, timeout)
            if not waiting:
                _waiting(form, timeout)
                waiting = True
            time.sleep(min(LOCK_POLL, lease / 4, give_up_at - taken_at))
    except redis.RedisError as exc:
        # The class name only: a connection error's text may carry the URL (and its password).
        raise DeyelLeaseError(
            f"the load lease of {form}: Redis failed ({type(exc).__name__}); nothing was written: check that "
            f"Redis is up and cache_url / cache_conn_id"
        ) from None
    _taken(form, started)
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
        keeper.release()


def _waiting(form: str, timeout: float) -> None:
    log.info("another load of %s holds its lease: waiting up to %g s (lock_timeout)", form, timeout)


def _taken(form: str, started: float) -> None:
    waited = time.monotonic() - started
    if waited >= 0.1:
        log.info("took the load lease of %s after waiting %.1f s", form, waited)


def _busy(form: str, backend: str, timeout: float) -> DeyelBusyError:
    waited = "did not wait (lock_timeout=0)" if timeout == 0 else f"waited lock_timeout={timeout:g} s"
    return DeyelBusyError(
        f"another load of {form} holds its load lease ({backend}): this load {waited} and wrote nothing; "
        f"run it again once the other has ended, or give it a longer lock_timeout"
    )
