"""deyel_extract_group: one extraction fanned out over many tasks: plan, a mapped read per slice, commit."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from airflow.sdk import ObjectStoragePath, TaskGroup, get_current_context, task

from deyel_provider.api.dates import iso_moment
from deyel_provider.api.search import check_search
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.extract.assets import default_asset, templated
from deyel_provider.extract.fan_out import (
    check_parts,
    check_slices,
    commit_parts,
    manifest_of,
    plan_slices,
    read_part,
    read_tail,
)
from deyel_provider.extract.partitions import partition_window, warn_if_output_is_not_partitioned
from deyel_provider.extract.parts import check_output_name
from deyel_provider.extract.progress import Progress
from deyel_provider.extract.run_window import WindowOwner, choose_run_window, watermark_run
from deyel_provider.extract.spec import OutputSpec, ReadSpec, WindowSpec, check_output_options
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.concurrency import Workers
from deyel_provider.storage.paths import as_storage_path
from deyel_provider.storage.publish import check_output_folder

#: The XCom key of the window the plan chose (its return value is the slices, which the reads map over).
WINDOW_XCOM = "window"
#: The options of ``DeyelExtractOperator`` the group takes (``max_workers``: per part).
OPTIONS: tuple[str, ...] = (
    "compression",
    "schema",
    "row_group_bytes",
    "max_columns",
    "fields",
    "page_size",
    "max_workers",
    "max_workers_ceiling",
    "asset",
    "output_conn_id",
    "progress_interval",
    "token",
    "watermark_key",
)


def deyel_extract_group(
    group_id: str,
    *,
    form: str,
    output: str | ObjectStoragePath,
    parts: int,
    search: str | None = None,
    incremental_field: str | None = "dtLastUpdate",
    start_from: datetime | str | None = None,
    format: str = "jsonl",
    deyel_conn_id: str = DeyelHook.default_conn_name,
    **options: Any,
) -> TaskGroup:
    """Extract a form's instances as ``DeyelExtractOperator`` does, read by up to ``parts`` tasks at once.

    Three tasks: ``plan`` chooses the run's window as the operator does (partition, data interval or
    watermark, with the same keys, ownership and server-clock rules; the watermark belongs to the group)
    and cuts it into at most ``parts`` slices of about equal instance counts; ``read``, mapped over the
    slices, writes each slice to a staged part beside the output (nothing under the final names); ``commit``
    checks every part (there, its size and record count), publishes them as ``max_file_bytes`` parts
    (``<stem>.part-00000<ext>``..., the manifest ``<name>.parts.json`` last), emits one Asset event and
    advances the watermark once. A retried or cleared ``read`` rewrites its own part only; a cleared
    ``commit`` publishes the same set. docs/extraction.md, "One extraction over many workers".

    :param group_id: the group's id; its tasks are ``<group_id>.plan``, ``.read``, ``.commit``.
    :param form: the form's identifier (templated).
    :param output: the output as named for ``DeyelExtractOperator`` (templated); the parts are named after it.
    :param parts: the most slices (and read tasks) the window is cut into, 1 to 1000.
    :param search: Deyel filter (templated).
    :param incremental_field: the field that bounds the window and cuts the slices; ``None``: a full load
        (still cut on ``dtLastUpdate``; the commit reads what changed since the plan, once, as a last part).
    :param start_from: where the first watermark run starts (templated).
    :param format: ``jsonl``, ``csv`` or ``parquet``; CSV and Parquet need ``fields`` (parts written apart
        must share their columns; a full load's, the connection's ``id_field`` among them).
    :param deyel_conn_id: the ``deyel`` connection (templated).
    :param options: ``DeyelExtractOperator``'s ``compression``, ``schema``, ``row_group_bytes``,
        ``max_columns``, ``fields``, ``page_size``, ``max_workers`` (per part), ``max_workers_ceiling``,
        ``asset``, ``output_conn_id``, ``progress_interval``, ``token``, ``watermark_key``.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise DeyelConfigError(
            f"deyel_extract_group() does not take {unknown}: its options are {list(OPTIONS)} "
            f"(the parts replace max_file_bytes; on_empty is 'write')"
        )
    check_parts(parts)
    fields = options.get("fields")
    compression = options.get("compression")
    if not templated(format, compression):
        check_output_options(
            format,
            compression=compression,
            schema=options.get("schema"),
            fields=fields if isinstance(fields, (list, tuple)) else None,
            max_columns=options.get("max_columns", 2000),
        )
        if format != "jsonl" and not fields:
            raise DeyelConfigError(
                f"deyel_extract_group with format={format!r} needs fields=[...]: parts written by "
                f"different tasks must share their columns"
            )
        if not templated(str(output)):
            check_output_name(str(output).rstrip().rsplit("/", 1)[-1], format, compression)
    if isinstance(search, str) and not templated(search):
        check_search(search)
    Workers(options.get("max_workers", 1), options.get("max_workers_ceiling", 8))
    asset = options.get("asset")
    asset = asset if asset is not None else default_asset(output)
    settings: dict[str, Any] = {
        "form": form,
        "output": output,
        "search": search,
        "incremental_field": incremental_field,
        "start_from": start_from,
        "format": format,
        "deyel_conn_id": deyel_conn_id,
        "parts": parts,
        **{name: value for name, value in options.items() if name != "asset"},
    }

    with TaskGroup(group_id) as group:
        owner_id = group.group_id or group_id

        @task(task_id="plan", inlets=[asset] if asset is not None else [])
        def plan(settings: dict[str, Any]) -> list[list[int]]:
            """Choose the run's window and cut it into slices of about equal counts (the XCom the reads map
            over); the window itself goes to the commit under the XCom key ``window``."""
            context: Any = get_current_context()
            hook = _hook(settings)
            check_search(settings["search"])
            check_output_folder(_target(settings), parameter="output")
            chosen = choose_run_window(context, _owner(settings, owner_id), asset, hook.config)
            if chosen.partition is not None:
                warn_if_output_is_not_partitioned(output, settings["output"], chosen.partition.key)
            # A watermark's new window, and a full load's parts, end at the server's settled present; the
            # present itself (a full load's) is read by the commit, once every part is written.
            to_present = chosen.mode == "full" or (chosen.run is not None and chosen.end is None)
            window = WindowSpec(chosen.start, chosen.end, end_at_server_time=to_present)
            planned = plan_slices(hook, _read_spec(settings), window, settings["parts"])
            if chosen.run is not None:
                chosen.run.record(planned["end"])  # before any part is read: a retry reads this window
            window_xcom = {
                **{k: v for k, v in planned.items() if k != "slices"},
                "mode": chosen.mode,
                "reread": chosen.run.rereads if chosen.run is not None else False,
                "partition_key": chosen.partition.key if chosen.partition is not None else None,
            }
            context["ti"].xcom_push(key=WINDOW_XCOM, value=window_xcom)
            return list(planned["slices"])

        # multiple_outputs=False: a dict return would also push each key as an XCom of its own, and Airflow
        # 3.0 refuses a None value there (the summary's "path" of a split output).
        @task(task_id="read", map_index_template="{{ deyel_part }}", multiple_outputs=False)
        def read(bounds: Sequence[int], settings: dict[str, Any]) -> dict[str, Any]:
            """Write one slice of the window to its staged part."""
            context: Any = get_current_context()
            number = int(context["ti"].map_index)
            context["deyel_part"] = f"part {number}: [{iso_moment(bounds[0])}, {iso_moment(bounds[1])})"
            interval = float(settings.get("progress_interval", 30.0))
            return read_part(
                _hook(settings),
                _read_spec(settings),
                _output_spec(settings),
                (int(bounds[0]), int(bounds[1])),
                number,
                _run_key(context, owner_id),
                Progress(interval),
            )

        @task(task_id="commit", outlets=[asset] if asset is not None else [], multiple_outputs=False)
        def commit(reads: Any, settings: dict[str, Any]) -> dict[str, Any]:
            """Check every part, publish them with the manifest last, emit the event, move the watermark."""
            context: Any = get_current_context()
            planned = context["ti"].xcom_pull(task_ids=f"{owner_id}.plan", key=WINDOW_XCOM)
            if not isinstance(planned, dict):
                raise DeyelConfigError(f"no window from {owner_id}.plan in this run: clear the whole group")
            started = time.monotonic()
            reads = list(reads)
            window = (planned["start"], planned["end"])
            check_slices(reads, window)  # before a full load's last part is read after them
            if planned["mode"] == "full":
                reads.append(
                    read_tail(
                        _hook(settings),
                        _read_spec(settings),
                        _output_spec(settings),
                        planned["end"],
                        reads,
                        _run_key(context, owner_id),
                    )
                )
            published = commit_parts(_output_spec(settings), _run_key(context, owner_id), reads, window)
            summary = _summary(planned, reads, published)
            summary["manifest"] = manifest_of(_output_spec(settings))
            summary["seconds"] = round(summary["seconds"] + time.monotonic() - started, 3)
            if planned["mode"] == "watermark" and asset is not None:
                hook = _hook(settings)
                run = watermark_run(context, _owner(settings, owner_id), asset, hook.config)
                run.adopt(planned["start"], planned["end"], reread=planned["reread"])
                run.publish(summary)  # after the publish, once: a failed commit leaves it where it was
            outlet_events = context.get("outlet_events")
            if asset is not None and outlet_events is not None:
                outlet_events[asset].extra = summary
                partition = partition_window(context) if planned["mode"] == "partition" else None
                if partition is not None:
                    partition.emit(outlet_events[asset])
            return summary

        planned = plan(settings)
        reads = read.partial(settings=settings).expand(bounds=planned)
        commit(reads, settings)
    return group


