"""The published artefacts: sdist and wheel built as users get them, and the wheel alone with Apache Airflow.

These build with ``python -m build`` and install into a clean virtualenv made by uv (from its cache after the
first run: a few seconds), so they stay in ``make test``; ``-m "not packaging"`` leaves them out.
"""

from __future__ import annotations

import email
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from deyel_provider import __version__
from tests.support.airflow_cli import airflow, run_steps
from tests.support.airflow_cli import python as python_step
from tests.support.wheel import run

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dist(wheel_dist) -> Path:
    """sdist and wheel from ``make dist`` (one build per session: test_quickstart installs this wheel)."""
    return wheel_dist


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


#: A Markdown link or image whose target has no scheme: dead on a package index.
SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*:"
RELATIVE_LINK = re.compile(rf"\]\((?!{SCHEME})([^)\s]*)\)|(?:href|src)=\"(?!{SCHEME})")


def test_the_package_description_opens_with_install_and_holds_no_relative_link(dist):
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(
            archive.read(next(n for n in archive.namelist() if n.endswith("/METADATA")))
        )
    assert metadata["Description-Content-Type"].startswith("text/markdown")
    description = metadata.get_payload()
    assert RELATIVE_LINK.findall(description) == [], "relative links are dead on a package index"
    # The README's own links are there, made absolute into the repository.
    assert "](https://github.com/deyel/airflow-provider-deyel/blob/main/docs/connection.md)" in description
    sections = re.findall(r"^## (.+)$", description, flags=re.MULTILINE)
    assert sections[0] == "Installation", sections
    assert "pip install airflow-provider-deyel" in description.split("\n## ", 2)[1]
    # The repository's two commands, which open the README, sit under "From source" here.
    before, from_source = description.split("\n## From source\n", 1)
    commands = re.compile(r"^make (demo|test)\b", flags=re.MULTILINE)
    assert commands.findall(from_source.split("\n## ", 1)[0]) == ["demo", "test"]
    assert commands.findall(before) == []


def test_the_link_check_catches_relative_links():
    text = '[a](docs/x.md) [b](#top) [c](https://x.y/z) <img src="p.png"> [d](mailto:x@y)'
    found = RELATIVE_LINK.findall(text)
    assert len(found) == 3


@pytest.fixture(scope="module")
def clean_venv(dist, venv_place) -> Path:
    """A virtualenv holding the wheel and Apache Airflow (the pinned version) and nothing else of ours (made
    where test_quickstart makes its own afterwards: see ``VenvPlace``)."""
    venv = venv_place.fresh() / "venv"
    (wheel,) = dist.glob("*.whl")
    run(sys.executable, "-m", "uv", "venv", "-q", "--python", sys.executable, venv)
    run(
        sys.executable, "-m", "uv", "pip", "install", "-q", "--python", venv / "bin" / "python",
        "-c", ROOT / "constraints.txt", wheel, "apache-airflow",
    )  # fmt: skip
    return venv


ENTRY_POINT_PROBE = """
from importlib.metadata import entry_points
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.deyel import DeyelOperator
from deyel_provider.sensors.deyel import DeyelInstanceSensor
(ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("deyel_provider")]
info = ep.load()()
hook = next(c["hook-class-name"] for c in info["connection-types"] if c["connection-type"] == "deyel")
assert hook == f"{DeyelHook.__module__}.{DeyelHook.__qualname__}"
print(hook, info["package-name"], info["versions"][0])
"""


def clean_env(home: Path, **more: str) -> dict[str, str]:
    """No variable of the test session (its AIRFLOW_HOME, connections, dags folder) leaks in."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "AIRFLOW_HOME": str(home)}
    env.update(AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"), **more)
    return env


def test_the_wheel_alone_registers_the_provider_and_runs_an_example_dag(clean_venv, venv_place, tmp_path):
    python = clean_venv / "bin" / "python"
    env = clean_env(tmp_path, **venv_place.env)
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "deyel_api_call.py").write_text(
        (ROOT / "dags_examples" / "deyel_api_call.py").read_text()
    )

    # Only Airflow and the wheel: no test tool, and the provider imported from site-packages.
    probe = run(python, "-c", "import importlib.util as u, deyel_provider as d; "
                "print(u.find_spec('pytest') is None, d.__file__)", env=env)  # fmt: skip
    assert probe.split()[0] == "True" and str(clean_venv) in probe.split()[1]

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
            # One interpreter of the virtualenv for the probe and the commands (tests/support/airflow_cli.py):
            # each command through the `airflow` script's own entry point, as users type it.
            resolved, providers, hooks, _, out = run_steps(
                python,
                python_step(ENTRY_POINT_PROBE),
                airflow("providers", "list", "--output", "json"),
                airflow("providers", "hooks", "--output", "json"),
                airflow("db", "migrate"),
                airflow("dags", "test", "deyel_api_call"),
                env=env,
            )
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)

    # The public faces import from the wheel, and the provider's entry point resolves to its provider info.
    assert resolved.split() == ["deyel_provider.hooks.deyel.DeyelHook", "airflow-provider-deyel", __version__]
    assert {"package_name": "airflow-provider-deyel", "version": __version__}.items() <= next(
        p for p in json.loads(providers) if p["package_name"] == "airflow-provider-deyel"
    ).items()
    assert {"connection_type": "deyel", "class": "deyel_provider.hooks.deyel.DeyelHook"}.items() <= next(
        h for h in json.loads(hooks) if h["connection_type"] == "deyel"
    ).items()
    assert "DEYEL-DEMO: CRM_ACCOUNT instances: 20" in out
