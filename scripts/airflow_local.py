"""`make airflow`: a local Airflow with the Deyel emulator and a ready `deyel_default` connection.

Airflow home in .airflow/ (SQLite, LocalExecutor, the example DAGs or the folders named with --dags,
`[core] test_connection = Enabled`), the emulator on a fixed loopback port (--emulator-port, 8765: a
connection made in the UI still points at it after a restart), api-server + scheduler + dag-processor
started as users run them.
Prints the UI address and the login, then runs until Ctrl-C (or SIGTERM) and stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deyel_provider.emulator import RunningEmulator
from deyel_provider.emulator.settings import EmulatorSettings
from scripts.deployment import ADMIN_USER, ROOT, Deployment

HOME = ROOT / ".airflow"
#: The emulator's port unless told otherwise: fixed, so connections typed into the UI survive a restart.
EMULATOR_PORT = 8765


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def admin_password(home: Path) -> str:
    """One password per .airflow/, so a restart keeps the login the browser remembers."""
    path = home / "admin-password"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="UI/API port (a free one if it is taken)")
    parser.add_argument("--records", type=int, default=1000, help="CRM_ACCOUNT instances in the emulator")
    parser.add_argument(
        "--dags",
        nargs="+",
        type=Path,
        default=[ROOT / "dags_examples"],
        metavar="FOLDER",
        help="DAG folders to serve (default: dags_examples/; several are copied into .airflow/dags)",
    )
    parser.add_argument(
        "--emulator-port",
        type=int,
        default=EMULATOR_PORT,
        help=f"the emulator's loopback port (default {EMULATOR_PORT}; 0: any free port)",
    )
    args = parser.parse_args(argv)
    for folder in args.dags:
        if not folder.is_dir():
            parser.error(f"--dags {folder}: no such folder")
    if args.emulator_port and not port_is_free(args.emulator_port):
        parser.error(
            f"--emulator-port {args.emulator_port} is taken: stop what uses it, or pick another "
            f"(make airflow EMULATOR_PORT=8766; 0 for any free port)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = options(argv)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    emulator = RunningEmulator(EmulatorSettings(records=args.records), port=args.emulator_port).start()
    settings = emulator.settings
    connection = {
        "conn_type": "deyel",
        "host": emulator.url,
        "login": settings.client_id,
        "password": settings.client_secret,
    }
    deployment = Deployment(
        home=HOME,
        api_port=args.port if port_is_free(args.port) else 0,
        dags_folders=[folder.resolve() for folder in args.dags],
        password=admin_password(HOME),
        env={"AIRFLOW_CONN_DEYEL_DEFAULT": json.dumps(connection)},
    )
    try:
        print(
            f"Starting Airflow in {HOME.relative_to(ROOT)}/ (first start migrates the database)...",
            flush=True,
        )
        deployment.start()
        print(
            "\n"
            f"  Airflow UI      {deployment.url}\n"
            f"  Login           {ADMIN_USER} / {deployment.password}\n"
            f"  Deyel emulator  {emulator.url}  ({args.records} CRM_ACCOUNT instances, "
            f"client {settings.client_id} / {settings.client_secret})\n"
            f"  Connection      deyel_default -> the emulator (environment variable)\n"
            f"  DAGs            {shown(deployment.dags_folder)}/\n"
            f"  Component logs  {(deployment.home / 'process-logs').relative_to(ROOT)}/\n"
            "\nCtrl-C stops everything.",
            flush=True,
        )
        while not stop.wait(1.0):
            deployment.check_alive()
    except RuntimeError as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 1
    finally:
        print("\nStopping Airflow and the emulator...", flush=True)
        deployment.stop()
        emulator.stop()
    return 0


def shown(path: Path) -> Path:
    """A path as short as it reads: relative to the repository when inside it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


if __name__ == "__main__":
    sys.exit(main())