def _hook(settings: dict[str, Any]) -> DeyelHook:
    return DeyelHook(deyel_conn_id=settings["deyel_conn_id"], token=settings.get("token") or None)


def _target(settings: dict[str, Any]) -> Any:
    return as_storage_path(settings["output"], settings.get("output_conn_id"))


def _owner(settings: dict[str, Any], owner_id: str) -> WindowOwner:
    return WindowOwner(
        settings["form"],
        settings["incremental_field"],
        settings["search"] or None,
        settings["deyel_conn_id"],
        owner_id,
        settings.get("watermark_key"),
        settings.get("start_from"),
    )


def _read_spec(settings: dict[str, Any]) -> ReadSpec:
    return ReadSpec(
        settings["form"],
        search=settings["search"] or None,
        field=settings["incremental_field"] or "dtLastUpdate",
        page_size=settings.get("page_size"),
        max_workers=settings.get("max_workers", 1),
        max_workers_ceiling=settings.get("max_workers_ceiling", 8),
    )


def _output_spec(settings: dict[str, Any]) -> OutputSpec:
    return OutputSpec(
        settings["output"],
        format=settings["format"],
        compression=settings.get("compression") or None,
        fields=settings.get("fields"),
        schema=settings.get("schema"),
        row_group_bytes=settings.get("row_group_bytes"),
        max_columns=settings.get("max_columns", 2000),
        output_conn_id=settings.get("output_conn_id"),
    )


