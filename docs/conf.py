"""Sphinx configuration of the documentation site: the Markdown pages of docs/ (MyST) and an API reference
built from the public faces' docstrings (autodoc). ``make docs`` builds it with warnings as errors, and so
does tests/test_docs_site.py; docs/development.md says why Sphinx."""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "provider"))  # the source tree, installed or not

from deyel_provider import __version__  # noqa: E402

project = "airflow-provider-deyel"
author = "airflow-provider-deyel developers"
copyright = "airflow-provider-deyel developers"
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# site.rst holds the navigation (a toctree); index.md stays the page GitHub shows for docs/.
root_doc = "site"
exclude_patterns = ["_build"]

# GitHub's heading anchors, which the pages link to (tests/test_docs.py checks them the GitHub way).
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Airflow's own classes (BaseOperator, BaseHook...) are not part of this site.
nitpicky = False

html_theme = "alabaster"
html_title = f"airflow-provider-deyel {version}"

#: Where the pages' links that leave docs/ (the README, the example DAGs) point on the site: the repository
#: (the same URL pattern as pyproject.toml's Project-URLs). On GitHub they stay relative.
REPOSITORY = "https://github.com/deyel/airflow-provider-deyel/blob/main/"
OUTSIDE_DOCS = re.compile(r"\]\(\.\./([^)\s]+)\)")


def _links_outside_docs_to_the_repository(app, docname, source):
    source[0] = OUTSIDE_DOCS.sub(lambda m: f"]({REPOSITORY}{m.group(1)})", source[0])


def setup(app):
    app.connect("source-read", _links_outside_docs_to_the_repository)
