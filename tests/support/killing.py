"""Killing a child process with SIGKILL at a chosen moment, as the OOM killer or a lost worker would: no
``except``, no ``finally`` runs in it, only what it wrote as it went remains."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def sigkilled(child: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """SIGKILL ``child`` when the block ends (and check that the kill is what ended it); reap it whatever
    happens, so a failing test leaves no process behind."""
    try:
        yield child
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, f"the child ended on its own (exit {child.returncode})"


def wait_until(child: subprocess.Popen, ready: Callable[[], object], what: str, guard: float = 120.0) -> None:
    """Wait for an event the child causes (``ready()`` true: the emulator has its held request, a marker
    file...). Fails if the child ends first; ``guard`` seconds only stop a hang, no assertion depends on the
    time."""
    deadline = time.monotonic() + guard
    while not ready():
        assert child.poll() is None, f"the child ended on its own (exit {child.returncode}) before {what}"
        assert time.monotonic() < deadline, f"the child never reached {what}"
        time.sleep(0.01)
