"""The Airflow names whose home moved between 3.0 and 3.3, imported from where this Airflow has them.

Supported: Airflow 3.0 to 3.3 (``make compat`` tests the latest patch of each). The newest public location
is tried first; the older one only where 3.0 or 3.1 lack it. No Airflow 2 locations.
"""

from __future__ import annotations

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
    "mask_secret",
]


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


AIRFLOW_VERSION: tuple[int, int] = _minor(airflow.__version__)
#: Airflow 3.2+ renders the connection form from ``conn-fields`` in get_provider_info(); 3.0 and 3.1 only
#: from the hook's get_ui_field_behaviour() (and only with wtforms installed, e.g. by the FAB provider).
HAS_CONN_FIELDS: bool = AIRFLOW_VERSION >= (3, 2)
