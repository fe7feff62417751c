"""The wheel and sdist from ``make dist``, built once per session: test_packaging checks them and installs the
wheel alone, test_quickstart installs it by following docs/quickstart.md (one build, about 10 s, for both)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
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


@dataclass(frozen=True)
class VenvPlace:
    """Where test_packaging and then test_quickstart make their virtualenvs (one after the other: each
    empties ``folder`` first), and the bytecode cache both keep outside them (``PYTHONPYCACHEPREFIX``).

    A fresh virtualenv holds Airflow's sources only (uv compiles nothing): the first processes of each
    compile what they import, about 7 s of CPU. At the same path and installed from uv's cache (hard links:
    the same files, modification times and sizes), the second virtualenv's sources are the first one's, so
    its processes load the bytecode the first one's compiled; Python checks each file's time and size
    against its source, and compiles again whatever differs. Each virtualenv is still made from nothing.
    """

    folder: Path
    pycache: Path

    def fresh(self) -> Path:
        """``folder``, emptied (as if never made)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        return self.folder

    @property
    def env(self) -> dict[str, str]:
        return {"PYTHONPYCACHEPREFIX": str(self.pycache)}


@pytest.fixture(scope="session")
def venv_place(tmp_path_factory) -> VenvPlace:
    return VenvPlace(tmp_path_factory.mktemp("wheel-venv"), tmp_path_factory.mktemp("wheel-venv-pycache"))
