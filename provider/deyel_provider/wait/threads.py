"""The threads the Deyel triggers run the hook's blocking calls in: one pool per process, at most
:func:`thread_cap` threads, a connection at most half of them, none left when no call runs.

So the event loop that serves every other trigger never waits on Deyel, and a Deyel that does not answer
holds none of the loop's default threads (other providers' triggers run theirs there) and only half of the
triggers'. A cancelled caller cuts its call's request in progress
(:class:`~deyel_provider.http.deadline.Call`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.http.deadline import Call, current_call

_T = TypeVar("_T")

#: Environment variable: the most threads the Deyel triggers of one process (a triggerer) run blocking calls
#: in, every connection together (``AIRFLOW__DEYEL__TRIGGER_THREADS`` is read too, as Airflow would name it).
THREADS_ENV = "DEYEL_TRIGGER_THREADS"
#: Its default. A call lasts at most the connection's ``request_deadline`` per attempt, plus backoff.
DEFAULT_THREADS = 16
MAX_THREADS = 1024


def thread_cap() -> int:
    """The process-wide cap on the triggers' threads: :data:`THREADS_ENV`, else :data:`DEFAULT_THREADS`."""
    raw = os.environ.get(THREADS_ENV) or os.environ.get("AIRFLOW__DEYEL__TRIGGER_THREADS") or ""
    if not raw.strip():
        return DEFAULT_THREADS
    try:
        cap = int(raw.strip())
    except ValueError:
        cap = 0
    if not 1 <= cap <= MAX_THREADS:
        raise DeyelConfigError(
            f"{THREADS_ENV} must be a whole number from 1 to {MAX_THREADS} (threads for the Deyel triggers "
            f"of one triggerer), got {raw[:40]!r}; unset it for the default, {DEFAULT_THREADS}"
        )
    return cap


class _Threads:
    """One pool for the blocking calls of every Deyel trigger of the process.

    At most :func:`thread_cap` threads, and one connection at most half of them, so a Deyel that does not
    answer leaves the other half to other connections (another tenant), and none of the event loop's
    default pool (other providers' triggers run theirs there). No thread and nothing kept per connection
    while it has no call running: the pool ends when the last call ends, a connection id is only a counter
    while its calls run, and a made-up one fails its first call (the connection lookup) like any other.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._share = 1
        self._running = 0
        self._per_conn: dict[str, int] = {}
        self._waiting: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}

    async def run(self, conn_id: str, func: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        pool = await self._take(conn_id, loop)
        call = Call()
        context = contextvars.copy_context()
        context.run(current_call.set, call)
        try:
            future = pool.submit(context.run, func, *args)
        except BaseException:
            self._release(conn_id)
            raise
        future.add_done_callback(lambda _: self._release(conn_id))
        try:
            return await asyncio.wrap_future(future, loop=loop)
        except asyncio.CancelledError:
            call.cancel()  # its request in progress is cut now: the thread is free within moments
            raise

    async def _take(self, conn_id: str, loop: asyncio.AbstractEventLoop) -> ThreadPoolExecutor:
        while True:
            with self._lock:
                if self._pool is None:
                    cap = thread_cap()
                    self._share = max(1, cap // 2)
                    self._pool = ThreadPoolExecutor(cap, thread_name_prefix="deyel-trigger")
                if self._per_conn.get(conn_id, 0) < self._share:
                    self._per_conn[conn_id] = self._per_conn.get(conn_id, 0) + 1
                    self._running += 1
                    return self._pool
                turn: asyncio.Future[None] = loop.create_future()
                waiters = self._waiting.setdefault(conn_id, [])
                waiters.append((loop, turn))
            try:
                await turn
            finally:
                with self._lock:
                    if (loop, turn) in waiters:
                        waiters.remove((loop, turn))
                    if not waiters and self._waiting.get(conn_id) is waiters:
                        del self._waiting[conn_id]

    def _release(self, conn_id: str) -> None:
        with self._lock:
            left = self._per_conn[conn_id] - 1
            if left:
                self._per_conn[conn_id] = left
            else:
                del self._per_conn[conn_id]
            self._running -= 1
            # Every waiter of the connection checks again (a cancelled one must not swallow the turn).
            waiters = list(self._waiting.get(conn_id, ()))
            idle = self._pool if self._running == 0 else None
            if idle is not None:
                self._pool = None
        for loop, turn in waiters:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits there any more
                loop.call_soon_threadsafe(_set_done, turn)
        if idle is not None:
            idle.shutdown(wait=False)  # its threads end now, the one running this included

    def forget(self) -> None:
        """A forked child has none of its parent's threads: it starts its own pool."""
        self.__init__()  # type: ignore[misc]


def _set_done(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_result(None)


_threads = _Threads()
os.register_at_fork(after_in_child=_threads.forget)


async def in_thread(conn_id: str, func: Callable[..., _T], *args: Any) -> _T:
    """``asyncio.to_thread`` (the caller's context variables included) on the triggers' threads, at most
    half of them for ``conn_id``; cancelling the caller cuts the call's request in progress."""
    return await _threads.run(conn_id, func, *args)
