"""The Airflow names whose home moved between 3.0 and 3.3, imported from where this Airflow has them.

Supported: Airflow 3.0 to 3.3 (``make compat`` tests the latest patch of each). The newest public location
is tried first; the older one only where 3.0 or 3.1 lack it. No Airflow 2 locations.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import airflow

if TYPE_CHECKING:
    from airflow.sdk import BaseHook
    from airflow.sdk.configuration import conf
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
    )
    from airflow.sdk.log import mask_secret
else:
    try:
        from airflow.sdk import BaseHook
    except ImportError:  # 3.0: the Task SDK had no BaseHook yet
        from airflow.hooks.base import BaseHook
    try:
        from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException
    except ImportError:  # 3.0
        from airflow.exceptions import AirflowException, AirflowNotFoundException
    try:
        from airflow.sdk.exceptions import (
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
            AirflowTaskTimeout,
        )
    except ImportError:  # 3.0, 3.1
        from airflow.exceptions import (
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
            AirflowTaskTimeout,
        )
    try:
        from airflow.sdk import conf
    except ImportError:  # 3.0, 3.1: the Task SDK did not export its configuration yet
        from airflow.configuration import conf
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # early 3.0 patches
        from airflow.sdk.execution_time.secrets_masker import mask_secret

__all__ = [
    "AIRFLOW_VERSION",
    "HAS_CONN_FIELDS",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "BaseHook",
    "conf",
    "is_temporary_test_conn_id",
    "mask_secret",
]


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


AIRFLOW_VERSION: tuple[int, int] = _minor(airflow.__version__)
#: Airflow 3.2+ renders the connection form from ``conn-fields`` in get_provider_info(); 3.0 and 3.1 only
#: from the hook's get_ui_field_behaviour() (and only with wtforms installed, e.g. by the FAB provider).
HAS_CONN_FIELDS: bool = AIRFLOW_VERSION >= (3, 2)

#: The id Airflow's ``POST /api/v2/connections/test`` (the UI's Test button, 3.0 to 3.3) gives the copy of the
#: connection it tests: ``airflow.utils.strings.get_random_string()``, 8 letters and digits, exported as
#: ``AIRFLOW_CONN_<ID>`` for the test's duration. The user's own id is in the request body only; the hook
#: never sees it. (The worker-side test of ``enqueue-test`` and ``airflow connections test`` use the real id.)
_TEMPORARY_TEST_ID = re.compile(r"[A-Za-z0-9]{8}")


def is_temporary_test_conn_id(conn_id: str) -> bool:
    """True when ``conn_id`` looks like the random id of the UI's Test button, not one a user chose.

    A user's own 8-letter id defined by an environment variable also matches: it is then not named either,
    which costs a message a detail, never shows a wrong id.
    """
    return bool(_TEMPORARY_TEST_ID.fullmatch(conn_id)) and f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ
