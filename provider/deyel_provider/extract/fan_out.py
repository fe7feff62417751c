"""One extraction read by many tasks: the window cut into slices (plan), each slice written to a staged part
(read), the parts published as one split output with its manifest last (commit).

- **Plan** fixes the run's window once (a watermark window ends at the server's settled present, as
  :meth:`~deyel_provider.read.slicing.SlicedReader.fix_window` ends it for one task) and cuts it into at most
  ``parts`` disjoint slices of about equal counts (:mod:`deyel_provider.read.window_cuts`). The slices lie
  below the window's end, which lies in the server's past: each only loses instances while it is read, so
  the parts together hold every instance of the window at most once, and each is read exactly once by its
  task's own proofs (the contract of one file, across parts).
- **Read** extracts one slice with :func:`~deyel_provider.extract.run.extract` into the staged part
  ``<folder>/.<name>.staging-<run>/part-NNNNN<ext>`` (published there by its own atomic rename): a retried
  or cleared read rewrites that part and no other, and nothing appears under the output's final names.
- **Commit** checks every part (there, its size and its record count those its read reported), then
  publishes them as :class:`~deyel_provider.extract.parts.OutputFiles` publishes ``max_file_bytes`` parts:
  the earlier manifest removed, each part renamed to ``<stem>.part-NNNNN<ext>``, an earlier, larger set's
  extra parts removed, the manifest written last. A part already published by an earlier attempt of the
  commit (found under its final name, size and count matching) is kept: a cleared commit publishes the same
  set again.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from deyel_provider.exceptions import DeyelConfigError, DeyelIncompleteError
from deyel_provider.extract.fan_out_staging import (
    own_staging,
    remove_stale_staging,
    staged_part,
    staging_folder,
)
from deyel_provider.extract.parts import OutputFiles, WrittenPart
from deyel_provider.extract.run import extract, takes_plain_pages
from deyel_provider.extract.spec import WindowSpec
from deyel_provider.read.window_cuts import cut_window
from deyel_provider.storage import publish
from deyel_provider.storage.compression import decoded
from deyel_provider.storage.paths import as_storage_path

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from deyel_provider.extract.progress import Progress
    from deyel_provider.extract.spec import OutputSpec, ReadSpec
    from deyel_provider.hooks.deyel import DeyelHook

log = logging.getLogger(__name__)

#: Parts a group may cut a window into (the split output's own limit is 1000).
MAX_GROUP_PARTS = 1000


def plan_slices(hook: DeyelHook, read: ReadSpec, window: WindowSpec, parts: int) -> dict[str, Any]:
    """The run's window fixed (``start``, ``end``, epoch ms) and its ``slices`` (``[start, end]`` pairs),
    plus ``requests``: what planning cost."""
    check_parts(parts)
    reader = hook.sliced_reader(
        read.form, search=read.search, field=read.field, page_size=read.page_size, max_workers=1
    )
    start, end, probe = reader.fix_window(
        window.start, window.end, end_at_server_time=window.end_at_server_time
    )
    if end is None:
        raise DeyelConfigError("plan a full load with end_at_server_time: its parts end at the present")
    if probe is None or end <= start:
        slices = [(start, max(start, end))]
    else:
        field = read.field
        sample = [v for v in (_epoch_ms(r.get(field)) for r in probe.records) if v is not None]
        slices = cut_window(
            start,
            end,
            parts,
            total=probe.total,
            sample=sample,
            count=reader.count,
            page_size=reader.page_size,
        )
    requests = reader.stats.requests
    log.info("window [%s, %s) cut into %d slices (%d requests)", start, end, len(slices), requests)
    return {"start": start, "end": end, "slices": [list(s) for s in slices], "requests": requests}


def _epoch_ms(value: Any) -> int | None:
    """A field value as epoch ms (a number, or its decimal text as Deyel sends it), None otherwise: the
    plan's sample only, never a bound of what is read."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 15:
        return int(value)
    return None


