"""Several ``airflow`` commands in one interpreter: each through the ``airflow`` console script's own entry
point (``airflow.__main__:main``: its parser, configuration and command functions), one after another.

A process of its own per command costs an interpreter importing Airflow (2 to 3 s of CPU; more in a fresh
virtualenv, which compiles what it imports). Tests that check what a few commands print, or that need one
command's effect for the next, run them here in one process: the commands are the ones users type. With this
test session's interpreter that process is a warm child (tests/support/warm.py: a fork of one that imported
Airflow already, with the given environment and the database settings read from it); another interpreter
(a virtualenv of the wheel) gets a process of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.warm import run_python

#: Starts the line before each step's output on stdout.
MARK = "=== deyel-tests step "

#: Run by ``python -c`` with the steps as JSON: ``["airflow", [args...]]`` or ``["python", source]``. It
#: imports nothing of the tests, so that it runs in any virtualenv (test_packaging's has only the wheel).
DRIVER = f"""
import json, sys

from airflow.__main__ import main

for number, (kind, step) in enumerate(json.loads(sys.argv[1])):
    print("\\n{MARK}" + str(number), flush=True)
    if kind == "python":
        exec(compile(step, "<step " + str(number) + ">", "exec"), {{"__name__": "__main__"}})
        sys.stdout.flush()
        continue
    sys.argv = ["airflow", *step]
    try:
        main()
    except SystemExit as stop:
        if stop.code not in (None, 0):
            print("\\n{MARK}" + str(number) + " failed: " + str(stop.code), flush=True)
            raise
    sys.stdout.flush()
"""


def airflow(*args: str) -> tuple[str, list[str]]:
    """A step: ``airflow ARGS...``."""
    return ("airflow", list(args))


def python(source: str) -> tuple[str, str]:
    """A step: Python source run in the same interpreter (``__name__ == "__main__"``)."""
    return ("python", source)


def run_steps(
    interpreter: str | Path,
    *steps: tuple[str, object],
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> list[str]:
    """Run ``steps`` in one ``interpreter`` process; each step's stdout, in order. A failing step (exit code
    other than 0, or an exception) fails the call with the process's output."""
    if Path(interpreter) == Path(sys.executable):
        done = run_python(DRIVER, json.dumps(steps), env=env, timeout=timeout, airflow_settings=True)
    else:
        done = subprocess.run(
            [str(interpreter), "-c", DRIVER, json.dumps(steps)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    shown = f"{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"steps {[s[1] for s in steps]} exited {done.returncode}:\n{shown}"
    _, *outputs = done.stdout.split(f"\n{MARK}")
    assert len(outputs) == len(steps), shown
    return [output.split("\n", 1)[1] if "\n" in output else "" for output in outputs]


def run_airflow(*commands: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> list[str]:
    """``airflow`` commands (argument lists) in one process with this test session's interpreter."""
    return run_steps(sys.executable, *(airflow(*command) for command in commands), env=env, timeout=timeout)
