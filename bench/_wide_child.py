"""One extraction of a wide, sparse form under an address-space limit, in a fresh interpreter.

``python -m bench._wide_child '<json options>'``: ``url`` (an emulator serving ``form``), ``format``,
``folder``, ``limit_mb`` (RLIMIT_AS; 0 for none), ``page_size``, ``max_columns`` (None: the default).
Prints one JSON line: ``outcome`` (``ok`` or the exception's class), ``message`` (cut), ``peak_rss_mb``,
``peak_vm_mb``, ``records``, ``bytes``, ``files`` (what the folder holds afterwards). A process killed by
the limit prints nothing (or ``MemoryError``), which is what the tests look for.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench._extract_child import peak_rss_mb
from tests.support.helpers import FAST_RETRY, connection_json

if TYPE_CHECKING:
    from deyel_provider.emulator.server import RunningEmulator

ROOT = Path(__file__).resolve().parent.parent
#: ``python -m bench._wide_child``, for a warm child.
RUN_AS_MAIN = "import runpy; runpy.run_module('bench._wide_child', run_name='__main__', alter_sys=True)"
FORM = "WIDE_FORM"


@contextmanager
def wide_form_server(instances: int, new_fields_each: int) -> Iterator[RunningEmulator]:
    """An emulator whose form ``FORM`` holds ``instances`` instances, each with ``new_fields_each`` field
    names no other has (1000 x 500: one 6.9 MB response of 1000 instances)."""
    from deyel_provider.emulator.server import run_emulator

    with run_emulator(records=0) as emulator:
        store = emulator.state.store
        for i in range(instances):
            store.create(FORM, {f"f{i:03x}{j:03x}": j for j in range(new_fields_each)})
        yield emulator


def run_child(
    emulator: RunningEmulator, fmt: str, folder: Path, *, warm: bool = False, **options: Any
) -> dict[str, Any] | None:
    """The child's JSON result for one format; None when it died (killed by the limit, a crash).

    ``warm``: the child is forked from a process that imported Airflow already (tests/support/warm.py),
    which saves the tests a CPU second and a half per child; its peaks then count what that process had
    mapped, so the benchmark, which prints them, starts a new interpreter."""
    request = {"url": emulator.url, "form": FORM, "format": fmt, "folder": str(folder), **options}
    if warm:
        from tests.support.warm import run_python

        run: Any = functools.partial(run_python, RUN_AS_MAIN, json.dumps(request))
    else:
        run = functools.partial(
            subprocess.run,
            [sys.executable, "-m", "bench._wide_child", json.dumps(request)],
            capture_output=True,
            text=True,
            check=False,
        )
    done = run(
        cwd=ROOT,
        # RLIMIT_AS counts address space reserved, not used: glibc gives a thread that finds the heap busy
        # an arena of its own (64 MiB reserved each, up to 8 per core), so how many the child reserves
        # depends on how its threads meet, which a loaded machine changes (the JSON Lines child died once
        # under its 1.5 GiB limit on a 2-core machine at a load of 18, and passed alone: the cause was not
        # captured, arenas are the part of the reservation that varies with timing). Two arenas make the
        # reservation the same on every run; what the child uses is unchanged.
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
        timeout=1800,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        # The tests report a death; what the child said before it is the only clue to why.
        sys.stderr.write(f"bench._wide_child exited {done.returncode}: {done.stderr[-3000:]}\n")
        return None
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(options: dict) -> dict:
    if options.get("limit_mb"):
        limit = options["limit_mb"] * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.environ["AIRFLOW_CONN_DEYEL_DEFAULT"] = connection_json(
        options["url"],
        **FAST_RETRY,
        cache_dir=options["folder"] + "/cache",
        page_size=options["page_size"],
        settle_seconds=0,
    )
    from deyel_provider.extract.progress import Progress
    from deyel_provider.extract.run import extract
    from deyel_provider.extract.spec import OutputSpec, ReadSpec
    from deyel_provider.hooks.deyel import DeyelHook

    ext = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}[options["format"]]
    output = Path(options["folder"]) / "out" / f"wide{ext}"
    extra = {} if options.get("max_columns") is None else {"max_columns": options["max_columns"]}
    result: dict = {}
    try:
        done = extract(
            DeyelHook(),
            ReadSpec(options["form"]),
            OutputSpec(str(output), format=options["format"], **extra),
            progress=Progress(3600),
        )
        result.update(outcome="ok", records=done.records, bytes=done.bytes)
    except Exception as exc:  # the outcome is what the caller asserts
        result.update(outcome=type(exc).__name__, message=str(exc)[:400])
    result["peak_rss_mb"] = round(peak_rss_mb())  # VmHWM: ru_maxrss carries the parent's over exec
    result["peak_vm_mb"] = _peak_vm_mb()
    result["files"] = sorted(p.name for p in output.parent.iterdir()) if output.parent.exists() else []
    return result


def _peak_vm_mb() -> int | None:
    """The address space the process reserved at most (what RLIMIT_AS limits), from /proc (Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmPeak:"):
            return round(int(line.split()[1]) / 1024)
    return None


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
