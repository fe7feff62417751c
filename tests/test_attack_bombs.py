"""A hostile server's memory and CPU bombs: gzip bombs in 401 and redirect bodies and nested encodings (with
the real urllib3 decoder), a quadratic-regex body, and a server that trickles its answer to hold the Test
button. Memory is measured with tracemalloc; time is bounded by a generous timeout, never asserted."""

from __future__ import annotations

import gzip
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from deyel_provider.exceptions import DeyelBadResponseError
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.memory import peak_memory

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = "/forms/CRM_ACCOUNT/instances/1"
CAP = 1024 * 1024
#: 256 MiB of zeros: about 250 KiB as gzip, a few KiB as gzip-in-gzip.
BOMB_SIZE = 256 * 1024 * 1024
#: Peak traced memory allowed while a bomb is handled under a 1 MiB cap (the bomb itself is 256 MiB).
PEAK_LIMIT = 48 * 1024 * 1024


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    return gzip.compress(b"\0" * BOMB_SIZE, compresslevel=9)


def test_a_gzip_bomb_in_a_401_body_is_not_inflated(emulator, deyel_conn, gzip_bomb):
    deyel_conn(extra={"max_response_bytes": CAP})
    hook = DeyelHook()
    hook.get_token()
    emulator.set_faults(
        [
            {
                "route": "data",
                "action": "status",
                "status": 401,
                "count": 1,
                "raw_body": gzip_bomb,
                "headers": {"Content-Encoding": "gzip"},
            }
        ]
    )
    with peak_memory() as peak:
        assert hook.request("GET", INSTANCE).json()["idObjectValue"] == "1"  # renewed and replayed
    assert peak[0] < PEAK_LIMIT, peak
    assert emulator.stats()["token_requests"] == 2


def test_a_gzip_bomb_in_a_redirect_body_is_not_inflated(emulator, deyel_conn, gzip_bomb):
    deyel_conn(extra={"max_response_bytes": CAP})
    hook = DeyelHook()
    hook.get_token()
    emulator.set_faults(
        [
            {
                "route": "data",
                "action": "status",
                "status": 302,
                "count": 1,
                "raw_body": gzip_bomb,
                "headers": {"Content-Encoding": "gzip", "Location": emulator.url + INSTANCE},
            }
        ]
    )
    with peak_memory() as peak:
        assert hook.request("GET", INSTANCE).json()["idObjectValue"] == "1"
    assert peak[0] < PEAK_LIMIT, peak


@pytest.mark.parametrize("status", [302, 399])
def test_a_redirect_that_is_not_followed_is_read_capped_even_when_streaming(
    emulator, deyel_conn, gzip_bomb, status
):
    """``stream=True`` leaves a success's body to the caller, never the body of a 3xx it gets an error for."""
    deyel_conn(extra={"max_response_bytes": CAP})
    hook = DeyelHook()
    hook.get_token()
    emulator.set_faults(
        [
            {
                "route": "data",
                "action": "status",
                "status": status,
                "raw_body": gzip_bomb,
                "headers": {"Content-Encoding": "gzip", "Location": "http://elsewhere.invalid/x"},
            }
        ]
    )
    with peak_memory() as peak, pytest.raises(DeyelBadResponseError):
        hook.request("GET", INSTANCE, stream=True)
    assert peak[0] < PEAK_LIMIT, peak


@pytest.mark.parametrize("route", ["data", "token"])
def test_nested_gzip_is_capped_as_it_is_decoded(emulator, deyel_conn, gzip_bomb, route):
    """gzip in gzip: urllib3 before 2.6 inflated the inner layer whole whatever was asked for."""
    deyel_conn(extra={"max_response_bytes": CAP})
    hook = DeyelHook()
    if route == "data":
        hook.get_token()
    nested = gzip.compress(gzip_bomb, compresslevel=9)
    assert len(nested) < 16 * 1024
    emulator.set_faults(
        [
            {
                "route": route,
                "action": "status",
                "status": 200,
                "raw_body": nested,
                "headers": {"Content-Encoding": "gzip, gzip", "Transfer-Encoding": "chunked"},
            }
        ]
    )
    with peak_memory() as peak, pytest.raises(DeyelBadResponseError, match="larger, over the 1048576 bytes"):
        hook.request("GET", INSTANCE) if route == "data" else hook.get_token()
    assert peak[0] < PEAK_LIMIT, peak


