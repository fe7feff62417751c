"""Data-lake output benchmark: the same full extraction written as Parquet (snappy and zstd), gzip and zstd
JSON Lines and plain JSON Lines, side by side: records/s, bytes on disk, peak RSS, CPU.

Each run is a fresh subprocess (``bench/_extract_child.py``) against an emulator in its own process, so the
peak RSS is the extraction's own; it should stay flat from 100k to 1M instances (memory holds a few
responses and, for Parquet, one row group). The variants run interleaved (bench/harness.py); plain JSON
Lines is the baseline of every ratio, and if it fails the ratios say n/a rather than divide by another row.
An output's own libraries (pyarrow for Parquet, and pandas, which pyarrow imports where installed; the zstd
module) are imported before the clock starts, as the provider's modules are: a cost paid once per task,
not per record (``_output_libraries`` in bench/_extract_child.py). It is not hidden: a column shows its
seconds, and a row measures snappy Parquet with the import inside the clock, in the same rounds (what a
task of that size sees; the writer makes pyarrow import pandas before the read starts, so both rows read
with the same heap).

    python -m bench lake                      # 100k and 1M instances
    BENCH_LAKE_BIG=0 python -m bench lake     # 100k only
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from bench.extract import PAGE_SIZE, RECORDS, RSS, STEP_MS, child, emulator
from bench.harness import Column, Measurement, Table, Variant, quick, run_table

VARIANTS = (
    ("JSON Lines", {"format": "jsonl", "output": "out.jsonl"}),
    ("JSON Lines, gzip", {"format": "jsonl", "compression": "gzip", "output": "out.jsonl.gz"}),
    ("JSON Lines, zstd", {"format": "jsonl", "compression": "zstd", "output": "out.jsonl.zst"}),
    ("Parquet, snappy", {"format": "parquet", "output": "out.parquet"}),
    ("Parquet, zstd", {"format": "parquet", "compression": "zstd", "output": "out.parquet"}),
    # What a task of this size sees: the same run with the libraries' one-time import inside the clock.
    (
        "Parquet, snappy, import in the clock",
        {"format": "parquet", "output": "out.parquet", "imports_in_clock": True},
    ),
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def _missing(options: dict[str, Any]) -> str | None:
    """Why an output cannot be written here (its extra is not installed), or None."""
    if options["format"] == "parquet" and not _installed("pyarrow"):
        return "pyarrow not installed (the parquet extra)"
    if options["format"] == "jsonl" and options.get("compression") == "zstd":
        if not (_installed("compression.zstd") or _installed("backports.zstd")):
            return "no zstd module (the zstd extra)"
    return None


def run() -> None:
    if quick():
        sizes = [5_000]
    else:
        sizes = [100_000, 1_000_000] if os.environ.get("BENCH_LAKE_BIG", "1") != "0" else [100_000]
    for size in sizes:
        with emulator(size, updated_step_ms=STEP_MS) as url:

            def output(options: dict[str, Any], url: str = url) -> Any:
                def run_one() -> Measurement:
                    m = child("operator", url, page_size=PAGE_SIZE, **options)
                    return {
                        **m,
                        "mb": m["bytes"] / 2**20,
                        "bytes_per_record": m["bytes"] / max(1, m["records"]),
                    }

                return run_one

            run_table(
                Table(
                    f"Full extraction of a static form, {size:,} instances, to a local file, pages of "
                    f"{PAGE_SIZE}, one worker",
                    metric="records_per_s",
                    unit="records/s",
                    baseline="JSON Lines",
                    columns=[
                        RECORDS,
                        Column("mb", "MB on disk"),
                        Column("bytes_per_record", "bytes per record"),
                        RSS,
                        Column("cpu_s", "CPU s (this process, timed)"),
                        Column("import_s", "library import (s wall, before the clock)"),
                    ],
                ),
                [Variant(label, output(options), skip=_missing(options)) for label, options in VARIANTS],
            )