def _run_key(context: Any, owner_id: str) -> str:
    dag_run = context.get("dag_run")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(context.get("dag"), "dag_id", "")
    return f"{dag_id}\n{getattr(dag_run, 'run_id', '')}\n{owner_id}"


def _summary(
    planned: dict[str, Any], reads: list[dict[str, Any]], published: list[dict[str, Any]]
) -> dict[str, Any]:
    """The operator's XCom summary for the whole group (the same keys), and each part's reader
    (``part_tasks``) and the manifest (added by the commit)."""
    start, end = planned["start"], planned["end"]
    requests = planned["requests"] + sum(r["requests"] for r in reads)
    # The fewest requests each part could have made, added up (each part asks at least once).
    fewest = max(1, sum(r.get("min_requests", 1) for r in reads))
    summary: dict[str, Any] = {
        "path": None,
        "parts": published,
        "records": sum(r["records"] for r in reads),
        "slices": sum(r["slices"] for r in reads),
        "bytes": sum(p["bytes"] for p in published),
        "seconds": max((r["seconds"] for r in reads), default=0.0),
        "requests": requests,
        "min_requests": fewest,
        "requests_ratio": round(requests / fewest, 3),
        "repeats": sum(r["repeats"] for r in reads),
        "window_start": start,
        "window_end": end,
        "window_start_iso": iso_moment(start),
        "window_end_iso": iso_moment(end),
        "mode": planned["mode"],
        "skipped": False,
        "part_tasks": [
            {k: r[k] for k in ("number", "start", "end", "records", "requests", "host", "pid")} for r in reads
        ],
    }
    if planned["mode"] == "full":
        summary["window_start"] = summary["window_end"] = summary["window_start_iso"] = None
        summary["window_end_iso"] = None
    if planned.get("partition_key"):
        summary["partition_key"] = planned["partition_key"]
    return summary


__all__ = ["OPTIONS", "deyel_extract_group"]
