"""Shared fixtures: an isolated Airflow home, the Deyel emulator over real HTTP, connections from env vars."""

from __future__ import annotations

import json
import os
import tempfile

# Airflow reads its home and settings at import time: isolate them before anything imports airflow.
_HOME = tempfile.mkdtemp(prefix="deyel-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# Where the example extraction DAG writes (read when the DAG file is imported).
os.environ["DEYEL_DEMO_OUTPUT"] = os.path.join(_HOME, "extract-output")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(os.path.dirname(__file__), "..", "dags_examples")

import pytest  # noqa: E402

from deyel_provider.emulator import run_emulator  # noqa: E402
from tests.helpers import connection_json  # noqa: E402


@pytest.fixture
def emulator():
    """A fresh emulator per test, so token counters and the process token cache key start clean."""
    with run_emulator(records=50) as running:
        yield running


@pytest.fixture
def deyel_conn(emulator, monkeypatch):
    """``deyel_default`` pointing at the emulator; returns a function to define more connections."""

    def define(conn_id: str = "deyel_default", *, url: str | None = None, **fields) -> str:
        body = json.loads(connection_json(url or emulator.url))
        extra = fields.pop("extra", {})
        body.update(fields)
        body["extra"] = extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
        return conn_id

    define()
    return define
