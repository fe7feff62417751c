"""Constants and small helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json

# The documented example credentials, which the emulator accepts by default.
CLIENT_ID = "DEYELBOT"
CLIENT_SECRET = "BOTDEYEL312!"

#: Connection extras that keep the retry policy's attempts but shrink its waits to milliseconds.
FAST_RETRY = {"retry_backoff": 0.001, "retry_max_backoff": 0.01, "retry_after_max": 0.05}


def connection_json(url: str, **extra) -> str:
    return json.dumps(
        {"conn_type": "deyel", "host": url, "login": CLIENT_ID, "password": CLIENT_SECRET, "extra": extra}
    )


def airflow_secrets_masker():
    """Airflow's process-wide secrets masker (the one ``mask_secret`` fills), wherever this version has it."""
    try:
        from airflow.sdk.log import _secrets_masker  # 3.3
    except ImportError:
        try:
            from airflow.sdk._shared.secrets_masker import _secrets_masker  # 3.1, 3.2
        except ImportError:
            from airflow.sdk.execution_time.secrets_masker import _secrets_masker  # 3.0
    return _secrets_masker()


def dagbag_class():
    """Airflow's DagBag (moved to airflow.dag_processing in 3.1)."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # 3.0
        from airflow.models.dagbag import DagBag
    return DagBag


def as_airflow_logs_it(text: str) -> str:
    """``text`` after what Airflow's log pipeline does to every line: its JWT pattern, then its masker."""
    from airflow.sdk._shared.logging.structlog import redact_jwt

    event = redact_jwt(None, "info", {"event": text})["event"]
    return str(airflow_secrets_masker().redact(event))
