"""Running the emulator with uvicorn in a background thread, and its in-process control API."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from deyel_provider.emulator.app import create_app
from deyel_provider.emulator.settings import EmulatorSettings
from deyel_provider.emulator.state import EmulatorState


class RunningEmulator:
    """An emulator served on a local port; use :func:`run_emulator` unless you manage its lifetime."""

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        allow_remote: bool = False,
        control_token: str | None = None,
    ) -> None:
        """:param ssl_certfile: serve https with this PEM certificate (and ``ssl_keyfile``, its key).
        :param allow_remote: accept a ``host`` other hosts can reach (not loopback): the control routes,
            which hand out the client secret and change the server's behaviour, then require the control
            token (:attr:`control_token`).
        :param control_token: the control token (default: a random one when ``allow_remote``; else none,
            the control routes being open to the loopback clients alone that can reach them).

        :raises ValueError: ``host`` is not loopback and ``allow_remote`` is not set.
        """
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"refusing to listen on {host!r}: other hosts could reach the emulator, whose control routes "
                f"hand out its client secret; listen on 127.0.0.1, or pass --allow-remote (allow_remote=True)"
            )
        if allow_remote and control_token is None:
            control_token = secrets.token_urlsafe(32)
        #: What the control routes require in the ``X-Emulator-Token`` header (None: nothing).
        self.control_token = control_token
        self.settings = settings or EmulatorSettings()
        self._app = create_app(self.settings, control_token=control_token)
        self._state: EmulatorState = self._app.state.emulator
        self._host = host
        self._port = port
        # uvloop's TLS transport leaks a ResourceWarning for every client that aborts the handshake (a client
        # that refuses the certificate): the standard asyncio loop closes those cleanly.
        self._ssl: dict[str, Any] = (
            {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile, "loop": "asyncio"}
            if ssl_certfile
            else {}
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._bound_port = 0
        self.url = ""

    # -- lifetime --------------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> RunningEmulator:
        self._state.holds.open()
        # Bind here, not in uvicorn, so the real port of port=0 is known before the server thread starts.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = self._listening_socket(family)
        port = sock.getsockname()[1]
        self._bound_port = port
        host = f"[{self._host}]" if family == socket.AF_INET6 else self._host
        self.url = f"{'https' if self._ssl else 'http'}://{host}:{port}"
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # No websockets served: importing an implementation only warns (websockets.legacy in some pairs).
            ws="none",
            timeout_graceful_shutdown=5,
            # The middleware sends Date itself, from the emulator's clock (see date_offset_ms).
            date_header=False,
            **self._ssl,
        )
        self._server = uvicorn.Server(config)

        def serve() -> None:
            try:
                assert self._server is not None
                self._server.run(sockets=[sock])
            except BaseException as exc:  # reported by start() or stop(), never lost in the thread
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name=f"deyel-emulator-{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Deyel emulator did not start: {self._error!r}")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._state.clock.retire()
        self._state.holds.release()  # requests held by delay rules answer now, not after the grace period
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():  # else its socket may still listen: the port is not free
                PORT_REUSE.released(self._host, self._bound_port)
            self._thread = None

    def _listening_socket(self, family: int) -> socket.socket:
        """A socket listening on ``port``; for port 0, on a port an earlier round's emulator had when
        :data:`PORT_REUSE` offers one that is free, else on one the system picks."""
        while True:
            port = self._port or PORT_REUSE.claim(self._host)
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self._host, port))
                sock.listen(2048)
                sock.setblocking(False)
            except OSError:
                sock.close()
                if port and not self._port:
                    PORT_REUSE.forget(self._host, port)  # another socket holds it now: the next one
                    continue
                raise
            if not self._port:
                PORT_REUSE.bound(self._host, sock.getsockname()[1])
            return sock

    def __enter__(self) -> RunningEmulator:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- control ---------------------------------------------------------------------------------------------

    @property
    def state(self) -> EmulatorState:
        return self._state

    def stats(self) -> dict[str, Any]:
        return self._state.stats_snapshot()

    def methods(self) -> dict[str, int]:
        """Data requests per HTTP method since the last reset (``/_emulator/stats/methods``)."""
        return self._state.stats.methods()

    def reset(self) -> None:
        """Zero the counters; data, tokens and fault rules stay."""
        self._state.stats.reset()

    def revoke(self, token: str | None = None) -> int:
        """Revoke one access (or refresh) token, or every access token issued so far."""
        return self._state.tokens.revoke(token)

    def set_faults(self, rules: list[dict[str, Any]]) -> None:
        self._state.faults.set_rules(rules)

    def clear_faults(self) -> None:
        self._state.faults.clear()

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock (dtLastUpdate stamps and the Date header) forward: time passes for
        the server without the test waiting."""
        self._state.clock.advance(seconds)

    def set_writer(self, edits: float = 0.0, inserts: float = 0.0, deletes: float = 0.0) -> None:
        """Change the concurrent writer's rates (edits, inserts, deletes per listing request)."""
        self._state.writer.set_rates(edits, inserts, deletes)

    def mutations(self) -> list[dict[str, Any]]:
        """What the concurrent writer (``writer_*`` settings) did: kind, id, dtLastUpdate before and after."""
        return self._state.writer.log()

    def issued_tokens(self) -> dict[str, list[str]]:
        """Every access and refresh token handed out, for tests that scan logs for leaks."""
        return self._state.issued_tokens()


