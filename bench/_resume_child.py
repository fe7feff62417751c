"""One try of a DeyelExtractOperator run split into parts, for bench/fan_out.py's resume table.

    python -m bench._resume_child '{"folder": ..., "try_number": 1, "page_size": 100, "max_file_bytes": ...}'

Run ``r`` of DAG ``bench``, its data interval [2026-01-01, 2026-07-01) (every seeded instance lies in it): a
first try (``try_number`` 1 of 2) that the bench may kill with SIGKILL, and its retry (``try_number`` 2) in
the same folder, which resumes after the parts the first one recorded (beside them: no task_state_store
here, as on Airflow 3.0 to 3.2). Prints the try's records and requests as one JSON line.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

INTERVAL = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))


def main(args: dict) -> None:
    from deyel_provider.operators.extract import DeyelExtractOperator

    task = DeyelExtractOperator(
        task_id="extract",
        form="CRM_ACCOUNT",
        output=str(Path(args["folder"]) / "accounts.jsonl"),
        page_size=args["page_size"],
        max_file_bytes=args["max_file_bytes"],
    )
    context = {
        "run_id": "r",
        "dag_run": SimpleNamespace(run_id="r", run_after=INTERVAL[1], conf={}),
        "dag": SimpleNamespace(dag_id="bench"),
        "ti": SimpleNamespace(dag_id="bench", map_index=-1, try_number=args["try_number"], max_tries=2),
        "outlet_events": defaultdict(SimpleNamespace),
        "task_state_store": None,
        "data_interval_start": INTERVAL[0],
        "data_interval_end": INTERVAL[1],
    }
    summary = task.execute(context)
    print(json.dumps({"records": summary["records"], "requests": summary["requests"]}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
