"""The published artefacts: sdist and wheel built as users get them, and the wheel alone with Apache Airflow.

These build with ``python -m build`` and install into a clean virtualenv made by uv (from its cache after the
first run: a few seconds), so they stay in ``make test``; ``-m "not packaging"`` leaves them out.
"""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from deyel_provider import __version__

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel from ``python -m build`` (the wheel is built from the sdist, so the sdist is whole)."""
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: hatchling comes from the test group; no build backend is fetched for this.
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    return out


def test_sdist_and_wheel_pass_twine_check(dist):
    artefacts = sorted(dist.iterdir())
    assert sorted(p.suffix for p in artefacts) == [".gz", ".whl"]
    out = run(sys.executable, "-m", "twine", "check", "--strict", *artefacts)
    assert out.count("PASSED") == 2, out


def test_metadata_declares_licence_urls_version_and_no_test_extra(dist):
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(next(n for n in names if n.endswith("/METADATA"))))
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert any(n.endswith("licenses/LICENSE") for n in names)
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL"))
    assert set(urls) >= {"Documentation", "Source", "Changelog"}
    # Test tools are a dependency group: nothing a user could install with the provider.
    assert "test" not in (metadata.get_all("Provides-Extra") or [])
    assert not any("pytest" in req for req in metadata.get_all("Requires-Dist"))
    assert "deyel-probe = deyel_provider.probe:main" in entry_points
    assert "deyel-emulator = deyel_provider.emulator.__main__:main" in entry_points
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {Path(m).relative_to(Path(m).parts[0]).as_posix() for m in archive.getnames() if "/" in m}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"} <= members


@pytest.fixture(scope="module")
def clean_venv(dist, tmp_path_factory) -> Path:
    """A virtualenv holding the wheel and Apache Airflow (the pinned version) and nothing else of ours."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    (wheel,) = dist.glob("*.whl")
    run(sys.executable, "-m", "uv", "venv", "-q", "--python", sys.executable, venv)
    run(
        sys.executable, "-m", "uv", "pip", "install", "-q", "--python", venv / "bin" / "python",
        "-c", ROOT / "constraints.txt", wheel, "apache-airflow",
    )  # fmt: skip
    return venv


def clean_env(home: Path, **more: str) -> dict[str, str]:
    """No variable of the test session (its AIRFLOW_HOME, connections, dags folder) leaks in."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "AIRFLOW_HOME": str(home)}
    env.update(AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"), **more)
    return env


def test_the_wheel_alone_registers_the_provider_and_runs_an_example_dag(clean_venv, tmp_path):
    python, airflow = clean_venv / "bin" / "python", clean_venv / "bin" / "airflow"
    env = clean_env(tmp_path)
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "deyel_api_call.py").write_text(
        (ROOT / "dags_examples" / "deyel_api_call.py").read_text()
    )

    # Only Airflow and the wheel: no test tool, and the provider imported from site-packages.
    probe = run(python, "-c", "import importlib.util as u, deyel_provider as d; "
                "print(u.find_spec('pytest') is None, d.__file__)", env=env)  # fmt: skip
    assert probe.split()[0] == "True" and str(clean_venv) in probe.split()[1]

    providers = json.loads(run(airflow, "providers", "list", "--output", "json", env=env))
    assert {"package_name": "airflow-provider-deyel", "version": __version__}.items() <= next(
        p for p in providers if p["package_name"] == "airflow-provider-deyel"
    ).items()
    hooks = json.loads(run(airflow, "providers", "hooks", "--output", "json", env=env))
    assert {"connection_type": "deyel", "class": "deyel_provider.hooks.deyel.DeyelHook"}.items() <= next(
        h for h in hooks if h["connection_type"] == "deyel"
    ).items()

    with subprocess.Popen(
        [str(clean_venv / "bin" / "deyel-emulator"), "--port", "0", "--records", "20"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as emulator:
        try:
            url = emulator.stdout.readline().split()[0]
            conn = {"conn_type": "deyel", "host": url, "login": "DEYELBOT", "password": "BOTDEYEL312!"}
            env["AIRFLOW_CONN_DEYEL_DEFAULT"] = json.dumps(conn)
            run(airflow, "db", "migrate", env=env)
            out = run(airflow, "dags", "test", "deyel_api_call", env=env)
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
    assert "DEYEL-DEMO: CRM_ACCOUNT instances: 20" in out
