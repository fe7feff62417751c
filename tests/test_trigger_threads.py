"""The triggers' threads are bounded and freed, and every request ends by its total deadline, against a
hostile stand-in server that trickles its answer one byte every 0.2 s for ever (issue 22, finding 4).

Threads are counted in this process, which runs the triggers' coroutines as a triggerer does. Wall time is
only bounded from above, with margins for a loaded 2-core machine (the deadline is 2 s; the checks allow
several times that), and a condition is polled, never slept on blindly.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from deyel_provider.exceptions import DeyelConfigError, DeyelConnectionError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.triggers import deyel as triggers_module
from deyel_provider.triggers.deyel import DeyelChangeTrigger, DeyelInstanceTrigger

DEADLINE = 2.0
#: How long a freed thread may take to end, measured from the moment it should be free (loaded machine).
MARGIN = 3 * DEADLINE
TRICKLE = 0.2
TOKEN = b'{"access_token": "stand-in-token-0123456789", "token_type": "Bearer", "expires_in": 3600}'


class TrickleServer:
    """Not the emulator: one thread running an asyncio server that answers the token POST at once (unless
    ``mode`` is ``token``) and every other request one byte every ``TRICKLE`` s, for ever: in its status
    line and headers (``headers``), or in the one chunk of a chunked body (``body``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.trickling = 0  # connections being trickled to right now
        self.requests = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="trickle-server", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the stand-in server did not start"
        self.url = f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                await reader.readexactly(length)
                self.requests += 1
                if head.startswith(b"POST") and self.mode != "token":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                        + str(len(TOKEN)).encode()
                        + b"\r\n\r\n"
                        + TOKEN
                    )
                    await writer.drain()
                    continue
                await self._trickle(writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # the server stops
            pass
        finally:
            writer.close()

    async def _trickle(self, writer: asyncio.StreamWriter) -> None:
        if self.mode == "body":
            # One chunk announced as 1 GB (no Content-Length the cap could refuse up front).
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3B9ACA00\r\n["
            )
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        self.trickling += 1
        try:
            while True:
                await writer.drain()
                await asyncio.sleep(TRICKLE)
                writer.write(b" " if self.mode == "body" else b"a")
        finally:
            self.trickling -= 1

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def trickle():
    servers: list[TrickleServer] = []

    def start(mode: str = "headers") -> TrickleServer:
        servers.append(TrickleServer(mode))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def trickled_conn(deyel_conn, server: TrickleServer, conn_id: str = "deyel_trickled") -> str:
    # One attempt: this measures the deadline of one request (the retry policy multiplies attempts). A
    # timeout (per read) far above the trickle's pace, and whose renewal budget (2 x timeout) is longer.
    return deyel_conn(
        conn_id, url=server.url, extra={"request_deadline": DEADLINE, "timeout": 5, "retry_attempts": 1}
    )


async def wait_for(condition, limit: float) -> float:
    """Seconds until ``condition()`` held (polled every 10 ms), or ``limit`` exceeded (an AssertionError)."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > limit:
            raise AssertionError(f"not within {limit:g} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - began


async def first_event(trigger, timeout: float = 60.0) -> dict:
    async def first() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(first(), timeout)


def test_made_up_connections_fail_typed_and_leave_no_thread():
    """1,000 made-up connection ids: each trigger fails at once with DeyelConfigError naming the
    connection, no more threads than the cap run meanwhile, and none is left afterwards."""
    cap = triggers_module.thread_cap()
    ids = [f"made_up_{n}" for n in range(1000)]

    async def scenario() -> tuple[list, int, int, float]:
        baseline = threading.active_count()
        peak = baseline

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, threading.active_count())
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        instance = [first_event(DeyelInstanceTrigger(form="F", deyel_conn_id=i)) for i in ids[:500]]
        change = [first_event(DeyelChangeTrigger(form="F", deyel_conn_id=i)) for i in ids[500:]]
        outcomes = await asyncio.gather(*instance, *change, return_exceptions=True)
        watcher.cancel()
        freed = await wait_for(lambda: threading.active_count() <= baseline, MARGIN)
        return outcomes, baseline, peak, freed

    outcomes, baseline, peak, _ = asyncio.run(scenario())
    events, raised = outcomes[:500], outcomes[500:]
    assert [e["error_class"] for e in events] == ["DeyelConfigError"] * 500
    assert all("does not exist" in e["detail"] and "made_up_" in e["detail"] for e in events)
    assert all(isinstance(e, DeyelConfigError) and "does not exist" in str(e) for e in raised)
    assert peak - baseline <= cap
    assert threading.active_count() <= baseline  # (a thread of an earlier test may have ended meanwhile)


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_a_request_to_a_trickling_server_ends_by_its_total_deadline(deyel_conn, trickle, mode):
    """One blocking GET: the server sends a byte every 0.2 s (well within the 1 s timeout per read), yet
    the request fails with DeyelConnectionError naming request_deadline once its 2 s are spent."""
    server = trickle(mode)
    hook = DeyelHook(trickled_conn(deyel_conn, server))
    outcome: list[BaseException] = []
    began = time.monotonic()

    def call() -> None:
        try:
            hook.request("GET", "/forms/F/instances")
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(DEADLINE + MARGIN)  # not for ever on the old code: the test fails instead of hanging
    elapsed = time.monotonic() - began
    assert not worker.is_alive(), f"the request was still running after {elapsed:.1f} s"
    assert len(outcome) == 1 and isinstance(outcome[0], DeyelConnectionError), outcome
    assert "request_deadline" in str(outcome[0])
    assert DEADLINE <= elapsed
    assert server.requests == 2  # the token POST, then the one trickled GET (no retry: one attempt)
    hook.close()


def test_a_token_request_to_a_trickling_server_ends_by_its_total_deadline(deyel_conn, trickle):
    server = trickle("token")
    hook = DeyelHook(trickled_conn(deyel_conn, server))
    outcome: list[BaseException] = []
    began = time.monotonic()

    def call() -> None:
        try:
            hook.get_token()
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(DEADLINE + MARGIN)
    elapsed = time.monotonic() - began
    assert not worker.is_alive(), f"the token request was still running after {elapsed:.1f} s"
    assert len(outcome) == 1 and isinstance(outcome[0], DeyelConnectionError), outcome
    assert "request_deadline" in str(outcome[0])


def test_cancelled_triggers_free_their_threads_against_a_trickling_server(deyel_conn, trickle, monkeypatch):
    """20 triggers on 5 connections wait on a server trickling bytes: at most the cap of threads run at
    once, and once the triggers are cancelled every thread is gone within the deadline plus a margin."""
    monkeypatch.setenv(triggers_module.THREADS_ENV, "6")
    server = trickle("headers")
    conns = [trickled_conn(deyel_conn, server, f"deyel_trickled_{n}") for n in range(5)]
    triggers = [
        DeyelInstanceTrigger(form="F", deyel_conn_id=conns[n % 5], poll_interval=0.01) for n in range(20)
    ]

    async def scenario() -> tuple[int, int, float]:
        baseline = threading.active_count()
        waiting = [asyncio.ensure_future(first_event(trigger)) for trigger in triggers]
        await wait_for(lambda: server.trickling >= 6, 30)
        busy = sum(thread.name.startswith("deyel-trigger") for thread in threading.enumerate())
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        freed = await wait_for(lambda: threading.active_count() <= baseline, DEADLINE + MARGIN)
        # Their sockets were cut, not left to the server: it trickles to nobody any more.
        await wait_for(lambda: server.trickling == 0, MARGIN)
        return baseline, busy, freed

    baseline, busy, freed = asyncio.run(scenario())
    assert busy == 6  # the cap (the other 14 polls queue)
    assert threading.active_count() <= baseline
    assert freed <= DEADLINE + MARGIN
