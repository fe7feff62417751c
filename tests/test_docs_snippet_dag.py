"""The headline snippet of docs/extraction.md, taken from the page itself, runs in a DAG on a manual run.

Airflow 3 gives manual and asset-triggered runs no logical date, so no ``ds``, ``ts`` or ``ts_nodash``: the
snippet's ``{{ ts_nodash }}`` failed every such run ("'ts_nodash' is undefined", for a field named
``output_path``). ``dag.test()`` always makes a MANUAL run (Airflow sets the run type itself), so the
asset-triggered case is covered by what both share, a run without a logical date.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pendulum
import pytest

from tests.support.dag_bundles import dag_bundle

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "extraction.md"
FIRST_PYTHON_BLOCK = re.compile(r"```python\n(.*?)\n```", re.DOTALL)


def headline_snippet() -> str:
    match = FIRST_PYTHON_BLOCK.search(PAGE.read_text(encoding="utf-8"))
    assert match, "docs/extraction.md has no python block"
    return match.group(1)


def runnable(snippet: str, lake: str) -> str:
    """The snippet as a DAG file, with its object store swapped for a local folder (the rest as written)."""
    assert "s3://lake/" in snippet and 'output_conn_id="aws_default"' in snippet, "the snippet changed"
    body = snippet.replace("s3://lake/", f"{lake}/").replace(
        'output_conn_id="aws_default"', "output_conn_id=None"
    )
    imports = "\n".join(line for line in body.splitlines() if line.startswith(("from ", "import ")))
    rest = "\n".join(line for line in body.splitlines() if not line.startswith(("from ", "import ")))
    return (
        "import pendulum\nfrom airflow.sdk import DAG\n"
        + imports
        + '\n\nwith DAG("docs_extraction_snippet", schedule=None, '
        + 'start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):\n'
        + textwrap.indent(rest.strip(), "    ")
        + "\n"
    )


@pytest.fixture
def snippet_dag(tmp_path, monkeypatch, airflow_db):
    """The snippet's DAG in a bundle of its own, loaded as the DAG processor would."""
    load = dag_bundle(tmp_path / "dags", "docs-snippets", monkeypatch)
    source = runnable(headline_snippet(), (tmp_path / "lake").as_uri())
    dag = load("docs_extraction_snippet", source)
    assert dag is not None, source
    return dag, tmp_path / "lake"


@pytest.mark.dag
def test_the_headline_snippet_runs_on_a_manual_run_without_a_logical_date(emulator, deyel_conn, snippet_dag):
    dag, lake = snippet_dag
    run_after = pendulum.datetime(2026, 3, 4, 5, 6, 7, tz="UTC")
    dag_run = dag.test(run_after=run_after, logical_date=None)
    assert dag_run.state == "success"
    (ti,) = dag_run.get_task_instances()
    result = ti.xcom_pull(task_ids="extract_accounts")
    assert result["mode"] == "watermark"  # no data interval: the watermark from start_from
    assert result["path"].endswith("/deyel/CRM_ACCOUNT/20260304T050607.jsonl")
    assert (lake / "deyel" / "CRM_ACCOUNT" / "20260304T050607.jsonl").is_file()
