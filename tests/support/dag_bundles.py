"""DAG files a test writes, in a DAG bundle of their own, loaded as the DAG processor would for dag.test()."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.helpers import dagbag_class


def dag_bundle(folder: Path, name: str, monkeypatch) -> Callable[[str, str], Any]:
    """Make ``folder`` (created here) a DAG bundle called ``name``, beside the default ``dags-folder``; return
    ``load(dag_id, source)``, which writes ``source`` (dedented) to ``<dag_id>.py`` there and returns that DAG
    (None: the file defines no DAG of that id)."""
    folder.mkdir()
    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {},
        },
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(folder), "refresh_interval": 0},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))

    def load(dag_id: str, source: str) -> Any:
        from deyel_provider.compat import AIRFLOW_VERSION

        path = folder / f"{dag_id}.py"
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        if AIRFLOW_VERSION < (3, 1):
            # As conftest does for the examples: 3.0's dag.test() does not register the DAG's assets.
            subprocess.run(
                [sys.executable, "-m", "airflow", "dags", "reserialize", "-B", name],
                check=True,
                capture_output=True,
            )
        return dagbag_class()(dag_folder=str(path)).get_dag(dag_id)

    return load