class PortReuse:
    """Ports that emulators asking for any free port (``port=0``) take again, from one round to the next.

    A client derives its keys from the client secret and the token URL, port included (the provider's
    scrypt: about 50 ms of CPU, cached per process for the last few URLs). A test suite that starts an
    emulator per test, or per property example, paid it again for each one, on a port the system picked;
    an emulator that takes a port an earlier test's emulator had finds it cached. The ports offered are the
    last few bound, the most recent first: those whose keys the client's cache still holds.

    Off until :meth:`rounds` opens a round (a test): other users get the system's ports, as before. A port
    is offered again only in a later round, so that within a round every emulator has a URL of its own (a
    token a client cached for one is never sent to another); between rounds, emptying the clients' token
    caches is the caller's part. Ports held by running emulators or other sockets are skipped.
    """

    #: Ports remembered per process: as many as the client's key cache holds with room to spare (64 keys,
    #: up to 3 per URL).
    LIMIT = 16

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = False
        self._known: list[tuple[str, int]] = []  # the last bound, the most recent last
        self._taken: set[tuple[str, int]] = set()  # bound during this round, or still running
        self._running: set[tuple[str, int]] = set()

    @contextmanager
    def rounds(self) -> Iterator[None]:
        """One round: the ports of earlier rounds' stopped emulators are offered again until it ends."""
        with self._lock:
            self._open = True
            self._taken = set(self._running)
        try:
            yield
        finally:
            with self._lock:
                self._open = False

    def next_round(self) -> None:
        """Inside an open round, begin the next one: the ports earlier emulators took are offered again (the
        examples of a property test, each a test of its own, whose caller empties the clients' caches)."""
        with self._lock:
            if self._open:
                self._taken = set(self._running)

    def claim(self, host: str) -> int:
        """A port to try for a new emulator on ``host``; 0 (the system picks one) when none is offered."""
        with self._lock:
            if self._open:
                for known in reversed(self._known):
                    if known[0] == host and known not in self._taken:
                        self._taken.add(known)
                        return known[1]
            return 0

    def bound(self, host: str, port: int) -> None:
        with self._lock:
            self._running.add((host, port))
            self._taken.add((host, port))
            if self._open:
                if (host, port) in self._known:
                    self._known.remove((host, port))
                self._known.append((host, port))
                del self._known[: -self.LIMIT]

    def released(self, host: str, port: int) -> None:
        with self._lock:
            self._running.discard((host, port))

    def forget(self, host: str, port: int) -> None:
        with self._lock:
            if (host, port) in self._known:
                self._known.remove((host, port))


#: The process's port reuse for emulators (see :class:`PortReuse`): the test suite opens a round per test.
PORT_REUSE = PortReuse()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) is reachable from this machine alone."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name: it may resolve to anything


@contextmanager
def run_emulator(
    settings: EmulatorSettings | None = None,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    **overrides: Any,
) -> Iterator[RunningEmulator]:
    """Serve an emulator on 127.0.0.1 (a free port) for the duration of the ``with`` block.

    :param ssl_certfile: serve https with this PEM certificate (and ``ssl_keyfile``, its private key).
    """
    settings = (settings or EmulatorSettings()).replace(**overrides) if overrides else settings
    emulator = RunningEmulator(settings, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile).start()
    try:
        yield emulator
    finally:
        emulator.stop()
