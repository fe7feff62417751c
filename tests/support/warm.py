"""Child Python processes without paying for Airflow's import in each of them: ``python -c CODE`` as a fork of
one process that imported the provider (and through it Airflow) once.

Importing Airflow costs a new interpreter more than a CPU second, most of what a short child does. The
children here come from a fork server (multiprocessing's ``forkserver``, one per test process, started on
first use): a single-threaded process that imported :data:`PRELOAD` and forks a child per request. Each child
is a process of its own (its pid, its memory, its process-local caches empty, no connection inherited: the
server opens none) that runs ``CODE`` as ``python -c`` would, with the given arguments, environment and
working folder (its output captured if asked). What a child finds already imported is what an Airflow task
process finds too (the task runner forks it from a process that imported Airflow); a child that must measure
its own imports or its whole peak memory keeps using ``subprocess``.

Not for code that relies on ``atexit`` (a multiprocessing child ends with ``os._exit`` once its non-daemon
threads are joined) or on the fork server's environment: each child's ``os.environ`` is replaced with the one
given (default: this process's now, as ``subprocess`` would pass it); of what a new interpreter reads at
start, ``MALLOC_ARENA_MAX`` alone is applied (through ``mallopt``), and, for a child started with
``airflow_settings=True``, what ``import airflow`` reads: the configuration file as it is now and, from the
child's environment, the metadata database (the fork server set both up when it started). Such a child keeps
the fork server's ``AIRFLOW_HOME``.
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

#: What the fork server imports once: the hook, and through it Airflow (its settings read the environment
#: then; the connection env vars a test sets later are read by each child when it asks for a connection).
PRELOAD = ["deyel_provider.hooks.deyel"]

#: glibc's mallopt parameter for MALLOC_ARENA_MAX (malloc.h).
_M_ARENA_MAX = -8

_CONTEXT = multiprocessing.get_context("forkserver")
#: The process that started the fork server (None: not started): a process forked from it later inherits
#: the server's pid and this module's exit handler, and must not stop its parent's server.
_owner: int | None = None


def _context() -> multiprocessing.context.ForkServerContext:
    global _owner
    if _owner is None:
        _CONTEXT.set_forkserver_preload(PRELOAD)
        # Stopped (and reaped) when the test process ends, so its CPU and its children's count in the
        # parent's resource usage (``/usr/bin/time``) as the subprocesses' did.
        atexit.register(stop_fork_server)
        _owner = os.getpid()
    return _CONTEXT


def stop_fork_server() -> None:
    """The fork server this process started (if any) killed, then reaped, after any child of it a test left
    running (killed and joined, as the interpreter's shutdown would have joined it): asked to stop, the
    server ran the interpreter's whole shutdown of everything it imported (1.5 s on a loaded machine), at
    the end of the suite, while pytest waited for its workers to exit."""
    from multiprocessing import forkserver

    if _owner != os.getpid():
        return
    for child in multiprocessing.active_children():
        child.kill()
        child.join(5)
    server = forkserver._forkserver  # type: ignore[attr-defined]
    if server._forkserver_pid is not None:
        os.kill(server._forkserver_pid, signal.SIGKILL)
    server._stop()  # closes its pipe, reaps it, removes its socket


def _output_file(name: str) -> str:
    fd, path = tempfile.mkstemp(prefix=f"warm-child-{name}-")
    os.close(fd)
    return path


def _airflow_settings_from_env() -> None:
    """In the child: what ``import airflow`` in a new interpreter reads when it starts, as things stand now
    rather than as the fork server found them: the configuration file (an earlier ``airflow`` command may
    have written it since, with a new Fernet key the connections it stored are encrypted with), then, from
    this environment, the metadata database (``settings``: its URL, the engine and sessions). The server
    opened no connection (SQLAlchemy connects on first use), so there is none to close."""
    from airflow import configuration, settings
    from airflow.models import crypto

    if configuration.get_airflow_home() != configuration.AIRFLOW_HOME:
        raise RuntimeError("a warm child keeps the fork server's AIRFLOW_HOME: use a subprocess to move it")
    configuration.conf.read(configuration.AIRFLOW_CONFIG)
    if invalidate := getattr(configuration.conf, "invalidate_cache", None):
        invalidate()
    if cache_clear := getattr(crypto.get_fernet, "cache_clear", None):
        cache_clear()
    elif hasattr(crypto, "_fernet"):  # Airflow 3.0/3.1 keep the loaded key in a module global
        crypto._fernet = None
    settings.dispose_orm(do_log=False)
    settings.configure_vars()
    settings.configure_adapters()
    settings.configure_orm()
    configuration.conf.mask_secrets()


def _run(
    code: str,
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: str | None,
    outputs: tuple[str, str] | None,
    airflow_settings: bool = False,
) -> None:
    """In the child: ``python -c code *args`` (run by multiprocessing: an exception prints its traceback
    and exits 1, ``SystemExit`` exits with its code). Without ``outputs`` it writes where the fork server
    does (the test process's standard output and error)."""
    os.environ.clear()
    os.environ.update(env)
    if "MALLOC_ARENA_MAX" in env:
        # glibc reads it when a process starts, so a forked child sets it itself (before any thread).
        if not ctypes.CDLL(None).mallopt(_M_ARENA_MAX, int(env["MALLOC_ARENA_MAX"])):
            raise OSError("mallopt(M_ARENA_MAX) failed")
    if airflow_settings:
        _airflow_settings_from_env()
    if cwd is not None:
        os.chdir(cwd)
    for fd, path in zip((1, 2), outputs or (), strict=False):
        target = os.open(path, os.O_WRONLY)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["-c", *args]
    exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102 (what python -c does)


class WarmProcess:
    """A started child, with the part of ``subprocess.Popen``'s interface the tests use (``pid``,
    ``poll``, ``wait``, ``kill``, ``returncode``: negative for a signal, as Popen's) and, with ``capture``,
    its output (``stdout``, ``stderr``: the text written so far; ``close`` removes it). With
    ``airflow_settings``, Airflow's configuration file and database settings are read again in the child."""

    def __init__(
        self,
        code: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        capture: bool = False,
        airflow_settings: bool = False,
    ) -> None:
        self.args = [sys.executable, "-c", code, *args]
        self._outputs: tuple[str, str] | None = None
        if capture:
            self._outputs = (_output_file("stdout"), _output_file("stderr"))
        self._process = _context().Process(
            target=_run,
            args=(
                code,
                list(args),
                dict(os.environ if env is None else env),
                None if cwd is None else str(cwd),
                self._outputs,
                airflow_settings,
            ),
            daemon=False,
        )
        self._process.start()
        self.pid: int = self._process.pid  # type: ignore[assignment]

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self._process.exitcode

    def kill(self) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, signal.SIGKILL)

    @property
    def stdout(self) -> str:
        assert self._outputs is not None, "started without capture=True"
        return Path(self._outputs[0]).read_text(errors="replace")

    @property
    def stderr(self) -> str:
        assert self._outputs is not None, "started without capture=True"
        return Path(self._outputs[1]).read_text(errors="replace")

    def close(self) -> None:
        """Kill the child if it still runs, reap it, and remove its captured output."""
        if self._process.exitcode is None:
            self.kill()
            self._process.join()
        self._process.close()
        for path in self._outputs or ():
            os.unlink(path)


def run_python(
    code: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    check: bool = False,
    airflow_settings: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, ...)`` in a
    warm child: raises ``subprocess.TimeoutExpired`` (the child killed) or, with ``check``,
    ``subprocess.CalledProcessError`` as ``subprocess.run`` does. ``airflow_settings``: see
    :class:`WarmProcess`."""
    child = WarmProcess(code, args, env=env, cwd=cwd, capture=True, airflow_settings=airflow_settings)
    try:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise subprocess.TimeoutExpired(child.args, timeout or 0, child.stdout, child.stderr) from None
        done = subprocess.CompletedProcess(child.args, child.wait(), child.stdout, child.stderr)
    finally:
        child.close()
    if check:
        done.check_returncode()
    return done
