"""Small stand-in HTTP servers written apart from the emulator."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from deyel_provider.emulator.server import PORT_REUSE


class StandInServer(ThreadingHTTPServer):
    """A stand-in server on port 0 takes its port as the emulators do (``PortReuse``): in a test's round,
    one an earlier test's server had (the client's keys for its URL are cached), never one another server
    of this round has, so no stand-in and emulator of one test share a URL; the port is offered again once
    the server is closed."""

    _held: tuple[str, int] | None = None

    def server_bind(self) -> None:
        host, port = self.server_address[:2]
        while not port:
            claimed = PORT_REUSE.claim(host)
            self.server_address = (host, claimed)
            try:
                super().server_bind()
            except OSError:
                if not claimed:
                    raise
                PORT_REUSE.forget(host, claimed)  # another socket holds it now: the next one
                continue
            self._held = (host, self.server_address[1])
            PORT_REUSE.bound(*self._held)
            return
        super().server_bind()

    def server_close(self) -> None:
        super().server_close()
        if self._held is not None:
            PORT_REUSE.released(*self._held)
            self._held = None


@contextmanager
def recording_server(status: int = 401) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """Another host (another port is another origin) that records the headers it receives."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            body = b'{"errors": [{"message": "who are you", "attribute-name": ""}]}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = StandInServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
