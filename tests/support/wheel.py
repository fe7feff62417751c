"""The wheel and sdist from ``make dist``, built once per session: test_packaging checks them and installs the
wheel alone, test_quickstart installs it by following docs/quickstart.md (one build, about 10 s, for both)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="session")
def wheel_dist(tmp_path_factory) -> Path:
    """sdist and wheel from ``make dist``, the command the README names (``python -m build``: the wheel is
    built from the sdist, so the sdist is whole), into a folder of the session's own."""
    out = tmp_path_factory.mktemp("dist")
    # -o: the virtualenv is the one running this test (make setup's stamp is not remade); --no-isolation in
    # the target: hatchling and its readme plugin come from the test group, nothing is fetched to build.
    run("make", "-C", ROOT, "-o", ".venv/.installed", "dist", f"PY={sys.executable}", f"DIST={out}")
    return out
