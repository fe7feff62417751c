"""Data-lake output benchmark: the same full extraction written as Parquet (snappy and zstd), gzip JSON Lines
and plain JSON Lines, side by side: records/s, bytes on disk, peak RSS.

Each variant runs in a fresh subprocess (``bench/_extract_child.py``) against an emulator in its own process,
so the peak RSS is the extraction's own; it should stay flat from 100k to 1M instances (memory holds a few
responses and, for Parquet, one row group).

    python -m bench lake                      # 100k and 1M instances
    BENCH_LAKE_BIG=0 python -m bench lake     # 100k only
"""

from __future__ import annotations

import os

from bench.extract import PAGE_SIZE, STEP_MS, child, emulator

VARIANTS = (
    ("JSON Lines", {"format": "jsonl", "output": "out.jsonl"}),
    ("JSON Lines, gzip", {"format": "jsonl", "compression": "gzip", "output": "out.jsonl.gz"}),
    ("JSON Lines, zstd", {"format": "jsonl", "compression": "zstd", "output": "out.jsonl.zst"}),
    ("Parquet, snappy", {"format": "parquet", "output": "out.parquet"}),
    ("Parquet, zstd", {"format": "parquet", "compression": "zstd", "output": "out.parquet"}),
)


def run() -> None:
    sizes = [100_000, 1_000_000] if os.environ.get("BENCH_LAKE_BIG", "1") != "0" else [100_000]
    print(
        "Full extraction of a static form to a local file, pages of 1000, one worker "
        "(ratio: records/s over plain JSON Lines in the same run)\n"
    )
    print("| output | records | records/s | vs JSON Lines | MB on disk | bytes per record | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        with emulator(size, updated_step_ms=STEP_MS) as url:
            base = None
            for label, options in VARIANTS:
                m = child("operator", url, page_size=PAGE_SIZE, **options)
                if "error" in m:
                    print(f"| {label} | {size:,} | failed: {m['error'][:80]} | | | | |", flush=True)
                    continue
                rate = m["records"] / m["seconds"]
                base = base or rate
                print(
                    f"| {label} | {m['records']:,} | {rate:,.0f} | {rate / base:.2f}x | "
                    f"{m['bytes'] / 2**20:,.1f} | {m['bytes'] / m['records']:.0f} | {m['peak_rss_mb']:.0f} |",
                    flush=True,
                )