def check_parts(parts: Any) -> None:
    if not isinstance(parts, int) or isinstance(parts, bool) or not 1 <= parts <= MAX_GROUP_PARTS:
        raise DeyelConfigError(f"parts must be a number from 1 to {MAX_GROUP_PARTS}, got {parts!r}")


def read_part(
    hook: DeyelHook,
    read: ReadSpec,
    output: OutputSpec,
    bounds: tuple[int, int],
    number: int,
    run_key: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Extract ``[start, end)`` into staged part ``number``; what the commit checks it against."""
    staged = staged_part(output, run_key, number)
    own_staging(staging_folder(output, run_key), create=True)
    spec = replace(output, output=staged, max_file_bytes=None, on_empty="write")
    result = extract(hook, read, spec, WindowSpec(int(bounds[0]), int(bounds[1])), progress=progress)
    return _read_entry(number, (int(bounds[0]), int(bounds[1])), result)


def read_tail(
    hook: DeyelHook,
    read: ReadSpec,
    output: OutputSpec,
    tail_from: int,
    reads: list[dict[str, Any]],
    run_key: str,
) -> dict[str, Any]:
    """A full load's last part, read by the commit once every other part is written: ``[tail_from, present)``
    in rounds, as one task reads the present, without the instances the other parts hold (an instance edited
    after its part read it is there already; one edited before is here)."""
    number = len(reads)
    target = as_storage_path(output.output, output.output_conn_id)
    files = OutputFiles(target, split=True, codec=output.codec)
    sources = []
    own_staging(staging_folder(output, run_key), create=True)
    for entry in reads:
        staged = staged_part(output, run_key, entry["number"])
        sources.append(staged if staged.exists() else files.part_target(entry["number"]))
    id_field = hook.config.id_field
    seeded = _SkippingHook(hook, lambda: (i for path in sources for i in part_ids(path, output, id_field)))
    staged = staged_part(output, run_key, number)
    spec = replace(output, output=staged, max_file_bytes=None, on_empty="write")
    result = extract(seeded, read, spec, WindowSpec(tail_from, None))  # type: ignore[arg-type]
    return _read_entry(number, (tail_from, None), result)


class _SkippingHook:
    """The hook, whose sliced readers skip the ids ``known`` yields (the other parts')."""

    def __init__(self, hook: DeyelHook, known: Any) -> None:
        self._hook = hook
        self._known = known

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hook, name)

    def sliced_reader(self, *args: Any, **kwargs: Any) -> Any:
        if not takes_plain_pages(self._hook.sliced_reader):  # a subclass of an earlier release's signature
            kwargs.pop("plain_pages", None)
        reader = self._hook.sliced_reader(*args, **kwargs)
        reader.skip(self._known())
        return reader


def part_ids(path: Any, output: OutputSpec, id_field: str) -> Iterator[str]:
    """The instance ids a written part holds, read back (CSV and Parquet: the ``id_field`` column)."""
    from deyel_provider.api.instance_ids import instance_id

    with _open_part(path) as raw:
        if output.format == "parquet":
            import pyarrow.parquet as pq

            table = pq.ParquetFile(raw)
            if id_field not in table.schema_arrow.names:
                raise DeyelConfigError(_NO_ID.format(field=id_field))
            for batch in table.iter_batches(columns=[id_field]):
                yield from (str(v) for v in batch.column(0).to_pylist() if v is not None)
            return
        with io.TextIOWrapper(decoded(raw, output.codec), encoding="utf-8", newline="") as stream:
            if output.format == "csv":
                rows = csv.DictReader(stream)
                if id_field not in (rows.fieldnames or [id_field]):
                    raise DeyelConfigError(_NO_ID.format(field=id_field))
                yield from (row[id_field] for row in rows if row.get(id_field))
                return
            for line in stream:
                ident = instance_id(json.loads(line), id_field)
                if ident is not None:
                    yield ident


_NO_ID = (
    "a full load in parts needs the instance id in every part, to read the present once without them: "
    "add {field!r} to fields"
)


def _read_entry(number: int, bounds: tuple[int, int | None], result: Any) -> dict[str, Any]:
    return {
        "number": number,
        "start": bounds[0],
        "end": bounds[1],
        "records": result.records,
        "bytes": result.bytes,
        "requests": result.requests,
        "repeats": result.repeats,
        "slices": result.slices,
        "min_requests": result.min_requests,
        "seconds": result.seconds,
        "columns": result.columns,
        "pid": os.getpid(),
        "host": os.uname().nodename,
    }


def _open_part(path: Any) -> Any:
    """A part open for reading: locally only a regular file of this user, opened without following a link
    (publish's rule; a link planted among the parts would publish what it points to), else a typed error."""
    opened = publish.open_own_file(path, kind="part")
    if opened is None:
        raise DeyelIncompleteError(
            f"{path} is missing, or is not a regular file of this user (a link, or another user's): "
            f"nothing published; clear the group's read tasks"
        )
    return opened


def count_records(path: Any, fmt: str, codec: str | None) -> int:
    """The records a part holds, read back (JSON Lines: lines; CSV: rows below the header; Parquet: its
    metadata)."""
    with _open_part(path) as raw:
        return _count(raw, fmt, codec)


def _count(raw: Any, fmt: str, codec: str | None) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(raw).metadata.num_rows)
    stream = decoded(raw, codec)
    if fmt == "jsonl":
        return sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))
    with io.TextIOWrapper(stream, encoding="utf-8", newline="") as text:
        rows = sum(1 for _ in csv.reader(text))
    return max(0, rows - 1)


