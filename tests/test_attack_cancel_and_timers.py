"""Attacks on the round-3 bounds that came from reviewing them: a token equal to the secret, the probe's
timer beside its caller's, a cancelled trigger waiting out a Retry-After, the deadline over TLS-in-TLS.

Each test failed on the code before its fix (c59736e).
"""

from __future__ import annotations

import secrets
import signal
import time

from deyel_provider.auth.masking import mask_everywhere
from deyel_provider.auth.provider import mask_token
from deyel_provider.auth.token import DeyelToken
from tests.support.helpers import as_airflow_logs_it
from tests.support.servers import StandInServer


def test_a_token_equal_to_the_client_secret_does_not_unmask_the_secret_on_expiry():
    """A server answering the client secret (which it receives in the Basic header) as an access token with a
    short lifetime: once that token expires, the next registration removes its pattern from Airflow's
    masker, and that pattern is the client secret's (the hook registered it first): the client secret then
    prints in clear in every later log line of the process."""
    client_secret = "s3cr3t-" + secrets.token_urlsafe(16).replace("eyJ", "eyj")  # one pattern, as written
    mask_everywhere(client_secret)  # what DeyelHook does for the connection's password
    assert as_airflow_logs_it(f"secret {client_secret}") == "secret ***"
    now = time.time()
    mask_token(DeyelToken(client_secret, expires_at=now + 1, issued_at=now))
    later = now + 10
    mask_token(
        DeyelToken(secrets.token_urlsafe(24).replace("eyJ", "eyj"), expires_at=later + 3600, issued_at=later),
        now=later,
    )
    assert as_airflow_logs_it(f"secret {client_secret}") == "secret ***"


def test_the_probe_keeps_a_pending_alarm_of_its_caller():
    """deyel-probe's --deadline replaces SIGALRM's handler and restores it, but cancels the caller's timer
    (setitimer(0) in its finally): called inside a task (Airflow's execution_timeout is a SIGALRM timer) or
    any program with an alarm pending, the caller's timeout never fires."""
    from deyel_provider.probe.cli import main

    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    signal.setitimer(signal.ITIMER_REAL, 1000)
    try:
        assert main(["--conn-id", "review22_no_such_conn", "--deadline", "50"]) == 2
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert 900 < remaining <= 1000, remaining


def test_the_probe_refuses_a_deadline_its_timer_cannot_hold_as_a_usage_error(capsys):
    """--deadline 1e300 passes the argument check (positive, finite) and then fails setitimer with
    OverflowError: exit code 3, 'internal error', instead of argparse's usage error (exit 2)."""
    import pytest

    from deyel_provider.probe.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--conn-id", "review22_no_such_conn", "--deadline", "1e300"])
    assert exited.value.code == 2
    assert "--deadline" in capsys.readouterr().err


TOKEN_BODY = b'{"access_token": "review22-token-0123456789", "token_type": "Bearer", "expires_in": 3600}'


class _RetryAfterServer:
    """Not the emulator: answers the token POST, and every GET with 503 and ``Retry-After: 60``."""

    def __init__(self) -> None:
        import http.server
        import threading

        outer = self
        self.gets = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, *extra: tuple[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(200, TOKEN_BODY)

            def do_GET(self):
                outer.gets += 1
                self._send(503, b'{"errors": []}', ("Retry-After", "60"))

        self._server = StandInServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_a_cancelled_trigger_frees_its_thread_while_it_waits_a_retry_after(deyel_conn):
    """Finding 4 asks that a cancelled trigger free its thread within the deadline. Cancelling cuts the
    request in progress, but not the retry policy's sleep: a server answering 503 with Retry-After (honoured
    up to retry_after_max, 120 s by default) keeps the cancelled trigger's thread, and its share of the
    connection's slots, asleep for that long; only then does the next attempt see the cancellation."""
    import asyncio
    import threading

    from deyel_provider.triggers.deyel import DeyelInstanceTrigger

    server = _RetryAfterServer()
    conn_id = deyel_conn(
        "review22_retry_after",
        url=server.url,
        extra={"request_deadline": 2, "retry_attempts": 3, "retry_after_max": 120},
    )

    def trigger_threads() -> int:
        return sum(t.name.startswith("deyel-trigger") for t in threading.enumerate())

    async def scenario() -> float:
        trigger = DeyelInstanceTrigger(form="F", deyel_conn_id=conn_id, poll_interval=0.01)

        async def first() -> None:
            async for _ in trigger.run():
                return

        task = asyncio.ensure_future(first())
        began = time.monotonic()
        while server.gets < 1:  # the first GET was answered 503: the thread now sleeps its Retry-After
            assert time.monotonic() - began < 30, "the trigger made no request"
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        cancelled = time.monotonic()
        while trigger_threads():
            if time.monotonic() - cancelled > 10:
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - cancelled

    try:
        held = asyncio.run(scenario())
    finally:
        server.stop()
    assert held < 10, f"the cancelled trigger's thread was still asleep {held:.1f} s after the cancel"
    assert server.gets == 1


def test_the_deadline_cuts_a_tls_in_tls_connection():
    """Through an https:// proxy to an https origin, urllib3's connection socket is an SSLTransport (TLS in
    TLS), not a socket: the deadline's shutdown raised TypeError, swallowed, so neither the deadline nor a
    trigger's cancel cut such a request. Shown on the transport urllib3 builds, over a socket pair."""
    import socket
    from types import SimpleNamespace

    from urllib3.util.ssltransport import SSLTransport

    from deyel_provider.http.deadline import _shut

    ours, theirs = socket.socketpair()
    try:
        transport = object.__new__(SSLTransport)  # its handshake is not what is shown here
        transport.socket = ours
        _shut(SimpleNamespace(sock=transport))  # type: ignore[arg-type]
        ours.setblocking(False)
        assert ours.recv(1) == b""  # shut: a blocked read returns at once (else BlockingIOError)
    finally:
        ours.close()
        theirs.close()
