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
3. a rerun of any of the last runs that published (a retry after a later task failed, a clear, even after
   later runs) reads nothing and re-emits the output it published, unchanged (the snapshot remembers each
   run's output and digest); reading again would compare the form with a later snapshot and overwrite it;
4. the snapshot only moves forward: one stored by a read newer than this one (two attempts at once) is kept,
   checked again right before the rename.

Memory does not grow with the ids: decimal ones are bits, the others spill to sorted runs on disk
(:class:`~deyel_provider.read.id_runs.CurrentIds`), and the previous snapshot is read beside them as a stream
(:func:`~deyel_provider.read.id_snapshot_body.compare`); docs/extraction.md states the bound.

Each line is ``{"<id_field>": "<id>", "gone_after": <ms>, "gone_by": <ms>}``, both epoch milliseconds UTC on
the SERVER's clock, which stamps the ``dtLastUpdate`` consumers compare them with: each is a read's settled
horizon (:meth:`SlicedReader.horizon <deyel_provider.read.slicing.SlicedReader.horizon>`: the latest ``Date``
of a response it accepted, less ``settle_seconds``; without a ``Date``, the worker's clock when it sent that
response's request, less a wider margin). The instance was listed by the read of horizon ``gone_after``; this
read saw no version of it matching ``search`` stamped before ``gone_by``, so a consumer keeps a row changed at
or after ``gone_by`` (it may have come back).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import closing
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING, Any, cast

from deyel_provider.api.instance_ids import LINKS, MAX_ID_LENGTH, instance_id, missing_id
from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError, DeyelSnapshotError
from deyel_provider.read.collector import heap_frozen
from deyel_provider.read.id_runs import CurrentIds
from deyel_provider.read.id_snapshot import (
    MAX_HEADER_BYTES,
    MAX_RUNS,
    Header,
    Identity,
    SnapshotCodec,
    Stamp,
    refused_body,
)
from deyel_provider.read.id_snapshot_body import BodyError, BodyWriter, compare
from deyel_provider.read.spill_room import RoomChecked, no_room, room_for_ids
from deyel_provider.storage import publish

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from deyel_provider.hooks.deyel import DeyelHook

log = logging.getLogger(__name__)

#: The largest snapshot file read (a form of 10M sequential ids stores in well under 1 MiB; 10M UUIDs in
#: 120 to 210 MiB).
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
    #: Where the non-decimal ids listed now are spilled in sorted runs (a private folder made there and
    #: removed after the run); None: the temp dir (``TMPDIR``).
    spill_dir: str | None = None


@dataclass(frozen=True)
class Previous:
    """The stored snapshot: its verified header and stamp, and the file, open, its body's digest checked."""

    header: Header
    stamp: Stamp
    source: IO[bytes]


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
    #: False: a newer read's snapshot was stored meanwhile and kept (this attempt's ids were dropped).
    snapshot_replaced: bool = True

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
            "snapshot_replaced": self.snapshot_replaced,
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
    previous = open_previous(spec, codec, identity)
    try:
        stamp = previous.stamp if previous is not None else None
        published = stamp.run(spec.run_id) if stamp is not None and spec.run_id else None
        if published is not None:
            return _rerun(spec, published)
        if stamp is not None and previous is not None and not stamp.runs and spec.run_id == stamp.run_id:
            # A snapshot from before runs were remembered: its own run re-emits its output, as it did then.
            if spec.run_id and spec.output.exists():
                entry = {"gone": stamp.gone, "listed": previous.header.count, "gone_by": stamp.finished_ms}
                return _rerun(spec, {**entry, "sha256": _digest(spec.output)})
        with CurrentIds(spec.spill_dir) as current:
            listed_at = _now_ms(hook)
            reader = hook.sliced_reader(
                spec.form, search=spec.search or None, page_size=spec.page_size, max_workers=spec.max_workers
            )
            pieces = reader.read(None, None)
            # closing(): an error here stops the read at once (see extract/run.py)
            with heap_frozen(), closing(pieces):  # a plain ``with``, left on any exit (read/collector.py)
                for piece in pieces:
                    idents = []
                    for record in piece.records:
                        ident = instance_id(record, config.id_field)
                        if ident is None:
                            raise DeyelConfigError(missing_id(config.id_field))
                        if len(ident) > MAX_ID_LENGTH:
                            raise _long_id(spec.form, config.id_field, len(ident))
                        idents.append(ident)
                    current.update(idents)
            # Both bounds on the SERVER's clock, which stamps the dtLastUpdate consumers compare them with.
            return compare_and_publish(spec, codec, identity, previous, current, reader.horizon(), listed_at)
    finally:
        if previous is not None:
            previous.source.close()


def _long_id(form: str, id_field: str, length: int) -> DeyelBadResponseError:
    # A merge holds one block per run: ids as long as a page would each be a run, held 64 at a time.
    return DeyelBadResponseError(
        f"listing the ids of {form}: an instance's id ({length} characters) is longer than {MAX_ID_LENGTH} "
        f"characters, the bound on an id (Deyel's are short numbers): a broken or hostile answer, or the "
        f"connection's id_field ({id_field!r}) names a key that is not the instance id. Nothing was "
        f"reported and the snapshot was left as it is; check id_field"
    )


def compare_and_publish(
    spec: DeletesSpec,
    codec: SnapshotCodec,
    identity: Identity,
    previous: Previous | None,
    current: CurrentIds,
    horizon: int,
    listed_at: int,
) -> DeletesResult:
    """Compare the ids listed now with ``previous`` as both stream past, publish the gone ids to the output,
    then the new snapshot (see the module for the order). Memory: ``current``'s bitmap and a few buffers."""
    stale = previous is not None and (horizon, listed_at) < previous.stamp.order()
    if stale:
        # Forward only: a read older than the stored snapshot compared with it would report nothing gone
        # for instances it listed before they were deleted (the newer run already reported them).
        log.warning(
            "%s is newer than this read (another attempt read after this one and published first): this "
            "attempt reports nothing and leaves it as it is",
            spec.snapshot,
        )
    compared = None if stale else previous
    gone_after = None if previous is None else horizon if stale else previous.stamp.started_ms
    key = output_key(identity.id_field)
    gone = 0
    digest = hashlib.sha256()

    def write_gone(ident: str) -> None:
        nonlocal gone
        data = json.dumps({key: ident, "gone_after": gone_after, "gone_by": horizon}).encode() + b"\n"
        digest.update(data)
        out.write(data)
        gone += 1

    for target in (spec.output, spec.snapshot):
        target.parent.mkdir(parents=True, exist_ok=True)
    publish.remove_leftovers(spec.output)
    publish.remove_leftovers(spec.snapshot)
    body_path = current.scratch("snapshot-body")
    temp = publish.temp_beside(spec.output)
    spill = repr(os.path.dirname(os.path.dirname(body_path)))
    beside = f"the folder of {str(spec.output)!r}"
    try:
        with (
            RoomChecked(temp.open("wb"), lambda: no_room("the gone ids", beside, _FREE_SPACE)) as out,
            RoomChecked(_private_file(body_path), lambda: room_for_ids(spill)) as body,
        ):
            writer = BodyWriter(cast("IO[bytes]", body))  # it only writes
            reader = None
            if compared is not None:
                compared.source.seek(compared.header.length + 1)
                reader = codec.reader(compared.source, compared.header)
            try:
                listed = compare(reader, current, writer, write_gone)
            except BodyError as exc:
                raise refused_body(str(spec.snapshot), exc) from None
            facts = writer.finish()
        publish.check_targets(spec.output, [spec.output.name])
        temp.move(spec.output)
    except BaseException:
        publish.discard(temp)
        raise
    log.info("listed %d ids of %s (search %r)", listed, spec.form, spec.search or "")
    before = None if previous is None else listed if stale else previous.header.count
    result = DeletesResult(gone, listed, before, gone_after, horizon, str(spec.output), str(spec.snapshot))
    runs = compared.stamp.runs if compared is not None else ()
    if spec.run_id:
        runs = _trimmed((*runs, {**result.as_dict(), "run_id": spec.run_id, "sha256": digest.hexdigest()}))
    stamp = Stamp(identity, horizon, horizon, spec.run_id, gone, listed_at, runs)
    replaced = _replace_snapshot(spec, codec, identity, codec.header_line(stamp, facts), body_path, stamp)
    if previous is None:
        log.info("first snapshot of %s: %d ids; nothing to compare with, an empty output", spec.form, listed)
    else:
        log.info("%d of %d ids listed before are gone", gone, before)
    return result if replaced else replace(result, snapshot_replaced=False)


#: What a full output folder needs (the spill folder's own advice is in read/spill_room.py).
_FREE_SPACE = "free space there (or raise the file size limit)"


def _private_file(path: str) -> IO[bytes]:
    """A new file of this user alone (in the spill folder, itself 0700)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")


def _replace_snapshot(
    spec: DeletesSpec, codec: SnapshotCodec, identity: Identity, header: bytes, body_path: str, stamp: Stamp
) -> bool:
    """Publish the snapshot (``header`` then the body written at ``body_path``) unless the one stored now is
    newer (an attempt that read later and published while this one was running): then leave it, log why,
    and return False. Checked again right before the rename, so the window where two publishers can cross
    is the rename itself."""
    temp = publish.temp_beside(spec.snapshot, private=True)
    beside = f"the folder of {str(spec.snapshot)!r}"
    try:
        with (
            no_room("the new snapshot", beside, _FREE_SPACE),
            temp.open("wb") as out,
            open(body_path, "rb") as body,
        ):
            out.write(header)
            while chunk := body.read(1 << 20):
                out.write(chunk)
        stored = _stored_header(spec, codec, identity)
        if stored is not None and stored.order() > stamp.order():
            log.warning(
                "%s was replaced meanwhile by a newer read (another attempt of this task, or another run, "
                "ran at the same time): it is kept, this attempt's ids are dropped (its output is published "
                "and true; the newer snapshot's run reports the rest). Keep max_active_runs=1",
                spec.snapshot,
            )
            publish.discard(temp)
            return False
        publish.check_targets(spec.snapshot, [spec.snapshot.name])
        temp.move(spec.snapshot)
    except BaseException:
        publish.discard(temp)
        raise
    return True


def _rerun(spec: DeletesSpec, published: dict[str, Any]) -> DeletesResult:
    """A run that published already (a retry, a clear, of any of the last runs): its output, unchanged.
    Reading again would compare the form with a later run's snapshot and overwrite what this run reported."""
    gone = int(published.get("gone", 0))
    if _digest(spec.output) != published.get("sha256"):
        if gone:
            raise DeyelSnapshotError(
                f"run {spec.run_id} reported {gone} gone ids to {published.get('output')}, and {spec.output} "
                f"no longer holds them (removed, or overwritten by another run: give each run its own "
                f"output, e.g. named after {{{{ run_id }}}}); they cannot be listed again. Restore the file, "
                f"or rebuild the mirror (docs/mirroring.md)"
            )
        _publish_empty(spec.output)
    log.info(
        "run %s published its %d gone ids to %s already: re-emitting them, nothing read",
        spec.run_id,
        gone,
        spec.output,
    )
    return DeletesResult(
        gone,
        int(published.get("listed", 0)),
        published.get("previous"),
        published.get("gone_after"),
        int(published.get("gone_by", 0)),
        str(spec.output),
        str(spec.snapshot),
        rerun=True,
    )


def _trimmed(runs: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    # The header holds them: the newest MAX_RUNS, within a quarter of its cap.
    runs = runs[-MAX_RUNS:]
    while len(runs) > 1 and len(json.dumps(runs)) > MAX_HEADER_BYTES // 4:
        runs = runs[1:]
    return runs


def _digest(target: ObjectStoragePath) -> str | None:
    digest = hashlib.sha256()
    try:
        with target.open("rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return digest.hexdigest()


def _publish_empty(output: ObjectStoragePath) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    temp = publish.temp_beside(output)
    try:
        with temp.open("wb"):
            pass
        publish.check_targets(output, [output.name])
        temp.move(output)
    except BaseException:
        publish.discard(temp)
        raise


def open_previous(spec: DeletesSpec, codec: SnapshotCodec, identity: Identity) -> Previous | None:
    """The stored snapshot, open, once its header proved genuine and its body's digest holds (read a chunk at
    a time, nothing kept): refused before the form is read, and read no further than the header declares."""
    where = str(spec.snapshot)
    source = publish.open_own_file(spec.snapshot, kind="id snapshot")
    if source is None:
        _refuse_foreign(spec)
        return None
    try:
        header = codec.decode_header(source.read(MAX_HEADER_BYTES + 2), identity, where)
        if header.file_bytes > spec.max_snapshot_bytes:
            raise DeyelSnapshotError(
                f"the id snapshot at {where} declares {header.file_bytes} bytes, more than "
                f"max_snapshot_bytes ({spec.max_snapshot_bytes}); nothing was reported and the file was "
                f"left as it is: raise max_snapshot_bytes"
            )
        source.seek(header.length + 1)
        codec.check_body(source, header, where, spec.max_snapshot_bytes - header.length - 1)
        return Previous(header, header.stamp(identity), source)
    except BaseException:
        source.close()
        raise


def _refuse_foreign(spec: DeletesSpec) -> None:
    if publish.is_local(spec.snapshot) and os.path.lexists(spec.snapshot.path):
        # A link, a folder or another user's file where the snapshot should be: taking it for a first
        # run would start over and never report the deletes since the real snapshot.
        raise DeyelSnapshotError(
            f"the id snapshot at {spec.snapshot} is not a regular file of this user (a link, a folder, "
            f"another user's file); nothing was reported and it was left as it is"
        )


def _stored_header(spec: DeletesSpec, codec: SnapshotCodec, identity: Identity) -> Header | None:
    """The stored snapshot's verified header, reading at most :data:`MAX_HEADER_BYTES` (+1) of the file."""
    data = publish.read_own_file(spec.snapshot, MAX_HEADER_BYTES + 2, kind="id snapshot")
    if data is None:
        _refuse_foreign(spec)
        return None
    return codec.decode_header(data, identity, str(spec.snapshot))


def _now_ms(hook: DeyelHook) -> int:
    return int(hook.clock() * 1000)
