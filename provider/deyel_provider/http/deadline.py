"""A total deadline per request (connect, TLS, headers and the whole body), whatever pace the server sends at.

The connection's ``timeout`` bounds each socket operation only: a server that sends one byte just before
each read would time out holds the calling thread for ever (a body read in chunks, and even a status line,
is many reads). A request made inside :func:`total_deadline` is watched instead: the connections of a
session mounted with :func:`watched_adapter` tell the current deadline which socket carries the request,
and one watch thread per process shuts that socket down once the deadline passes; the blocked read returns
at once and the request fails with ``DeyelConnectionError`` naming the ``request_deadline`` extra.

A :class:`Call` groups the requests one blocking call makes (a trigger's poll, in a worker thread):
cancelling it cuts the request in progress at once and fails the next ones, so a cancelled trigger frees
its thread without waiting for the deadline either. Not covered: the name lookup before a connection (the
resolver's own timeouts) and a body a caller streams itself after ``request(..., stream=True)`` returned.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from deyel_provider.exceptions import DeyelConnectionError

#: What bounds a request by default, as its error names it.
REQUEST_DEADLINE = (
    "the connection's 'request_deadline' extra, default 4 x 'timeout'; raise it for a slow but working server"
)
#: Seconds the watch thread stays after its last request ended, so a run of requests starts it once.
LINGER = 1.0
#: Settled guards kept in the heap before it is rebuilt without them.
_REBUILD_AT = 256


class Call:
    """The requests of one blocking call; :meth:`cancel` (from any thread) cuts them off."""

    def __init__(self) -> None:
        self.cancelled = False
        self._lock = threading.Lock()
        self._guards: set[Guard] = set()
        self._woken = threading.Event()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            guards = list(self._guards)
        self._woken.set()  # a retry's wait (a Retry-After of minutes) ends now too
        for guard in guards:
            guard.expire()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less: until the call is cancelled."""
        self._woken.wait(seconds)

    def _add(self, guard: Guard) -> None:
        with self._lock:
            self._guards.add(guard)
            cancelled = self.cancelled
        if cancelled:
            guard.expire()

    def _discard(self, guard: Guard) -> None:
        with self._lock:
            self._guards.discard(guard)


#: The call the running code belongs to (set by the triggers around each blocking call).
current_call: contextvars.ContextVar[Call | None] = contextvars.ContextVar("deyel_call", default=None)


def sleep(seconds: float) -> None:
    """``time.sleep``, cut short when the current :class:`Call` is cancelled (a retry's wait in a trigger's
    thread: the next attempt then fails at once, and the thread is free)."""
    call = current_call.get()
    if call is None:
        time.sleep(seconds)
    else:
        call.sleep(seconds)


class Guard:
    """One request's deadline and the connection carrying it (set by the watched connections)."""

    def __init__(self, seconds: float, limit: str = REQUEST_DEADLINE) -> None:
        self.seconds = seconds
        self.limit = limit
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self.cancelled = False
        self.settled = False
        self._conn: HTTPConnection | None = None

    def attach(self, conn: HTTPConnection) -> None:
        self._conn = conn
        if self.expired:  # expired before it had a socket (while connecting): cut it now
            _shut(conn)

    def expire(self) -> None:
        # Set before the socket is read: a connection attaching meanwhile sees the flag (see attach).
        self.expired = True
        conn = self._conn
        if conn is not None:
            _shut(conn)

    def error(self, *, method: str, path: str) -> DeyelConnectionError:
        if self.cancelled:
            return DeyelConnectionError(
                "the call was cancelled (its trigger ended) before the answer was complete",
                method=method,
                path=path,
                transient=False,
            )
        return DeyelConnectionError(
            f"no complete answer within {self.seconds:g} s ({self.limit}): the server answers too slowly "
            f"or not at all",
            method=method,
            path=path,
            transient=True,
        )


def _shut(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None and not isinstance(sock, socket.socket):
        # TLS in TLS (an https:// proxy to an https origin): urllib3's SSLTransport wraps the socket.
        sock = getattr(sock, "socket", sock)
    try:
        # socket.socket's own shutdown, also for an SSLSocket (whose override drops its SSL object under
        # the thread reading it): the blocked read sees the end of the stream at once.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # type: ignore[arg-type]
    except (OSError, TypeError, AttributeError):
        pass  # no socket yet (attach cuts it), already closed, or not a plain socket


_local = threading.local()


def current_guard() -> Guard | None:
    return getattr(_local, "guard", None)


@contextmanager
def total_deadline(
    seconds: float, *, method: str, path: str, limit: str = REQUEST_DEADLINE
) -> Iterator[Guard]:
    """Run the request made in the block under a total deadline of ``seconds`` (``limit`` says what sets it,
    for the error).

    A ``requests`` or socket error after the deadline passed (or the call was cancelled) becomes the
    deadline's ``DeyelConnectionError``, and so does a block that ends normally after it (a body without a
    length reads as complete when its socket is shut down).
    """
    call = current_call.get()
    guard = Guard(seconds, limit)
    if call is not None and call.cancelled:
        guard.cancelled = True
        raise guard.error(method=method, path=path)
    outer = current_guard()
    _local.guard = guard
    _WATCH.add(guard)
    if call is not None:
        call._add(guard)
    try:
        yield guard
    except (requests.RequestException, OSError) as exc:
        guard.cancelled = call is not None and call.cancelled
        if guard.expired:
            raise guard.error(method=method, path=path) from exc
        raise
    else:
        guard.cancelled = call is not None and call.cancelled
        if guard.expired:
            raise guard.error(method=method, path=path)
    finally:
        _local.guard = outer
        if call is not None:
            call._discard(guard)
        _WATCH.settle(guard)


class _Watch:
    """The one thread that expires guards at their deadline; it ends ``LINGER`` s after the last one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Guard]] = []
        self._order = itertools.count()
        self._settled = 0
        self._thread: threading.Thread | None = None

    def add(self, guard: Guard) -> None:
        with self._cond:
            heapq.heappush(self._heap, (guard.deadline, next(self._order), guard))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deyel-deadline", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is guard:
                self._cond.notify()

    def settle(self, guard: Guard) -> None:
        with self._cond:
            guard.settled = True
            self._settled += 1
            if self._settled >= _REBUILD_AT and self._settled * 2 >= len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].settled]
                heapq.heapify(self._heap)
                self._settled = 0

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].settled or self._heap[0][0] <= now):
                    _, _, guard = heapq.heappop(self._heap)
                    if guard.settled:
                        self._settled -= 1
                    else:
                        guard.expire()
                if self._heap:
                    self._cond.wait(self._heap[0][0] - now)
                elif not self._cond.wait(LINGER) and not self._heap:
                    self._thread = None
                    return

    def forget(self) -> None:
        """A forked child has no watch thread: it starts its own."""
        self.__init__()  # type: ignore[misc]


_WATCH = _Watch()
os.register_at_fork(after_in_child=_WATCH.forget)


class _Watched:
    """Tells the current guard which connection carries its request (fresh or reused)."""

    def connect(self) -> None:
        guard = current_guard()
        if guard is not None:
            guard.attach(self)  # type: ignore[arg-type]
        super().connect()  # type: ignore[misc]
        if guard is not None and guard.expired:
            _shut(self)  # type: ignore[arg-type]

    def request(self, *args: Any, **kwargs: Any) -> None:
        guard = current_guard()
        if guard is not None:
            guard.attach(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections report to :func:`total_deadline` (proxied ones included)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have connection classes of their own
            manager.pool_classes_by_scheme = _POOLS
        return manager
