"""Command line: ``deyel-emulator`` / ``python -m deyel_provider.emulator``.

The first line of stdout is the base URL, printed once the server accepts connections, so scripts can read it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from deyel_provider.emulator.middleware import CONTROL_TOKEN_HEADER
from deyel_provider.emulator.server import RunningEmulator, is_loopback
from deyel_provider.emulator.settings import (
    DATE_FORMAT_CHOICES,
    LINK_STYLE_CHOICES,
    LIST_ORDER_CHOICES,
    PAGING_CHOICES,
    UNAUTHORIZED_STYLE_CHOICES,
    UPDATED_ORDER_CHOICES,
    UPDATED_UNIT_CHOICES,
    VERSION_CHOICES,
    EmulatorSettings,
)

_CHOICES = {
    "paging": PAGING_CHOICES,
    "version": VERSION_CHOICES,
    "unauthorized_style": UNAUTHORIZED_STYLE_CHOICES,
    "date_format": DATE_FORMAT_CHOICES,
    "rate_limit_status": (403, 429),
    "updated_order": UPDATED_ORDER_CHOICES,
    "list_order": LIST_ORDER_CHOICES,
    "link_style": LINK_STYLE_CHOICES,
    "updated_unit": UPDATED_UNIT_CHOICES,
}


#: The control token of an emulator started with --allow-remote (unset: a random one, written to a file).
CONTROL_TOKEN_ENV = "DEYEL_EMULATOR_CONTROL_TOKEN"


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError("expected true or false")


def _user(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected NAME:PASSWORD")
    return name, password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deyel-emulator", description="Serve a local Deyel REST API emulator."
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="where to listen (default: %(default)s); not loopback: --allow-remote",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other machines can reach; the control routes then require a control token "
        f"(${CONTROL_TOKEN_ENV}, else a random one written to a file only you can read)",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--ssl-certfile", help="serve https with this PEM certificate")
    parser.add_argument("--ssl-keyfile", help="the certificate's PEM private key")
    parser.add_argument(
        "--user",
        dest="users",
        action="append",
        type=_user,
        metavar="NAME:PASSWORD",
        help="a resource-owner account for grant_type=password (repeatable; replaces the default JPerez)",
    )
    # Every other setting gets a flag named after its field, so the CLI and the dataclass cannot drift apart.
    for f in dataclasses.fields(EmulatorSettings):
        if f.name == "users":
            continue
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        kind: Any = type(default) if default is not None else int
        if f.name == "latency_ms" or isinstance(default, float):
            kind = float
        if isinstance(default, bool):
            kind = _boolean
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": f"default: {default}"}
        if f.name in _CHOICES:
            kwargs["choices"] = _CHOICES[f.name]
        parser.add_argument(flag, type=kind, **kwargs)
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(EmulatorSettings)
        if f.name != "users" and getattr(args, f.name) is not None
    }
    if args.users:
        overrides["users"] = dict(args.users)
    return EmulatorSettings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"deyel-emulator: {exc}", file=sys.stderr)
        return 2
    if not args.allow_remote and not is_loopback(args.host):
        print(
            f"deyel-emulator: refusing to listen on {args.host}: other machines could reach the emulator, "
            f"whose control routes hand out its client secret and change what it does. Use --host "
            f"127.0.0.1, or pass --allow-remote (the control routes then require a token).",
            file=sys.stderr,
        )
        return 2
    control_token = (os.environ.get(CONTROL_TOKEN_ENV) or None) if args.allow_remote else None
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    emulator = RunningEmulator(
        settings,
        host=args.host,
        port=args.port,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        allow_remote=args.allow_remote,
        control_token=control_token,
    ).start()
    try:
        if args.allow_remote:
            _warn_remote(args.host, emulator.control_token or "", written=control_token is None)
        print(emulator.url, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


def _warn_remote(host: str, token: str, *, written: bool) -> None:
    """Say loudly, on stderr, that the emulator is reachable from elsewhere, and where its control token is
    (never the token itself: stderr may be a shared log)."""
    if written:
        folder = Path(tempfile.mkdtemp(prefix="deyel-emulator-"))  # 0700, this user's
        where = folder / "control-token"
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token)
        source = f"the token is in {where} (readable by you alone)"
    else:
        source = f"the token is ${CONTROL_TOKEN_ENV}"
    print(
        f"deyel-emulator: WARNING: --allow-remote: listening on {host}, reachable from other machines. The "
        f"emulator is a test server: its data, tokens and client secret are not protected. Its control "
        f"routes (/_emulator/...) answer only requests with the {CONTROL_TOKEN_HEADER} header; {source}.",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