class _Staged:
    """A staged part, published by one rename into the output's folder (locally through both folders'
    descriptors, never following a link; on an object store, the store's move)."""

    def __init__(self, path: ObjectStoragePath) -> None:
        self.path = path

    def move(self, target: ObjectStoragePath) -> None:
        if not publish.is_local(target):
            self.path.move(target)
            return
        source_fd = os.open(str(self.path.parent.path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        target_fd = os.open(str(target.parent.path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.rename(self.path.name, target.name, src_dir_fd=source_fd, dst_dir_fd=target_fd)
        finally:
            os.close(source_fd)
            os.close(target_fd)


class _Published:
    """A part an earlier attempt of the commit published already: nothing to move."""

    def move(self, target: ObjectStoragePath) -> None:
        return None


class _GroupFiles(OutputFiles):
    """The output's split files, publishing parts that were written elsewhere (staged by the reads)."""

    def add_staged(self, parts: list[WrittenPart]) -> None:
        self._temps.extend(part.temp for part in parts)


def commit_parts(
    output: OutputSpec,
    run_key: str,
    reads: list[dict[str, Any]],
    window: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Check every part the reads reported (their slices adjacent, covering ``window`` when given) and
    publish them with the manifest last; returns the parts published (``{"path", "records", "bytes"}``),
    in order."""
    reads = sorted(reads, key=lambda r: r["number"])
    if [r["number"] for r in reads] != list(range(len(reads))) or not reads:
        raise DeyelIncompleteError(
            f"the reads reported parts {[r['number'] for r in reads]}, not 0 to {len(reads) - 1}: "
            f"nothing published; clear the group's read tasks"
        )
    check_slices(reads, window)
    _check_columns(output, reads)
    folder = staging_folder(output, run_key)
    own_staging(folder, create=False)
    target = as_storage_path(output.output, output.output_conn_id)
    files = _GroupFiles(target, split=True, codec=output.codec)
    written = []
    for entry in reads:
        number = entry["number"]
        staged, final = staged_part(output, run_key, number), files.part_target(number)
        if staged.exists():
            _check_whole(staged, entry, output, f"staged part {number}")
            temp: Any = _Staged(staged)
        elif final.exists() and _whole(final, entry, output):
            log.info("part %d is published already (an earlier commit): kept", number)
            temp = _Published()
        else:
            raise DeyelIncompleteError(
                f"part {number} is neither staged nor published whole ({staged}): nothing published; "
                f"clear its read task (map index {number}), then this commit"
            )
        written.append(WrittenPart(number, temp, final, entry["records"], entry["bytes"]))
    files.add_staged(written)
    files.publish(written)
    try:
        # With what no read of the set left there (a cleared plan's extra parts, killed reads' temporary
        # files); the folder is ours alone (own_staging), and rmtree follows no link inside it.
        folder.rmdir(recursive=True)
    except OSError as exc:  # left for the next run's commit: harmless, hidden
        log.warning("could not remove the staging folder %s: %s", folder, exc)
    remove_stale_staging(output, run_key)
    return [{"path": str(p.target), "records": p.records, "bytes": p.bytes} for p in written]


def check_slices(reads: list[dict[str, Any]], window: tuple[int, int] | None = None) -> None:
    """Refuse parts whose slices are not adjacent (each starts where the one before ends) or do not cover
    ``[start, end)`` of the window planned (a full load's last part, from ``end`` on, may follow): reads of
    two plans (a plan cleared alone chose another cut, or a full load's another present) would hold an
    instance twice, or none of the instances between them."""
    ordered = sorted(reads, key=lambda r: r["number"])
    bounds = [(r["start"], r["end"]) for r in ordered]
    adjacent = all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    last_start, last_end = bounds[-1]
    ends_at = last_start if last_end is None else last_end
    covers = window is None or (bounds[0][0], ends_at) == tuple(window)
    if not adjacent or not covers:
        raise DeyelIncompleteError(
            f"the parts' slices {bounds} do not cut the planned window {window} (reads of two plans: the "
            f"plan was cleared alone, or a read retried after it): nothing published; clear the whole group"
        )


def manifest_of(output: OutputSpec) -> str:
    """Where the commit writes the manifest: ``<name>.parts.json`` beside the output."""
    target = as_storage_path(output.output, output.output_conn_id)
    return str(OutputFiles(target, split=True, codec=output.codec).manifest_target)


def _whole(path: ObjectStoragePath, entry: dict[str, Any], output: OutputSpec) -> bool:
    try:
        _check_whole(path, entry, output, str(path))
    except DeyelIncompleteError:
        return False
    return True


def _check_whole(path: ObjectStoragePath, entry: dict[str, Any], output: OutputSpec, what: str) -> None:
    with _open_part(path) as raw:
        # The file opened (locally: never through a link) is the one measured and counted.
        size = os.fstat(raw.fileno()).st_size if publish.is_local(path) else path.stat().st_size
        if size != entry["bytes"]:
            raise DeyelIncompleteError(
                f"{what} holds {size} bytes, its read wrote {entry['bytes']}: nothing published; clear its "
                f"read task (map index {entry['number']}), then this commit"
            )
        records = _count(raw, output.format, output.codec)
    if records != entry["records"]:
        raise DeyelIncompleteError(
            f"{what} holds {records} records, its read wrote {entry['records']}: nothing published; clear "
            f"its read task (map index {entry['number']}), then this commit"
        )


def _check_columns(output: OutputSpec, reads: list[dict[str, Any]]) -> None:
    """CSV and Parquet parts must share their columns (and types) as one run's parts do."""
    if output.format == "jsonl":
        return
    seen = {tuple((c["name"], c["type"]) for c in r["columns"]) for r in reads if r["records"]}
    if len(seen) > 1:
        raise DeyelConfigError(
            f"the parts' {output.format} columns differ ({len(seen)} different sets): declare the "
            f"columns with fields= (and their types with schema= for Parquet) so that every part is "
            f"written alike; nothing published"
        )
