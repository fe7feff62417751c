"""Run every benchmark module in bench/ (each defines ``run() -> None`` and prints its own tables).

python -m bench                        # all of them, 5 rounds per table
python -m bench tokens                 # only bench/tokens.py
python -m bench --rounds 3 extract     # 3 rounds per table
python -m bench --quick                # every table at a small size (checks they run; numbers mean nothing)
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import pkgutil
import platform
import sys
from pathlib import Path


def machine() -> str:
    """What the numbers were measured on: they mean little without it."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import airflow

        airflow_version = airflow.__version__
    except ImportError:
        airflow_version = "not installed"
    try:
        load = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = "load average unknown"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Measured {now} on {os.cpu_count()} CPUs ({cpu}), {load} at the start; "
        f"Python {platform.python_version()}, Airflow {airflow_version}, {platform.system()} "
        f"{platform.release()}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--rounds", type=int, help="rounds per table (default 5; BENCH_ROUNDS)")
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere (BENCH_QUICK=1)")
    args = parser.parse_args(argv)
    # Environment variables, so that the children the benchmarks start read the same settings.
    if args.rounds is not None:
        os.environ["BENCH_ROUNDS"] = str(max(1, args.rounds))
    if args.quick:
        os.environ["BENCH_QUICK"] = "1"
    from bench.harness import quick, rounds

    here = Path(__file__).parent
    names = args.names or sorted(
        m.name
        for m in pkgutil.iter_modules([str(here)])
        if not m.name.startswith("_") and m.name != "harness"
    )
    print(machine())
    print(f"{rounds()} rounds per table, variants interleaved{'; --quick sizes' if quick() else ''}")
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if hasattr(module, "run"):
            print(f"\n### bench/{name}.py\n", flush=True)
            module.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
