"""Write-back source bombs: the key check's peak memory on each (issue 22, finding 3).

Each bomb is read by ``check_keys(Source(path), "cdCustomer")`` in a fresh interpreter whose address space is
capped at what it maps after its imports plus 6 GiB (``RLIMIT_AS``: the machine is never at risk), with
Arrow on the system allocator (mimalloc reserves address space it does not use). Prints peak RSS growth,
seconds and the outcome. ``BENCH_BOMBS_PROVIDER=/path/to/provider`` measures another tree (e.g. an older
commit's ``provider`` folder, from ``git archive``) for a before/after comparison.

python -m bench source_bombs

An outcome table (what each bomb costs and how it ends), not a comparison of rates: it does not go through
bench/harness.py; a before/after comparison is two runs with BENCH_BOMBS_PROVIDER.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

MiB = 1 << 20
HEADROOM = 6 * 1024 * MiB


def big() -> int:
    """The long line and cell: 400 MiB (far past every bound); 24 MiB with --quick (still past them)."""
    from bench.harness import sized

    return sized(400, 24) * MiB


CHILD = """
import resource, sys, time
import tempfile
import pyarrow, pyarrow.parquet
from deyel_provider.load.sources import Source, check_keys
# A first read of a one-row file: Arrow's compute kernels start up on first use (about 30 MiB, once per
# process); the measure is of the bomb's data.
with tempfile.TemporaryDirectory() as folder:
    pyarrow.parquet.write_table(pyarrow.table({"k": ["a"]}), folder + "/warm.parquet")
    check_keys(Source(folder + "/warm.parquet"), "k")
mapped = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (mapped + HEADROOM, mapped + HEADROOM))
def status(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024
open("/proc/self/clear_refs", "w").write("5")  # the peak RSS (VmHWM) restarts from here: not the imports'
before = status("VmRSS")
started = time.monotonic()
try:
    outcome = "read %d records" % check_keys(Source(sys.argv[1]), "cdCustomer")
except BaseException as exc:
    outcome = type(exc).__name__ + ": " + str(exc).split(": ", 1)[-1][:90]
grown = status("VmHWM") - before
print(f"| {grown / 2**20:.1f} MiB | {time.monotonic() - started:.2f} s | {outcome} |")
""".replace("HEADROOM", str(HEADROOM))


def _parquet(path: Path, value_bytes: int) -> None:
    """One text repeated on 2,000 rows by the file's dictionary (zstd, no Arrow schema: any writer's file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 2000
    column = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * value_bytes]))
    table = pa.table({"cdCustomer": [f"C-{i}" for i in range(rows)], "dsBlob": column})
    pq.write_table(table, path, compression="zstd", compression_level=22, store_schema=False)


def _bombs(folder: Path) -> list[Path]:
    made = []
    for name, size in (("1MB-x2000.parquet", 10**6), ("2MiB-x2000.parquet", 2 * MiB)):
        _parquet(folder / name, size)
        made.append(folder / name)
    size = big()
    line = folder / f"{size // MiB}MiB-line.jsonl"
    line.write_text('{"cdCustomer": "C-1", "dsName": "' + "x" * size + '"}\n')
    cell = folder / f"{size // MiB}MiB-cell.csv"
    cell.write_text('cdCustomer,dsName\nC-1,"' + "x" * size + '"\n')
    deep = folder / "985-deep.jsonl"
    deep.write_text('{"cdCustomer": "C-1", "lsRows": ' + "[" * 985 + "]" * 985 + "}\n")
    return [*made, line, cell, deep]


def run() -> None:
    here = Path(__file__).resolve().parent.parent / "provider"
    provider = os.environ.get("BENCH_BOMBS_PROVIDER", str(here))
    env = {**os.environ, "PYTHONPATH": provider, "ARROW_DEFAULT_MEMORY_POOL": "system"}
    print(f"provider: {provider}\n")
    print("| bomb | on disk | peak RSS growth | time | outcome |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for path in _bombs(Path(folder)):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env, check=False
            )
            result = done.stdout.strip() or f"| exit {done.returncode}: {done.stderr.strip()[-200:]} |"
            print(f"| {path.name} | {path.stat().st_size:,} B {result}", flush=True)
