"""DeyelDeletedInstancesOperator: the instances that left a form, or its ``search``, since the last run."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from deyel_provider.extract.assets import default_asset
from deyel_provider.extract.deletes import DEFAULT_MAX_SNAPSHOT_BYTES, DeletesSpec, detect_deletes
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.concurrency import Workers

if TYPE_CHECKING:
    from airflow.sdk import Context


class DeyelDeletedInstancesOperator(BaseOperator):
    """Report the instances deleted from a form, or edited out of ``search``, since the previous run.

    Incremental extractions carry changes, never deletes: this operator is how a mirror learns them. It
    lists the id of every instance matching ``search`` now (the exactly-once sliced reader; ids only:
    decimal ids below 2**28 in a bitmap, 10M sequential ids cost about 1.25 MB; other ids, e.g. UUIDs, are
    spilled to sorted runs on disk in ``spill_dir``, 24 MiB of them in memory at a time), compares them
    with the snapshot the previous run stored at ``snapshot`` as both stream past (the memory does not grow
    with the number of ids: docs/extraction.md states the bound), publishes the ids that are gone to
    ``output`` as JSON Lines, one
    ``{"<id_field>": "<id>", "gone_after": <ms>, "gone_by": <ms>}`` per line (epoch milliseconds UTC on the
    server's clock, as Deyel's ``dtLastUpdate``: each a read's latest ``Date`` less ``settle_seconds``; a
    version stamped at or after ``gone_by`` may be one that came back), then replaces the snapshot unless a
    newer read's is stored (forward only), and emits ``asset`` with the counts as the event's extra.

    The first run stores a snapshot and publishes an empty output. A read that cannot be proven complete
    (a lost page, counts that disagree) fails with a typed ``DeyelError`` and leaves the previous snapshot as
    it was, so a missing page is never reported as deleted instances. The snapshot is authenticated with a
    key derived from the connection's client secret and names its connection, form, search and task: one
    written for anything else, or altered, or a link or foreign file at its name, fails the task with
    ``DeyelSnapshotError``. A rerun of any of the last 48 runs that published re-emits its output unchanged
    and reads nothing (give each run its own ``output``, e.g. named after ``{{ run_id }}``).
    Returns the counts (``gone``, ``listed``, ``previous``) and ``gone_after``/``gone_by``.

    :param form: the form's identifier, e.g. ``CRM_ACCOUNT`` (templated).
    :param output: where to publish the gone ids (JSON Lines; a local path, an fsspec URL or an
        ``ObjectStoragePath``), replaced atomically, e.g. ``file:///data/deletes/{{ ds }}.jsonl`` (templated).
    :param snapshot: where the ids of the last run are kept, one file per form and search, e.g.
        ``file:///data/deyel/CRM_ACCOUNT.ids`` (templated).
    :param search: Deyel filter the mirror follows, e.g. ``cdCountry=eq:AR``: an instance edited out of it is
        reported gone as a deleted one is (templated).
    :param page_size: instances per response; default: the connection's ``page_size``.
    :param max_workers: slices read in parallel, or ``"auto"``.
    :param max_snapshot_bytes: the largest snapshot file read.
    :param spill_dir: where a private folder (mode 0700, removed after the run) holds the sorted runs of the
        non-decimal ids and the new snapshot's body until it is published: about 50 bytes per UUID on disk,
        twice that at the peak. Default: the temp dir (``TMPDIR``); point it at a disk, not a RAM-backed
        ``tmpfs``, for forms of millions of such ids. Refused when another user owns it or others can
        write in it without the sticky bit; a killed run's folder there is removed by the next run.
    :param asset: the Asset emitted on success; default: the output's location up to its first template.
    :param output_conn_id: Airflow connection of the output's and snapshot's object store, if it needs one.
    :param deyel_conn_id: the ``deyel`` connection (templated).
    """

    template_fields: Sequence[str] = ("form", "output_path", "snapshot", "search", "deyel_conn_id")

    def __init__(
        self,
        *,
        form: str,
        output: str | ObjectStoragePath,
        snapshot: str | ObjectStoragePath,
        search: str | None = None,
        page_size: int | None = None,
        max_workers: int | str = 1,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        spill_dir: str | None = None,
        asset: Asset | None = None,
        output_conn_id: str | None = None,
        deyel_conn_id: str = DeyelHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        Workers(max_workers)
        self.asset = asset if asset is not None else default_asset(output)
        outlets = kwargs.pop("outlets", None)
        outlets = list(outlets) if isinstance(outlets, (list, tuple)) else [outlets] if outlets else []
        if self.asset is not None and self.asset not in outlets:
            outlets.append(self.asset)
        super().__init__(outlets=outlets, **kwargs)
        self.form = form
        # ``output`` is BaseOperator's XComArg property: the rendered target lives in ``output_path``.
        self.output_path = output
        self.snapshot = snapshot
        self.search = search
        self.page_size = page_size
        self.max_workers = max_workers
        self.max_snapshot_bytes = max_snapshot_bytes
        self.spill_dir = spill_dir
        self.output_conn_id = output_conn_id
        self.deyel_conn_id = deyel_conn_id

    @cached_property
    def hook(self) -> DeyelHook:
        return DeyelHook(deyel_conn_id=self.deyel_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        spec = DeletesSpec(
            form=self.form,
            output=self._path(self.output_path),
            snapshot=self._path(self.snapshot),
            search=self.search or None,
            page_size=self.page_size,
            max_workers=self.max_workers,
            run_id=str(context.get("run_id") or ""),
            owner=self._owner(context),
            max_snapshot_bytes=self.max_snapshot_bytes,
            spill_dir=self.spill_dir,
        )
        summary = detect_deletes(self.hook, spec).as_dict()
        outlet_events = context.get("outlet_events")
        if self.asset is not None and outlet_events is not None:
            outlet_events[self.asset].extra = summary
        return summary

    def _owner(self, context: Context) -> str:
        map_index = getattr(context.get("ti"), "map_index", -1)
        owner = f"{self.dag_id}.{self.task_id}"
        return f"{owner}[{map_index}]" if isinstance(map_index, int) and map_index >= 0 else owner

    def _path(self, value: str | ObjectStoragePath) -> ObjectStoragePath:
        if isinstance(value, ObjectStoragePath):
            return value
        text = str(value)
        if "://" not in text:
            text = "file://" + text
        return ObjectStoragePath(text, conn_id=self.output_conn_id)
