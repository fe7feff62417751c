"""Memory of each output format on a hostile response: 1000 instances, each with 500 field names no other
has (one 6.9 MB response, under the 16 MiB cap). Every row of a CSV or Parquet file is as wide as all the
names seen; the writers stop at ``max_columns`` (a ``DeyelSchemaError``), JSON Lines writes it.

Each format runs in a fresh interpreter under an address-space limit (``RLIMIT_AS``, 4 GiB by default:
``BENCH_WIDE_LIMIT_MB``), so a writer that grows without bound dies there instead of taking the machine.

    python -m bench wide
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench._wide_child import run_child, wide_form_server

INSTANCES, NEW_FIELDS_EACH = 1000, 500


def run() -> None:
    limit = int(os.environ.get("BENCH_WIDE_LIMIT_MB", "4096"))
    print(
        f"One response of {INSTANCES} instances x {NEW_FIELDS_EACH} new field names each, page_size "
        f"{INSTANCES}, under RLIMIT_AS {limit} MiB\n"
    )
    print("| format | outcome | peak RSS (MB) | peak address space (MB) | files left |")
    print("|---|---|---:|---:|---|")
    with wide_form_server(INSTANCES, NEW_FIELDS_EACH) as emulator:
        for fmt in ("jsonl", "csv", "parquet"):
            with tempfile.TemporaryDirectory() as folder:
                m = run_child(emulator, fmt, Path(folder), limit_mb=limit, page_size=INSTANCES)
            if m is None:
                print(f"| {fmt} | died (killed at the limit) | | | |", flush=True)
                continue
            print(
                f"| {fmt} | {m['outcome']} | {m['peak_rss_mb']} | {m['peak_vm_mb']} | "
                f"{', '.join(m['files']) or 'none'} |",
                flush=True,
            )