def test_dependency_floors_exclude_unbounded_decoders_and_link_following_locks():
    """urllib3 2.6.0 bounds what its decoders inflate (GHSA-2xpw-w6gg-jr37, GHSA-gm62-xv2j-4w53) and 2.6.3
    redirect bodies (CVE-2026-21441); filelock 3.20.1 opens its lock file with O_NOFOLLOW (CVE-2025-68146),
    3.20.3 its soft lock too (CVE-2026-22701)."""
    project = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0]
    declared = re.findall(r'^\s*"([A-Za-z0-9_.-]+>=[^"]+)",', project, re.MULTILINE)
    floors = {}
    for line in declared:
        requirement = Requirement(line)
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if lower:
            floors[requirement.name] = lower[0]
    assert floors.get("urllib3", Version("0")) >= Version("2.6.3")
    assert floors.get("filelock", Version("0")) >= Version("3.20.3")
    pins = dict(
        re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    )
    for name in ("urllib3", "filelock"):
        assert Version(pins[name]) >= floors[name], name  # the tested versions satisfy the floors


def _run_python(code: str, timeout: float) -> subprocess.CompletedProcess[str] | None:
    """Run ``code`` in a fresh interpreter (a regex holds the GIL: a thread could not be abandoned); None
    when it did not finish within ``timeout`` seconds."""
    try:
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=True
        )
    except subprocess.TimeoutExpired:
        return None


def test_the_error_cleanup_is_linear_on_a_million_angle_brackets():
    code = "from deyel_provider.http.error_bodies import parse_errors\nprint(parse_errors('<' * (1 << 20)))\n"
    done = _run_python(code, timeout=60)  # the old regex: about 10 minutes
    assert done is not None, "cleaning 1 MiB of '<' did not finish within 60 s"
    assert done.stdout.strip() == repr(([], "<" * 300 + "..."))


def test_the_test_button_makes_one_attempt_on_a_redos_body(emulator, deyel_conn):
    deyel_conn(extra={"timeout": 5})
    emulator.set_faults([{"route": "token", "action": "status", "status": 500, "raw_body": "<" * (1 << 20)}])
    code = "from deyel_provider.hooks.deyel import DeyelHook\nprint(DeyelHook().test_connection())\n"
    done = _run_python(code, timeout=5 + 3 + 60)  # the connection's env var is inherited
    assert done is not None, "the Test button did not answer"
    answer = done.stdout.splitlines()[-1]  # after any warning Airflow prints when it starts (3.0 does)
    assert answer.startswith("(False, ") and "server error" in answer
    assert emulator.stats()["token_requests"] == 1  # no retry policy behind the button


def _finishes(call, timeout: float) -> list[object]:
    """Run ``call`` in a thread; return its result (in a list) if it finished within ``timeout`` seconds."""
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(timeout)
    return result


@contextmanager
def trickling_server() -> Iterator[str]:
    """Answers 200 with a huge announced body and then sends one byte at a time, each well within any read
    timeout: only a total deadline stops a client."""
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                )
                while not stop.wait(0.1):
                    try:
                        conn.sendall(b" ")
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def test_the_test_button_gives_up_naming_a_time_limit_against_a_trickling_server(deyel_conn):
    """A server trickling one byte at a time: the Test button answers "not connected" and says which time
    limit stopped it. What is proven is that a deadline (not a read timeout, which the trickle defeats) ends
    the attempt; how long it took is not measured (no wall-clock assertion): the thread join below only
    keeps a hang from hanging the suite."""
    with trickling_server() as url:
        deyel_conn(url=url, extra={"timeout": 0.5})
        done = _finishes(DeyelHook().test_connection, timeout=0.5 + 3 + 20)
        assert done, "the Test button did not answer"
        ok, message = done[0]  # type: ignore[misc]
        assert not ok
        # The Test button's budget (timeout + 3 s), or the request's own deadline (4 x timeout) first.
        assert "within 3.5 s" in message or "time allowed ran out" in message or "within 2 s" in message
