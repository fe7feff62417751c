"""`make demo`: run the example DAGs against a local Deyel emulator with `airflow dags test`.

Sets up a throw-away Airflow home in .demo/ (SQLite, migrated), starts the emulator on a free loopback port,
points AIRFLOW_CONN_DEYEL_DEFAULT at it, runs each demo DAG, prints what was fetched and the emulator's
request counters, and stops the emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
# (dag id, logical date or None). The daily extraction's run at 2026-01-02 covers 2026-01-01, the day the
# emulator's instances were last updated; the consumer then reads the file that run's Asset event names.
DAGS: list[tuple[str, str | None]] = [
    ("deyel_api_call", None),
    ("deyel_extract_daily", "2026-01-02"),
    ("deyel_extract_consumer", None),
]
EXTRACT_FILE = Path("CRM_ACCOUNT") / "2026-01-01.jsonl"
RECORDS = 1000
# Lines the example DAGs log about what they fetched; the demo echoes them.
REPORT_MARKER = "DEYEL-DEMO"


def main() -> int:
    DEMO.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(DEMO / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags_examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DEYEL_DEMO_OUTPUT": str(DEMO / "output"),
    }
    airflow = [sys.executable, "-m", "airflow"]
    print("== airflow db migrate (SQLite in .demo/airflow)", flush=True)
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True)

    emulator = subprocess.Popen(
        [sys.executable, "-m", "deyel_provider.emulator", "--port", "0", "--records", str(RECORDS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        base_url = emulator.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise SystemExit(f"the emulator did not start (first line: {base_url!r})")
        print(f"== Deyel emulator at {base_url} with {RECORDS} CRM_ACCOUNT instances", flush=True)
        env["AIRFLOW_CONN_DEYEL_DEFAULT"] = json.dumps(
            {
                "conn_type": "deyel",
                "host": base_url,
                "login": "DEYELBOT",
                "password": "BOTDEYEL312!",
            }
        )
        for dag_id, logical_date in DAGS:
            command = ["dags", "test", dag_id, *([logical_date] if logical_date else [])]
            print(f"== airflow {' '.join(command)}", flush=True)
            log_path = DEMO / f"{dag_id}.log"
            with log_path.open("w") as log:
                result = subprocess.run([*airflow, *command], env=env, stdout=log, stderr=subprocess.STDOUT)
            for line in log_path.read_text().splitlines():
                if REPORT_MARKER in line:
                    print("   " + line.split(REPORT_MARKER, 1)[1].strip(" :"))
            if result.returncode != 0:
                print(f"!! {dag_id} failed; full output in {log_path}", file=sys.stderr)
                return result.returncode
            print(f"   (full output in {log_path.relative_to(ROOT)})")
            if dag_id == "deyel_extract_daily":
                report_extraction(Path(env["DEYEL_DEMO_OUTPUT"]) / EXTRACT_FILE)
        with urllib.request.urlopen(f"{base_url}/_emulator/stats", timeout=10) as response:  # noqa: S310
            stats = json.load(response)
        print(
            f"== emulator counters: token_requests={stats['token_requests']} "
            f"api_requests={stats['api_requests']}"
        )
        return 0
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


def report_extraction(path: Path) -> None:
    with path.open(encoding="utf-8") as lines:
        first = lines.readline()
        count = (1 if first else 0) + sum(1 for _ in lines)
    print(f"   output file: {path}")
    print(f"   records: {count}")
    if first:
        print(f"   sample record: {json.dumps(json.loads(first), ensure_ascii=False)[:300]}")


if __name__ == "__main__":
    sys.exit(main())
