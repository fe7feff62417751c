"""Apache Airflow provider for Deyel."""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    from deyel_provider._provider_info import PROVIDER_INFO

    return PROVIDER_INFO
