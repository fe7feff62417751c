"""`make airflow`: a local Airflow with the Deyel emulator and a ready `deyel_default` connection.

Airflow home in .airflow/ (SQLite, LocalExecutor, the example DAGs, `[core] test_connection = Enabled`),
the emulator on a free loopback port, api-server + scheduler + dag-processor started as users run them.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="UI/API port (a free one if it is taken)")
    parser.add_argument("--records", type=int, default=1000, help="CRM_ACCOUNT instances in the emulator")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    emulator = RunningEmulator(EmulatorSettings(records=args.records)).start()
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
            f"  DAGs            {deployment.dags_folder.relative_to(ROOT)}/\n"
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


if __name__ == "__main__":
    sys.exit(main())
