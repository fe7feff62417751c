"""Template errors that name the parameter the user wrote, and say what to use on runs without a logical
date (Airflow 3's manual and asset-triggered runs)."""

from __future__ import annotations

#: Context names Airflow 3 sets only for runs with a logical date (not manual or asset-triggered ones).
_LOGICAL_DATE_NAMES = ("ts_nodash", "ts", "ds", "ds_nodash", "logical_date", "data_interval")


def template_error(parameter: str, template: str, exc: Exception) -> str:
    """The message of a template that does not render, naming the parameter the user wrote."""
    message = f"{parameter}: the template {template!r} cannot be rendered in this run: {exc}"
    if any(name in str(exc) for name in _LOGICAL_DATE_NAMES):
        message += (
            " (Airflow 3 sets ds, ts, ts_nodash, logical_date and data_interval_* only for runs with a "
            "logical date; manual and asset-triggered runs may have none: use {{ dag_run.run_after | "
            "ts_nodash }} or {{ run_id }}, set in every run)"
        )
    return message
