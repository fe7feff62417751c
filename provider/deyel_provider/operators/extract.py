"""DeyelExtractOperator: a form's instances to a file or object, incrementally, at any volume."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extraction import epoch_ms, extract, window_search
from deyel_provider.formats import FORMATS
from deyel_provider.hooks.deyel import DeyelHook

if TYPE_CHECKING:
    from airflow.sdk import Context

_TEMPLATE_START = re.compile(r"{{|{%")


class DeyelExtractOperator(BaseOperator):
    """Extract a form's instances to a file or object-store object, one run's data interval at a time.

    Pages are streamed to ``<output>.tmp-<uuid>`` as they arrive (memory holds one page, or ``max_workers``
    pages) and the object is moved under its final name only when complete, so a failed or killed run leaves
    nothing under that name and a rerun of the same interval rewrites the same content.

    With ``incremental_field`` and a data interval, ``field=gte:<start>,field=lt:<end>`` (epoch ms) is added
    to ``search``: consecutive runs neither miss nor repeat a record. Without a data interval (or with
    ``incremental_field=None``) it is a full load.

    Returns ``{"path", "records", "pages", "bytes", "seconds", "window"}`` and emits ``asset`` with the
    same values as the event's extra.

    :param form: the form's identifier, e.g. ``CRM_ACCOUNT`` (templated).
    :param output: target ``ObjectStoragePath`` or URL, any fsspec protocol; a plain path is a local file,
        e.g. ``file:///data/deyel/{{ params.form }}/{{ ds }}.jsonl`` (templated, kept as ``output_path``
        because ``BaseOperator.output`` is the task's XComArg).
    :param search: Deyel filter, e.g. ``cdCountry=eq:AR`` (templated).
    :param incremental_field: date field (epoch ms) that bounds each run to its data interval; None for
        full loads (templated).
    :param format: ``jsonl`` (one instance per line, as returned) or ``csv`` (templated).
    :param fields: CSV columns (or JSON Lines keys) in order; default: every field, in first-seen order
        (templated).
    :param page_size: instances per page; default: the connection's ``page_size`` (100).
    :param max_workers: pages fetched in parallel (page or offset paging with a total count); output order
        stays the server's.
    :param asset: the Asset emitted on success; default: the output's location up to its first template
        (``file:///data/deyel/CRM_ACCOUNT/{{ ds }}.jsonl`` emits ``file:///data/deyel/CRM_ACCOUNT``).
    :param output_conn_id: Airflow connection of the object store (e.g. an ``aws`` connection for s3://).
    :param progress_interval: seconds between progress lines in the task log.
    :param token: the XCom value of a ``DeyelTokenOperator`` (templated, encrypted); see ``DeyelOperator``.
    :param deyel_conn_id: the ``deyel`` connection.
    """

    template_fields: Sequence[str] = (
        "form",
        "output_path",
        "search",
        "incremental_field",
        "format",
        "fields",
        "token",
    )

    def __init__(
        self,
        *,
        form: str,
        output: str | ObjectStoragePath,
        search: str | None = None,
        incremental_field: str | None = "dtLastUpdate",
        format: str = "jsonl",
        fields: Sequence[str] | None = None,
        page_size: int | None = None,
        max_workers: int = 1,
        asset: Asset | None = None,
        output_conn_id: str | None = None,
        progress_interval: float = 30.0,
        token: Any = None,
        deyel_conn_id: str = DeyelHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        if format not in FORMATS and not _TEMPLATE_START.search(format):
            raise DeyelConfigError(f"format must be one of {list(FORMATS)}, got {format!r}")
        if max_workers < 1:
            raise DeyelConfigError(f"max_workers must be >= 1, got {max_workers!r}")
        self.asset = asset if asset is not None else default_asset(output)
        outlets = list(kwargs.pop("outlets", None) or [])
        if self.asset is not None and self.asset not in outlets:
            outlets.append(self.asset)
        super().__init__(outlets=outlets, **kwargs)
        self.form = form
        # ``output`` is BaseOperator's XComArg property: the rendered target lives in ``output_path``.
        self.output_path = output
        self.search = search
        self.incremental_field = incremental_field
        self.format = format
        self.fields = fields
        self.page_size = page_size
        self.max_workers = max_workers
        self.output_conn_id = output_conn_id
        self.progress_interval = progress_interval
        self.token = token
        self.deyel_conn_id = deyel_conn_id

    @cached_property
    def hook(self) -> DeyelHook:
        return DeyelHook(deyel_conn_id=self.deyel_conn_id, token=self.token or None)

    def execute(self, context: Context) -> dict[str, Any]:
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        incremental = bool(self.incremental_field) and start is not None and end is not None and start < end
        search = window_search(self.search, self.incremental_field, start, end)
        if incremental:
            self.log.info("incremental load: %s in [%s, %s)", self.incremental_field, start, end)
        else:
            self.log.info("full load (no incremental field or no data interval)")
        result = extract(
            self.hook,
            self.form,
            self.output_path,
            search=search or None,
            fields=self.fields,
            format=self.format,
            page_size=self.page_size,
            max_workers=self.max_workers,
            output_conn_id=self.output_conn_id,
            progress_interval=self.progress_interval,
            logger=self.log,
        )
        summary = result.as_dict()
        summary["window"] = [epoch_ms(start), epoch_ms(end)] if incremental and start and end else None
        outlet_events = context.get("outlet_events")
        if self.asset is not None and outlet_events is not None:
            outlet_events[self.asset].extra = summary
        return summary


def default_asset(output: str | ObjectStoragePath) -> Asset | None:
    """The output's location up to its first template, as an Asset a downstream DAG can be scheduled on."""
    text = str(output).strip()
    match = _TEMPLATE_START.search(text)
    if match:
        text = text[: match.start()].rsplit("/", 1)[0]
    if "://" not in text:
        if not text.startswith("/"):
            return None  # a relative local path has no stable location to name
        text = "file://" + text
    text = text.rstrip("/")
    rest = text.partition("://")[2]
    return Asset(text) if rest.strip("/") else None
