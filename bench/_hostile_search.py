"""Issue 22, finding 2: what a key search costs against a server that pages without end.

The server (this process) answers every listing page with new instances all holding the first key asked;
a child process loads ``--records`` records through a provider tree (``--provider``, e.g. main's) and is
stopped after ``--seconds``. Prints one JSON line: requests served, the child's peak RSS (VmHWM), how it
ended (its last line: the error it raised, or "killed").

    python -m bench._hostile_search --provider provider --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

CHILD = """
import sys
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.load.upsert import load_records as upsert
records = [{"cdCustomer": f"K{i}", "dsName": "x"} for i in range(int(sys.argv[1]))]
try:
    upsert(DeyelHook(), "ERP_CUSTOMER", records, "cdCustomer", key_type="text")
    print("ended: no error", flush=True)
except Exception as exc:
    print(f"ended: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
"""


class Endless(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.listings = 0
        self.instances = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: Endless

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._json({"access_token": "t" * 40, "token_type": "Bearer", "expires_in": 3600})

    def do_GET(self) -> None:
        query = dict(parse_qsl(urlsplit(self.path).query))
        first = query.get("search", "").partition(":")[2].split(";")[0]
        size = int(query.get("pageSize", 100))
        with self.server.lock:
            start = self.server.instances
            self.server.instances += size
            self.server.listings += 1
        self._json([{"idObjectValue": start + n, "cdCustomer": first, "dsName": "x"} for n in range(size)])


def peak_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", required=True, help="the provider tree to load through (its folder)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--records", type=int, default=100)
    args = parser.parse_args()
    server = Endless()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    conn = {"conn_type": "deyel", "host": url, "login": "a", "password": "b", "extra": {"cache": "memory"}}
    env = {
        **os.environ,
        "PYTHONPATH": os.path.abspath(args.provider),
        "AIRFLOW_CONN_DEYEL_DEFAULT": json.dumps(conn),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(args.records)], env=env, stdout=subprocess.PIPE, text=True
    )
    started = time.monotonic()
    peak = 0.0
    while child.poll() is None and time.monotonic() - started < args.seconds:
        peak = max(peak, peak_rss_mb(child.pid))
        time.sleep(0.2)
    if child.poll() is None:
        child.kill()
        ended = "killed after the time limit, still searching"
    else:
        ended = (child.stdout.read() if child.stdout else "").strip().splitlines()[-1]
    child.wait()
    print(
        json.dumps(
            {
                "provider": args.provider,
                "seconds": round(time.monotonic() - started, 1),
                "requests": server.listings,
                "instances_sent": server.instances,
                "peak_rss_mb": round(peak, 1),
                "ended": ended,
            }
        )
    )
    server.shutdown()


if __name__ == "__main__":
    main()
