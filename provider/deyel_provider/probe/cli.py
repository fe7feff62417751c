"""The ``deyel-probe`` command: a connection's probe, printed as text or JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from deyel_provider.connection.fields import DEFAULTS
from deyel_provider.connection.settings import DeyelConfig
from deyel_provider.http.retry import RetryPolicy
from deyel_provider.probe.prober import Prober
from deyel_provider.probe.results import Candidates, ProbeResult

#: How long a whole probe may take by default (``--deadline``), in seconds.
DEFAULT_DEADLINE = 300.0
#: The longest ``--deadline`` (a year): what the timer holds on every platform.
MAX_DEADLINE = 365 * 86400
#: The exit code when the probe ran out of its ``--deadline``.
EXIT_DEADLINE = 4


def render(result: ProbeResult, config: DeyelConfig, current: dict[str, Any]) -> str:
    lines = [f"Probing connection {config.conn_id!r} ({config.base_url})"]
    lines += [f"  {f.level:<4}  {f.topic:<10}  {f.text}" for f in result.findings]
    lines.append(f"  ({result.token_posts} token POST, {result.gets} GETs, nothing written)")
    if result.ok and result.extras:
        changed = {k: v for k, v in result.extras.items() if current.get(k, DEFAULTS.get(k)) != v}
        lines += ["", "Extras to set on the connection (what this server does):", json.dumps(result.extras)]
        lines.append(
            f"Differs from the connection now: {json.dumps(changed)}"
            if changed
            else "The connection already says so: nothing to change."
        )
    elif not result.ok:
        lines += ["", "Diagnosis: see the FAIL lines above; nothing was changed."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deyel-probe",
        description="Find out, read-only, what a Deyel server does (token, API prefix, paging) and print the "
        "connection extras to set.",
    )
    parser.add_argument(
        "--conn-id", default="deyel_default", help="the deyel connection (default: %(default)s)"
    )
    parser.add_argument("--form", default="CRM_ACCOUNT", help="a form with at least 5 instances to list")
    parser.add_argument("--prefix", action="append", default=[], help="another API prefix to try")
    parser.add_argument("--page-param", action="append", default=[], help="another page parameter to try")
    parser.add_argument("--size-param", action="append", default=[], help="another page-size parameter")
    parser.add_argument("--offset-param", action="append", default=[], help="another offset parameter")
    parser.add_argument("--total-header", action="append", default=[], help="another count header")
    parser.add_argument(
        "--page-size", type=_positive_int, help="page size to check for a cap (default: the extra)"
    )
    parser.add_argument("--json", action="store_true", help="print the findings and extras as JSON")
    parser.add_argument(
        "--deadline",
        type=_positive_seconds,
        default=DEFAULT_DEADLINE,
        help=f"stop the whole probe after this many seconds, whatever the server does (default: "
        f"%(default)g); exit code {EXIT_DEADLINE}",
    )
    args = parser.parse_args(argv)
    # Exit codes: 0 ok, 1 a FAIL finding, 2 the connection could not be read, 3 an internal error,
    # 4 the --deadline passed, 130 interrupted (Ctrl-C).
    redact: list[Callable[[str], str]] = []  # the connection's redactor, once known
    with _stdout_is_stderr():
        try:
            with _run_deadline(args.deadline):
                code, report = _probe(args, redact)
        except _DeadlinePassed:
            said = (
                f"the probe did not finish within --deadline {args.deadline:g} s (the server answers too "
                f"slowly, or not at all); nothing was changed: raise --deadline, or check the server"
            )
            code, report = EXIT_DEADLINE, _failure(args, said)
        except KeyboardInterrupt:
            code, report = 130, _failure(args, "interrupted")
        except SystemExit as exc:  # Airflow's configuration code exits on what it cannot load
            said = f"Airflow exited while loading (exit code {exc.code!r})"
            code, report = 2, _failure(args, said, *redact)
        except Exception as exc:
            code, report = 3, _failure(args, f"internal error: {_describe(exc)}", *redact)
    if report:
        print(report)
    return code


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of instances")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_DEADLINE:
        raise argparse.ArgumentTypeError(
            f"{text} is not a number of seconds above 0 and at most {MAX_DEADLINE}"
        )
    return value


class _DeadlinePassed(BaseException):
    """The run's deadline passed. A ``BaseException``, as ``KeyboardInterrupt`` is: no ``except Exception``
    on the way (a probe step, requests, Airflow's connection lookup) may take it for a server's answer."""


@contextlib.contextmanager
def _run_deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`_DeadlinePassed` in this (the main) thread once ``seconds`` have passed, wherever it is
    waiting: a connect, a status line or a body trickled a byte at a time (each read within ``timeout``), a
    retry's sleep. Every request of the probe is so bounded by what remains of the run. A timer signal
    interrupts a blocking socket call, where a flag checked in a read loop would not be reached while the
    status line is still arriving."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("deyel-probe's deadline needs the main thread (it uses SIGALRM)")

    def expire(signum: int, frame: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        raise _DeadlinePassed

    # The caller's own timer (Airflow's execution_timeout is one) is put back afterwards, less the time spent.
    pending, interval = signal.getitimer(signal.ITIMER_REAL)
    began = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if pending > 0:  # due already: at once (a zero would cancel it)
            signal.setitimer(signal.ITIMER_REAL, max(pending - (time.monotonic() - began), 1e-6), interval)


def _describe(exc: BaseException) -> str:
    """``Type: message``, or the type alone when the exception cannot say what it is."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return f"{type(exc).__name__} (its message could not be formatted)"


def _failure(args: argparse.Namespace, message: str, *redact: Callable[[str], str]) -> str:
    """Say on stderr, in one line, why the probe could not run; with --json, say it on stdout too. It
    cannot raise: it runs where an error is already being reported."""
    try:
        message = " ".join(message.split())
        for redactor in redact:
            message = redactor(message)
    except Exception:
        message = "the error could not be formatted"  # not the unredacted text
    with contextlib.suppress(OSError, ValueError):
        print(f"deyel-probe: {message}", file=sys.stderr)
    return json.dumps({"ok": False, "error": message}) if args.json else ""


@contextlib.contextmanager
def _stdout_is_stderr() -> Iterator[None]:
    """While the probe works, what anything prints to stdout goes to stderr, so that the report (and
    ``--json``) is alone on stdout. Airflow logs there on some versions: connection lookups and the Fernet
    key warning (3.0), migration plugins through a stream its logging took at import (3.2). So the file
    descriptor itself is swapped, not only ``sys.stdout``."""
    streams = [s for s in (sys.stdout, sys.__stdout__) if s is not None]
    for stream in streams:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        try:
            for stream in streams:
                with contextlib.suppress(OSError, ValueError):  # a closed pipe must not keep fd 1 on stderr
                    stream.flush()  # what they hold was written while fd 1 was stderr
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _probe(args: argparse.Namespace, redact: list[Callable[[str], str]]) -> tuple[int, str]:
    from deyel_provider.auth.client import TokenClient
    from deyel_provider.auth.provider import mask_token
    from deyel_provider.hooks.deyel import DeyelHook

    # Airflow 3.0 logs each connection lookup to stdout: the report (and --json) must stay alone there.
    logging.getLogger("airflow.hooks.base").setLevel(logging.WARNING)
    from deyel_provider.http.redact import Redactor, basic_value

    hook = DeyelHook(deyel_conn_id=args.conn_id)
    try:
        conn = _connection(args.conn_id)
        # Until the connection is understood, its password and Basic value are what must not be shown.
        login, password = conn.login or "", conn.password or ""
        redact.append(Redactor((password, basic_value(login, password) if password else None)))
        # The hook reads the connection found here: outside a task the SDK sees no metadata database.
        hook.get_connection = lambda _conn_id: conn  # type: ignore[method-assign,assignment]
        config = hook.config
        current = conn.extra_dejson
    except Exception as exc:
        return 2, _failure(args, f"connection {args.conn_id!r}: {type(exc).__name__}: {exc}", *redact)
    redact.append(hook.redactor)
    session = hook._pooled_session()
    client = TokenClient(
        config,
        hook._pooled_session(),
        redact=hook.redactor,
        credential_key=hook.credential_key,
        retry=RetryPolicy(attempts=1),
    )

    def grant() -> Any:
        token = client.grant(remembered_refusals=False)
        mask_token(token, credential=hook.credential_key)
        hook.redactor.add(token.access_token)
        return token

    prober = Prober(
        config,
        session,
        form=args.form,
        grant=grant,
        redact=lambda text: hook.redactor(text),
        candidates=Candidates(
            prefixes=args.prefix,
            page_params=args.page_param,
            size_params=args.size_param,
            offset_params=args.offset_param,
            total_headers=args.total_header,
        ),
        page_size=args.page_size,
    )
    try:
        result = prober.run()
    finally:
        client.close()
        session.close()
    if args.json:
        report = {
            "ok": result.ok,
            "extras": result.extras if result.ok else {},
            "findings": [vars(f) for f in result.findings],
            "gets": result.gets,
            "token_posts": result.token_posts,
        }
        return (0 if result.ok else 1), json.dumps(report, indent=2)
    return (0 if result.ok else 1), render(result, config, current)


def _connection(conn_id: str) -> Any:
    """The connection from the Task SDK's sources (environment, secrets backends), else, as ``airflow
    connections get`` does, from the metadata database: a command line has no task context to ask it."""
    from deyel_provider.compat import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as not_found:
        try:
            from airflow.models.connection import Connection as StoredConnection

            return StoredConnection.get_connection_from_secrets(conn_id)
        except Exception:
            raise not_found from None
