"""DeyelExtractOperator: a form's instances to a file or object, incrementally, at any volume."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from deyel_provider.api.dates import iso_moment
from deyel_provider.api.search import check_search
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.assets import declared_assets, default_asset, templated
from deyel_provider.extract.formats.base import DEFAULT_MAX_COLUMNS
from deyel_provider.extract.partitions import warn_if_output_is_not_partitioned
from deyel_provider.extract.parts import check_output_name
from deyel_provider.extract.progress import Progress
from deyel_provider.extract.resume import resume_spec
from deyel_provider.extract.run import extract
from deyel_provider.extract.run_window import WindowOwner, choose_run_window
from deyel_provider.extract.spec import OutputSpec, ReadSpec, WindowSpec, check_output_options
from deyel_provider.extract.templates import template_error
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.concurrency import Workers
from deyel_provider.storage.paths import as_storage_path
from deyel_provider.storage.publish import check_output_folder

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context


class DeyelExtractOperator(BaseOperator):
    """Extract a form's instances to a file or object-store object: every instance exactly once, or a failure.

    The contract (docs/extraction.md says more):

    1. In one output file, every instance that matches ``search`` (and the run's window) for the whole run
       appears exactly once; one changed during the run appears once (before or after the change); one
       created or deleted during the run at most once.
    2. Across consecutive incremental runs, an instance whose change falls in a run's window is in that
       run's file or a later one, never in none.
    3. Where the server's answers do not allow 1 and 2 (counts that disagree, an ignored page parameter,
       a form changing faster than it can be read), the task fails with a typed ``DeyelError`` naming what
       it saw and the option to change, and publishes nothing.

    Incremental files cannot carry deletes (a deleted instance is no longer listed) nor instances edited
    out of ``search`` (the window of that edit lists only matches): a periodic full load carries both.

    The form is read through time slices of ``incremental_field`` (``dtLastUpdate``, which Deyel moves to
    the present on every write), not by page offsets, so an edit elsewhere cannot shift what is read.
    Slices are streamed to ``<output>.tmp-<uuid>`` (memory holds a few responses) and the object is moved
    under its final name only when complete. A retry of a split output (``max_file_bytes``) continues after
    the parts an earlier attempt of the run completed, once verified (docs/extraction.md, "Resume").

    Windows: in a partitioned run (Airflow 3.2+, ``CronPartitionTimetable``), the period its partition key
    names, and the Asset event carries the key (docs/extraction.md, "Partitioned runs"). With a data
    interval (``CronDataIntervalTimetable``, backfills), the interval ``[start, end)``. Without one
    (``schedule="@daily"`` is a ``CronTriggerTimetable``, manual and
    asset-triggered runs), a watermark: from the end of the last published window (or ``start_from`` on
    the first run) to the server's present; it is kept in Airflow (the asset's state on Airflow 3.3+, the
    asset event's extra before) and advanced only after the publish. A watermark belongs to its connection,
    DAG, task (and map index), form, field and search, unless ``watermark_key`` shares one on purpose. Each
    run's window is recorded before the publish: a cleared or retried run, whichever it is, reads exactly
    its own window again (the last 50 published windows are kept; clearing an older run is a typed error).
    Stored values carry a MAC from the connection's client secret: one that fails it, is out of range or
    lies after the server's present is a ``DeyelWatermarkError`` (reset: trigger one run with the conf
    ``{"deyel_watermark_reset": true}``; docs/extraction.md, "Watermarks"). ``incremental_field=None`` asks
    for a full load.

    Returns ``{"path", "parts", "records", "slices", "bytes", "seconds", "requests", "repeats",
    "window_start", "window_end", "window_start_iso", "window_end_iso", "mode", "skipped"}`` (the window in
    epoch ms and as ISO 8601 UTC, None where unbounded; ``mode``: ``interval``, ``watermark``, ``full`` or
    ``partition``, which adds ``partition_key``;
    ``parts``: the files published, ``{"path", "records", "bytes"}`` each; ``path``: the file, None when split
    or skipped) and emits ``asset`` with the same values as the event's extra, except when an empty run is
    skipped (``on_empty="skip"``): then no file is written and no event emitted.

    With the ``apache-airflow-providers-openlineage`` provider installed, it reports the form as its input
    (namespace ``deyel://<host>``, name ``forms/<FORM>``) and each published file as an output, with the
    columns written (schema facet), records and bytes (output statistics) and the window read.

    :param form: the form's identifier, e.g. ``CRM_ACCOUNT`` (templated).
    :param output: target ``ObjectStoragePath`` or URL, any fsspec protocol; a plain path is a local file,
        e.g. ``file:///data/deyel/{{ params.form }}/{{ ds }}.jsonl`` (templated, kept as ``output_path``
        because ``BaseOperator.output`` is the task's XComArg).
    :param search: Deyel filter, e.g. ``cdCountry=eq:AR`` (templated).
    :param incremental_field: the epoch-millisecond field every write moves to the present; it bounds each
        run's window and cuts the slices. None: a full load (still sliced on ``dtLastUpdate``) (templated).
    :param start_from: where the first watermark run starts (datetime or ISO 8601 string); required for
        runs without a data interval until a watermark is stored, and where a reset run starts (templated).
    :param watermark_key: share one watermark between tasks on purpose (e.g. a task moved to another DAG
        keeps its watermark by naming the same key in both); default: the watermark belongs to this
        connection, DAG, task and map index. Form, field and search are part of the key either way
        (templated).
    :param format: ``jsonl`` (one instance per line, as returned), ``csv`` or ``parquet`` (typed columns;
        the ``[parquet]`` extra) (templated).
    :param compression: JSON Lines and CSV: ``gzip`` or ``zstd`` (the ``[zstd]`` extra before Python
        3.14), the output name ending with ``.gz`` or ``.zst``; default none. Parquet: ``snappy`` (default),
        ``zstd``, ``gzip`` or ``none`` (templated).
    :param schema: Parquet column types by field, e.g. ``{"qtEmployee": "int64"}`` (``string``, ``int64``,
        ``float64``, ``bool``, ``timestamp``, ``json``); fields not declared are inferred
        (docs/extraction.md, "Parquet types").
    :param on_empty: ``write`` (default: an empty file, and the Asset event) or ``skip`` (no file, no event,
        ``"skipped": true`` in the XCom) when the run finds no instance.
    :param max_file_bytes: split the output into parts ``<stem>.part-00000<ext>``... of about this many bytes
        each (a part ends at the first page, or Parquet row group, that reaches it); a rerun replaces the
        whole set.
    :param row_group_bytes: Parquet: Arrow bytes per row group, about what memory holds (default 8 MiB).
    :param max_columns: CSV and Parquet: distinct columns the output may have (default 2000); a run that
        meets more (a server sending new field names per instance) fails with ``DeyelSchemaError`` and
        publishes nothing. JSON Lines lists at most this many keys for lineage.
    :param fields: CSV and Parquet columns (or JSON Lines keys) in order; default: every field, in
        first-seen order (templated).
    :param page_size: instances per response; default: the connection's ``page_size`` (100).
    :param max_workers: slices fetched in parallel (any paging strategy), or ``"auto"``: grows while the
        throughput grows, halves on a rate limit (429, ``REQUEST_LIMIT_EXCEEDED``).
    :param max_workers_ceiling: the most slices ``"auto"`` keeps in flight.
    :param asset: the Asset emitted on success; default: the output's location up to its first template
        (``file:///data/deyel/CRM_ACCOUNT/{{ ds }}.jsonl`` emits ``file:///data/deyel/CRM_ACCOUNT``).
    :param output_conn_id: Airflow connection of the object store (e.g. an ``aws`` connection for s3://).
    :param progress_interval: seconds between progress lines in the task log.
    :param token: the XCom value of a ``DeyelTokenOperator`` (templated, encrypted); see ``DeyelOperator``.
    :param deyel_conn_id: the ``deyel`` connection (templated).
    """

    template_fields: Sequence[str] = (
        "form",
        "output_path",
        "search",
        "incremental_field",
        "start_from",
        "watermark_key",
        "format",
        "compression",
        "fields",
        "token",
        "deyel_conn_id",
    )

    def __init__(
        self,
        *,
        form: str,
        output: str | ObjectStoragePath,
        search: str | None = None,
        incremental_field: str | None = "dtLastUpdate",
        start_from: datetime | str | None = None,
        watermark_key: str | None = None,
        format: str = "jsonl",
        compression: str | None = None,
        schema: dict[str, str] | None = None,
        on_empty: str = "write",
        max_file_bytes: int | None = None,
        row_group_bytes: int | None = None,
        max_columns: int = DEFAULT_MAX_COLUMNS,
        fields: Sequence[str] | None = None,
        page_size: int | None = None,
        max_workers: int | str = 1,
        max_workers_ceiling: int = 8,
        asset: Asset | None = None,
        output_conn_id: str | None = None,
        progress_interval: float = 30.0,
        token: Any = None,
        deyel_conn_id: str = DeyelHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        if not templated(format, compression):
            # Templated values are checked once rendered, at the start of execute.
            fields_now = fields if isinstance(fields, (list, tuple)) else None
            check_output_options(
                format,
                compression=compression,
                on_empty=on_empty,
                max_file_bytes=max_file_bytes,
                schema=schema,
                fields=fields_now,
                max_columns=max_columns,
            )
            if not templated(str(output)):
                name = str(output).rstrip().rsplit("/", 1)[-1]
                if name:
                    check_output_name(name, format, compression)
        else:
            check_output_options(
                "jsonl", on_empty=on_empty, max_file_bytes=max_file_bytes, max_columns=max_columns
            )
        if isinstance(search, str) and not templated(search):
            # A DAG with a mistyped separator fails to parse; a template or an XComArg (resolved at run
            # time) is checked once rendered, at execute.
            check_search(search)
        self.asset = asset if asset is not None else default_asset(output)
        outlets, inlets = declared_assets(
            self.asset, incremental_field, kwargs.pop("outlets", None), kwargs.pop("inlets", None)
        )
        super().__init__(outlets=outlets, inlets=inlets, **kwargs)
        self.form = form
        # ``output`` is BaseOperator's XComArg property: the rendered target lives in ``output_path``.
        self.output_path = output
        # The text as written, for the partitioned-run check once output is rendered.
        self._output_template = output
        self.search = search
        self.incremental_field = incremental_field
        self.start_from = start_from
        self.watermark_key = watermark_key
        self.format = format
        self.compression = compression
        self.schema = schema
        self.on_empty = on_empty
        self.max_file_bytes = max_file_bytes
        self.row_group_bytes = row_group_bytes
        self.max_columns = max_columns
        self.fields = fields
        self.page_size = page_size
        self.max_workers = max_workers
        self.max_workers_ceiling = max_workers_ceiling
        # Checked here, once, when the DAG is parsed; the run takes it as is.
        self.workers = Workers(max_workers, max_workers_ceiling)
        self.output_conn_id = output_conn_id
        self.progress_interval = progress_interval
        self.token = token
        self.deyel_conn_id = deyel_conn_id

    @cached_property
    def hook(self) -> DeyelHook:
        return DeyelHook(deyel_conn_id=self.deyel_conn_id, token=self.token or None)

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Map this operator (``.partial(...).expand(form=[...])``) with its asset declared at parse time.

        A mapped task runs ``__init__`` only when it runs: the asset computed there would be missing from
        the parsed DAG, so the scheduler would not know the task produces it. It is computed here instead,
        from ``asset=`` or a non-expanded ``output``; with an expanded ``output``, pass ``asset=``.
        """
        asset, output = kwargs.get("asset"), kwargs.get("output")
        if asset is None:
            if not isinstance(output, (str, ObjectStoragePath)):
                raise DeyelConfigError(
                    "DeyelExtractOperator.partial(): with 'output' expanded (or an XComArg), the task's "
                    "asset cannot be known when the DAG is parsed; pass asset=Asset(...) to partial() (e.g. "
                    "the output's folder)"
                )
            asset = default_asset(output)
        outlets, inlets = declared_assets(
            asset,
            kwargs.get("incremental_field", "dtLastUpdate"),
            kwargs.pop("outlets", None),
            kwargs.pop("inlets", None),
        )
        return super().partial(outlets=outlets, inlets=inlets, **kwargs)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Airflow's rendering, with a template error in ``output`` named so (not ``output_path``)."""
        jinja_env = jinja_env or self.get_template_env()
        if isinstance(self.output_path, str) and templated(self.output_path):
            try:
                self.render_template(self.output_path, context, jinja_env)
            except Exception as exc:
                raise DeyelConfigError(template_error("output", self.output_path, exc)) from exc
        super().render_template_fields(context, jinja_env)

    def execute(self, context: Context) -> dict[str, Any]:
        # Mistakes that would cost data (an empty file published for a mistyped search) or fail after the
        # whole read (a folder this worker cannot write): refused before the first request.
        check_search(self.search)
        check_output_folder(as_storage_path(self.output_path, self.output_conn_id), parameter="output")
        field = self.incremental_field or None
        chosen = choose_run_window(
            context,
            WindowOwner(
                self.form,
                field,
                self.search or None,
                self.deyel_conn_id,
                self.task_id,
                self.watermark_key,
                self.start_from,
            ),
            self.asset,
            self.hook.config,
        )
        mode, start, end, run, partition = chosen.mode, chosen.start, chosen.end, chosen.run, chosen.partition
        if partition is not None:
            warn_if_output_is_not_partitioned(self._output_template, self.output_path, partition.key)
        result = extract(
            self.hook,
            ReadSpec(
                self.form,
                search=self.search or None,
                field=field or "dtLastUpdate",
                page_size=self.page_size,
                max_workers=self.workers,
            ),
            OutputSpec(
                self.output_path,
                format=self.format,
                compression=self.compression or None,
                fields=self.fields,
                schema=self.schema,
                on_empty=self.on_empty,
                max_file_bytes=self.max_file_bytes,
                row_group_bytes=self.row_group_bytes,
                max_columns=self.max_columns,
                output_conn_id=self.output_conn_id,
            ),
            # A re-read of a recorded window has its end; a new watermark window ends at the server's present.
            WindowSpec(start, end, end_at_server_time=run is not None and end is None),
            progress=Progress(self.progress_interval, self.log),
            before_publish=run.record if run is not None else None,
            # A retry continues after the parts an earlier attempt staged (docs/extraction.md, "Resume").
            resume=resume_spec(
                context,
                self.hook.config,
                form=self.form,
                field=field or "dtLastUpdate",
                search=self.search or None,
                conn_id=self.deyel_conn_id,
                task_id=self.task_id,
            ),
        )
        summary = {**result.as_dict(), "mode": mode}
        if partition is not None:
            summary["partition_key"] = partition.key
        if mode == "full":
            summary["window_start"] = summary["window_end"] = None
        # Beside the epoch ms (kept: consumers read them), the same moments as a person reads them.
        summary["window_start_iso"] = iso_moment(summary["window_start"])
        summary["window_end_iso"] = iso_moment(summary["window_end"])
        if run is not None:
            # After the publish: a failed run leaves the watermark where it was.
            newest = run.publish(summary)
            if newest is not None:
                self.log.info("watermark of %s at %s", self.form, iso_moment(newest))
        self._lineage = _LineageRecord(summary, result.columns, field, self.search or None)
        if result.skipped and self.asset is not None:
            # No file: no Asset event either, so nothing downstream runs on an empty extraction. Airflow
            # emits an event for every outlet of a successful task; this copy of the task (Airflow runs a
            # copy of the DAG's) drops its own.
            self.outlets = [outlet for outlet in self.outlets if outlet != self.asset]
            self.log.info("no file and no %s event: the run found no instance (on_empty='skip')", self.asset)
            return summary
        outlet_events = context.get("outlet_events")
        if self.asset is not None and outlet_events is not None:
            outlet_events[self.asset].extra = summary
            if partition is not None:
                partition.emit(outlet_events[self.asset])
        return summary

    # -- OpenLineage (used when apache-airflow-providers-openlineage is installed) -------------------------

    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        """The form as input, the output as it will be published (no statistics yet)."""
        from deyel_provider.extract.lineage import extract_lineage

        planned = None
        if self.max_file_bytes is None:  # the parts' names are known once written
            planned = str(as_storage_path(self.output_path, self.output_conn_id))
        return extract_lineage(self.hook.config.base_url, self.form, planned_output=planned)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The form as input (with the window read), every published file with its schema and statistics."""
        from deyel_provider.extract.lineage import extract_lineage

        run: _LineageRecord | None = getattr(self, "_lineage", None)
        if run is None:  # the run failed before publishing: what was planned
            return self.get_openlineage_facets_on_start()
        return extract_lineage(
            self.hook.config.base_url,
            self.form,
            summary=run.summary,
            columns=run.columns,
            field=run.field,
            search=run.search,
        )


class _LineageRecord:
    """What a finished run tells OpenLineage (kept on the task, which the listener is given)."""

    def __init__(
        self, summary: dict[str, Any], columns: list[dict[str, Any]], field: str | None, search: str | None
    ):
        self.summary = summary
        self.columns = columns
        self.field = field
        self.search = search
