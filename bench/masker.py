"""Per-request cost after N token renewals in one process (a triggerer lives for weeks): the provider's
bounded registration with Airflow's secrets masker vs registering every token (what it did before).

Each step renews the token (``cache=none``: a token POST), makes one GET, and puts 20 log lines through
Airflow's ``redact``, as a task's logging does. Airflow's masker recompiles one regex of every registered
value at each registration and runs it over every line, so registering every token makes each step slower.

Each run is a fresh interpreter (``python -m bench.masker <json>``): the masker starts empty without reaching
into Airflow's private reset. Only public Airflow names are used (``redact``, ``mask_secret``, found where
this Airflow keeps them, 3.0 to 3.3); the pattern count comes from the provider's own feature-detected
handle on the masker and prints n/a where it has none.

    python -m bench masker
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import Column, Measurement, Table, Variant, quick, run_table

ROOT = Path(__file__).resolve().parent.parent
LINE = "GET /forms/CRM_ACCOUNT/instances answered 200 in 12 ms " * 3


def marks() -> tuple[int, ...]:
    return (1, 10, 30) if quick() else (1, 10, 50, 100, 200)


def public_redact() -> Callable[[Any], Any]:
    """Airflow's public ``redact``, wherever this version exports it (3.3 airflow.sdk.log; 3.1-3.2 the Task
    SDK's shared masker; 3.0 airflow.sdk.execution_time.secrets_masker)."""
    for module in (
        "airflow.sdk.log",
        "airflow.sdk._shared.secrets_masker",
        "airflow.sdk.execution_time.secrets_masker",
    ):
        try:
            return importlib.import_module(module).redact
        except (ImportError, AttributeError):
            continue
    raise RuntimeError("this Airflow exports no redact()")


def _patterns() -> int | None:
    from deyel_provider.auth import masking

    patterns = getattr(masking._airflow_masker(), "patterns", None)  # the provider's feature detection
    return None if patterns is None else len(patterns)


def steps(register_every_token: bool, renewals: int) -> dict[str, Any]:
    """In this (fresh) process: ``renewals`` steps; ms and registered patterns at each mark."""
    from deyel_provider.auth import masking
    from deyel_provider.hooks.deyel import DeyelHook

    redact = public_redact()
    if register_every_token:
        # What the provider did before: every token registered, none ever removed.
        masking.MAX_PER_CREDENTIAL = renewals * 10
    hook = DeyelHook()
    out: dict[str, Any] = {}
    for n in range(1, renewals + 1):
        started = time.perf_counter()
        hook.get_token()
        hook.request("GET", "/forms/CRM_ACCOUNT/instances", params={"pageSize": 1})
        for _ in range(20):
            redact(LINE)
        if n in marks():
            out[f"ms_{n}"] = (time.perf_counter() - started) * 1000
            out[f"patterns_{n}"] = _patterns()
    hook.close()
    return out


def _child(url: str, register_every_token: bool) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="deyel-bench-") as home:
        connection = {
            "conn_type": "deyel",
            "host": url,
            "login": "DEYELBOT",
            "password": "BOTDEYEL312!",
            "extra": {"cache": "none"},
        }
        env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW_CONN_DEYEL_DEFAULT": json.dumps(connection)}
        args = json.dumps({"every": register_every_token, "renewals": max(marks())})
        result = subprocess.run(
            [sys.executable, "-m", "bench.masker", args], env=env, cwd=ROOT, capture_output=True, text=True
        )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-2:]
        raise RuntimeError(f"exit {result.returncode}: {' | '.join(tail)}")
    return dict(json.loads(lines[-1]))


def run() -> None:
    from deyel_provider.emulator import run_emulator

    last = max(marks())
    columns = [Column(f"ms_{n}", f"ms at renewal {n}") for n in marks() if n != last]
    columns += [Column(f"patterns_{n}", f"patterns at {n}", "exact") for n in (marks()[0], last)]
    with run_emulator(records=10) as emulator:
        run_table(
            Table(
                f"A renewal, one GET and 20 log lines per step, {last} steps in one process (a fresh one per "
                "run)",
                metric=f"ms_{last}",
                unit=f"ms per step at renewal {last}",
                baseline="bounded (the provider)",
                columns=columns,
                note="patterns: the patterns Airflow's masker holds (n/a where this Airflow exposes none).",
            ),
            [
                Variant("bounded (the provider)", lambda: _child(emulator.url, False)),
                Variant("every token registered (before)", lambda: _child(emulator.url, True)),
            ],
        )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        options = json.loads(sys.argv[1])
        print(json.dumps(steps(options["every"], options["renewals"])))
    else:
        run()
