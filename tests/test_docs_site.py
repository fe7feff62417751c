"""The documentation site (``make docs``): docs/ and the API reference from the docstrings build with warnings
as errors, so a broken link or anchor between pages, a page left out of the navigation or a docstring Sphinx
cannot read fails ``make test``; the reference holds every public class with its arguments."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

PUBLIC = {
    "deyel_provider.hooks.deyel": ["DeyelHook"],
    "deyel_provider.operators.deyel": ["DeyelOperator", "DeyelTokenOperator"],
    "deyel_provider.operators.extract": ["DeyelExtractOperator"],
    "deyel_provider.operators.upsert": ["DeyelUpsertOperator"],
    "deyel_provider.sensors.deyel": ["DeyelInstanceSensor"],
    "deyel_provider.triggers.deyel": ["DeyelInstanceTrigger", "DeyelChangeTrigger"],
    "deyel_provider.exceptions": ["DeyelError", "DeyelConfigError", "DeyelAuthError"],
}


def sphinx(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """The command ``make docs`` runs (-W: a warning fails the build; --keep-going: all of them are shown)."""
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(source), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = sphinx(DOCS, out)
    assert done.returncode == 0, f"the documentation site has warnings:\n{done.stderr[-6000:]}"
    return out


def test_the_make_target_runs_the_same_build():
    makefile = (ROOT / "Makefile").read_text()
    assert "\tsphinx" not in makefile
    assert "$(PY) -m sphinx -W --keep-going -q -b html docs $(DOCS_OUT)" in makefile


def test_the_site_builds_without_a_warning_and_links_every_page(site):
    pages = {p.stem for p in DOCS.glob("*.md")}
    assert pages <= {p.stem for p in site.glob("*.html")}
    navigation = (site / "site.html").read_text()
    for page in pages:
        assert f'href="{page}.html"' in navigation, f"{page} is not in the site's navigation"
    # Links that leave docs/ point into the repository on the site (they are relative on GitHub).
    index = (site / "index.html").read_text()
    assert 'href="https://github.com/deyel/airflow-provider-deyel/blob/main/README.md"' in index
    assert not re.search(r'href="\.\./', "".join(p.read_text() for p in site.glob("*.html")))


def test_the_api_reference_holds_every_public_class_with_its_arguments(site):
    api = (site / "api.html").read_text()
    for module, classes in PUBLIC.items():
        for name in classes:
            assert f'id="{module}.{name}"' in api, f"{module}.{name} is missing from the API reference"
    # The arguments as the signature gives them, and the docstring's text.
    anchor = 'id="deyel_provider.operators.extract.DeyelExtractOperator"'
    signature = api.split(anchor, 1)[1].split("</dt>")[0]
    for argument in ("form", "output", "incremental_field", "deyel_conn_id"):
        assert f'<span class="n"><span class="pre">{argument}</span>' in signature, argument
    assert "exactly once" in api or "exactly-once" in api


def test_a_broken_link_fails_the_build(tmp_path):
    source = tmp_path / "docs"
    source.mkdir()
    shutil.copy(DOCS / "conf.py", source / "conf.py")
    (source / "site.rst").write_text("Site\n====\n\n.. toctree::\n\n   page\n")
    (source / "page.md").write_text("# Page\n\nSee [a section](#no-such-heading) and [a page](gone.md).\n")
    done = sphinx(source, tmp_path / "out")
    assert done.returncode != 0
    assert "no-such-heading" in done.stderr and "gone" in done.stderr, done.stderr
