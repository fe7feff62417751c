"""Apache Airflow provider for Deyel."""

from __future__ import annotations

from deyel_provider._version import __version__

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict:
    from deyel_provider._provider_info import PROVIDER_INFO

    return PROVIDER_INFO
