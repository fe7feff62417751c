"""Which instances left a form (or its ``search``) between two runs: the ids now against a stored snapshot.

Incremental files carry changes, never deletes: a deleted instance is no longer listed, and one edited out of
``search`` is listed only where it no longer matches. This engine lists the ids of every instance matching
``search`` now (through :meth:`DeyelHook.iter_instances`, the exactly-once sliced reader: a read it cannot
prove complete is a typed ``DeyelError`` here too), compares them with the previous run's snapshot, writes
the ids that disappeared as JSON Lines, then replaces the snapshot. Order matters:

1. a failed read publishes nothing: the old snapshot stays byte for byte (a page lost in transit must never
   make a live instance look deleted);
2. the output is published before the snapshot: a crash between the two reports the same ids again on the
   next run (a DELETE of a row already deleted changes nothing), never loses them;
3. a rerun of the run that wrote the snapshot (a retry after a later task failed, a clear) reads nothing and
   leaves its published output as it is: comparing the snapshot with itself would overwrite it empty.

Each line is ``{"<id_field>": "<id>", "gone_after": <ms>, "gone_by": <ms>}``: the instance was listed at some
moment at or after ``gone_after`` (the previous read's start) and was not listed at some moment before
``gone_by`` (this read's end), both epoch milliseconds UTC on the worker's clock, the unit of Deyel's
``dtLastUpdate``, so a consumer can keep a row changed after ``gone_by`` (it came back).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deyel_provider.api.instance_ids import LINKS, instance_id, missing_id
from deyel_provider.exceptions import DeyelConfigError, DeyelSnapshotError
from deyel_provider.read.id_snapshot import Identity, Snapshot, SnapshotCodec, SnapshotIds
from deyel_provider.storage import publish

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from deyel_provider.hooks.deyel import DeyelHook

log = logging.getLogger(__name__)

#: The largest snapshot file read (a form of 10M sequential ids stores in well under 1 MiB; 10M uuids in
#: about 400 MiB before compression).
DEFAULT_MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class DeletesSpec:
    form: str
    output: ObjectStoragePath
    snapshot: ObjectStoragePath
    search: str | None = None
    page_size: int | None = None
    max_workers: int | str = 1
    run_id: str = ""
    #: The task keeping the snapshot (see :class:`Identity`).
    owner: str = ""
    max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES


@dataclass(frozen=True)
class DeletesResult:
    gone: int
    listed: int
    previous: int | None
    gone_after: int | None
    gone_by: int
    output: str
    snapshot: str
    rerun: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "gone": self.gone,
            "listed": self.listed,
            "previous": self.previous,
            "gone_after": self.gone_after,
            "gone_by": self.gone_by,
            "output": self.output,
            "snapshot": self.snapshot,
            "rerun": self.rerun,
        }


def output_key(id_field: str) -> str:
    """The key of the id in each output line (ids found only in links are written under the usual key)."""
    return "idObjectValue" if id_field == LINKS else id_field


def detect_deletes(hook: DeyelHook, spec: DeletesSpec) -> DeletesResult:
    config = hook.config
    identity = Identity(
        config.base_url, config.client_id, spec.form, spec.search or "", config.id_field, spec.owner
    )
    codec = SnapshotCodec(config.client_secret, config.token_url, config.client_id)
    previous = _previous(spec, codec, identity)
    if previous is not None and spec.run_id and previous.run_id == spec.run_id and spec.output.exists():
        log.info(
            "%s was written by this run already (%s): its %d gone ids are in %s; nothing read",
            spec.snapshot,
            spec.run_id,
            previous.gone,
            spec.output,
        )
        return DeletesResult(
            previous.gone, len(previous.ids), None, None, previous.finished_ms, str(spec.output),
            str(spec.snapshot), rerun=True,
        )  # fmt: skip

    started = _now_ms(hook)
    current = SnapshotIds()
    records = hook.iter_instances(
        spec.form,
        search=spec.search or None,
        fields=[config.id_field],
        page_size=spec.page_size,
        max_workers=spec.max_workers,
    )
    for record in records:
        ident = instance_id(record, config.id_field)
        if ident is None:
            raise DeyelConfigError(missing_id(config.id_field))
        current.add(ident)
    finished = _now_ms(hook)
    log.info("listed %d ids of %s (search %r)", len(current), spec.form, spec.search or "")

    key = output_key(config.id_field)
    gone = 0
    for target in (spec.output, spec.snapshot):
        target.parent.mkdir(parents=True, exist_ok=True)
    publish.remove_leftovers(spec.output)
    publish.remove_leftovers(spec.snapshot)
    temp = publish.temp_beside(spec.output)
    try:
        with temp.open("wb") as out:
            if previous is not None:
                for ident in previous.ids.missing_from(current):
                    line = {key: ident, "gone_after": previous.started_ms, "gone_by": finished}
                    out.write(json.dumps(line).encode() + b"\n")
                    gone += 1
        publish.check_targets(spec.output, [spec.output.name])
        temp.move(spec.output)
    except BaseException:
        publish.discard(temp)
        raise
    snapshot = Snapshot(current, identity, started, finished, spec.run_id, gone)
    temp = publish.temp_beside(spec.snapshot, private=True)
    try:
        with temp.open("wb") as out:
            out.write(codec.encode(snapshot))
        publish.check_targets(spec.snapshot, [spec.snapshot.name])
        temp.move(spec.snapshot)
    except BaseException:
        publish.discard(temp)
        raise
    if previous is None:
        log.info(
            "first snapshot of %s: %d ids; nothing to compare with, an empty output", spec.form, len(current)
        )
    else:
        log.info("%d of %d ids listed before are gone", gone, len(previous.ids))
    return DeletesResult(
        gone,
        len(current),
        None if previous is None else len(previous.ids),
        None if previous is None else previous.started_ms,
        finished,
        str(spec.output),
        str(spec.snapshot),
    )


def _previous(spec: DeletesSpec, codec: SnapshotCodec, identity: Identity) -> Snapshot | None:
    data = publish.read_own_file(spec.snapshot, spec.max_snapshot_bytes + 1, kind="id snapshot")
    if data is None:
        if publish.is_local(spec.snapshot) and os.path.lexists(spec.snapshot.path):
            # A link, a folder or another user's file where the snapshot should be: taking it for a first
            # run would start over and never report the deletes since the real snapshot.
            raise DeyelSnapshotError(
                f"the id snapshot at {spec.snapshot} is not a regular file of this user (a link, a folder, "
                f"another user's file); nothing was reported and it was left as it is"
            )
        return None
    if len(data) > spec.max_snapshot_bytes:
        raise DeyelSnapshotError(
            f"the id snapshot at {spec.snapshot} is larger than max_snapshot_bytes "
            f"({spec.max_snapshot_bytes}); nothing was reported and the file was left as it is"
        )
    return codec.decode(data, identity, str(spec.snapshot))


def _now_ms(hook: DeyelHook) -> int:
    return int(hook.clock() * 1000)
