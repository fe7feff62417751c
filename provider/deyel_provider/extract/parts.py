"""The files of one extraction's output: their names (one file, or numbered parts), the temporary file each
is written to, the rewrite pass, and publishing them.

Without ``max_file_bytes`` the output is the one file named. With it, the output is split into parts named
``<stem>.part-00000<ext>``, ``<stem>.part-00001<ext>``... (``2026-01-01.jsonl.gz`` gives
``2026-01-01.part-00000.jsonl.gz``): numbered from zero, five digits, so that a listing sorts them in order.
Every part is written to its own temporary file and published by its own rename (never through a link, as
:mod:`deyel_provider.storage.publish` does), only once the whole run is written:

1. every final name is checked first (not a folder, not another user's), so a run that cannot publish a part
   fails before it has replaced any;
2. the previous run's manifest ``<name>.parts.json`` is removed: while the set changes, there is none
   (named after the whole output name, ``2026-01-01.jsonl.gz.parts.json``, so that outputs of other formats
   or codecs in one folder keep their own);
3. the parts are renamed one by one, then the parts a previous, larger run left beyond the new count are
   removed, so the folder holds exactly this run's set;
4. the manifest is written last (the commit point): the parts' names, records and bytes. Readers go by it
   (or by the task's XCom / Asset event extra), not by a glob of the folder, which may show a set being
   replaced. A run without ``max_file_bytes`` removes the parts and manifest of an earlier split run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Collection, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.storage import publish
from deyel_provider.storage.compression import COMPRESSED_EXTENSIONS, TEXT_CODECS, EncodedFile, decoded

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from deyel_provider.extract.formats.base import RecordWriter

log = logging.getLogger(__name__)

#: File extensions that name a format: an output ending with one must be written in that format.
FORMAT_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: What each stream codec's files may end with.
_CODEC_EXTENSIONS = {"gzip": (".gz", ".gzip"), "zstd": (".zst", ".zstd")}
#: Parts a run may write (each a temporary file until the run is published).
MAX_PARTS = 1000
PART_DIGITS = 5
#: The most of an old-style manifest read to tell whether it lists this output's parts.
LEGACY_MANIFEST_MAX_BYTES = 1 << 20

Temp = Any  # publish.LocalTemp or an ObjectStoragePath


def split_name(name: str) -> tuple[str, str, str]:
    """``(stem, format extension, compression extension)``, e.g. ``a.b``, ``.jsonl``, ``.gz``."""
    base, compressed = name, ""
    lowered = name.lower()
    for ext in COMPRESSED_EXTENSIONS:
        if lowered.endswith(ext) and len(name) > len(ext):
            base, compressed = name[: -len(ext)], name[-len(ext) :]
            break
    dot = base.rfind(".")
    if dot <= 0:
        return base, "", compressed
    return base[:dot], base[dot:], compressed


def check_output_name(name: str, fmt: str, compression: str | None) -> None:
    """Refuse an output name whose extension says another format or compression than the one chosen."""
    _, fmt_ext, compressed = split_name(name)
    named_format = FORMAT_EXTENSIONS.get(fmt_ext.lower())
    if named_format is not None and named_format != fmt:
        raise DeyelConfigError(
            f"output {name!r} ends with {fmt_ext!r}, which is {named_format}, but format={fmt!r}: "
            f"change one of them"
        )
    if fmt == "parquet":
        if compressed:
            raise DeyelConfigError(
                f"output {name!r} ends with {compressed!r}, but Parquet compresses inside the file: name it "
                f"'...{fmt_ext or '.parquet'}' and choose the codec with compression= (snappy, zstd, gzip)"
            )
        return
    allowed = _CODEC_EXTENSIONS.get(compression or "", ("",))
    if compressed.lower() not in allowed:
        if compression is None:
            raise DeyelConfigError(
                f"output {name!r} ends with {compressed!r} but compression=None writes plain text: pass "
                f"compression={_codec_of(compressed)!r}, or drop the extension"
            )
        raise DeyelConfigError(
            f"compression={compression!r} writes a {allowed[0]} file, but output {name!r} ends with "
            f"{compressed or fmt_ext or 'no extension'!r}: name it '...{fmt_ext}{allowed[0]}'"
        )


def _codec_of(extension: str) -> str | None:
    for codec, extensions in _CODEC_EXTENSIONS.items():
        if extension.lower() in extensions:
            return codec
    return None


@dataclass(frozen=True)
class WrittenPart:
    """A part ready to publish: its temporary file, where it goes, and what it holds."""

    number: int
    temp: Temp
    target: ObjectStoragePath
    records: int
    bytes: int


class OutputFiles:
    """Creates the temporary files of a run's parts, rewrites and publishes them, or discards them all.

    :param codec: the stream codec of the text formats (``gzip``, ``zstd``), None for none (and Parquet).
    :param hashed: keep the SHA-256 of every file as it is written (staged parts a retry verifies).
    """

    def __init__(
        self, target: ObjectStoragePath, *, split: bool, codec: str | None, hashed: bool = False
    ) -> None:
        if codec is not None and codec not in TEXT_CODECS:
            raise DeyelConfigError(f"compression must be one of {list(TEXT_CODECS)} or None, got {codec!r}")
        self.target = target
        self.split = split
        self.codec = codec
        self.stem, fmt_ext, compressed = split_name(target.name)
        self.ext = fmt_ext + compressed
        self._part = re.compile(
            re.escape(f"{self.stem}.part-") + rf"(\d{{{PART_DIGITS}}})" + re.escape(self.ext)
        )
        self._temps: list[Temp] = []
        self._by_part: dict[int, list[Temp]] = {}
        self._sinks: list[EncodedFile] = []  # closed by the writer, or by discard() after a failure
        self._dir_fd: int | None = None  # the local folder, shared by every temporary file of the run
        self._dir_open = False
        #: Part files an earlier attempt staged and this one reuses: the writer's parts are numbered after.
        self.first_part = 0
        self._digests: dict[int, _Hashed] = {}
        self._hashed = hashed

    def part_target(self, number: int) -> ObjectStoragePath:
        if not self.split:
            return self.target
        return self.target.parent / f"{self.stem}.part-{number:0{PART_DIGITS}d}{self.ext}"

    @property
    def manifest_target(self) -> ObjectStoragePath:
        """``<name>.parts.json``: the list of a split run's parts, written once they are all published.

        Named after the whole output name: ``a.jsonl`` and ``a.jsonl.gz`` in one folder share a stem, and
        a manifest named after it (as releases before 0.2 did) was overwritten by the other output's."""
        return self.target.parent / f"{self.target.name}.parts.json"

    def remove_leftovers(self, keep: Collection[str] = ()) -> None:
        """Remove the temporary files an interrupted attempt left (of the file, or of any part), except the
        staged parts named in ``keep`` (a resumed retry reuses them)."""
        if not self.split:
            publish.remove_leftovers(self.target)
            return
        part, manifest = self._part, self.manifest_target.name
        publish.remove_own_files(
            self.target,
            # Parts (<stem>.part-N<ext>) and the manifest (<name>.parts.json) both start with "<stem>.".
            f"{publish.glob_escape(self.stem)}.*.tmp-*",
            lambda name: (
                ".tmp-" in name
                and name not in keep
                and (
                    part.fullmatch(name.rsplit(".tmp-", 1)[0]) is not None
                    or name.rsplit(".tmp-", 1)[0] == manifest
                )
            ),
            "left by an interrupted attempt",
        )

    def open(self, number: int) -> EncodedFile:
        """A new temporary file for part ``number`` (the writer's ``open_file``)."""
        number += self.first_part
        if number >= MAX_PARTS:
            raise DeyelConfigError(
                f"this run needs more than {MAX_PARTS} parts of max_file_bytes: raise max_file_bytes"
            )
        temp = self._new_temp(number)
        self._by_part.setdefault(number, []).append(temp)
        raw = temp.open("wb")
        if self._hashed:
            raw = self._digests[number] = _Hashed(raw)
        sink = EncodedFile(raw, self.codec)
        self._sinks.append(sink)
        return sink

    def staged(self, number: int) -> tuple[str, str | None]:
        """The temporary name of part ``number`` (a file number) and its SHA-256 (None unless hashed)."""
        (temp,) = self._by_part[number]
        digest = self._digests.get(number)
        return temp.name, None if digest is None else digest.hexdigest()

    def adopt(self, number: int, name: str) -> Temp | None:
        """Part ``number``'s temporary file ``name`` left by an earlier attempt, to publish with this run's
        (None unless it is there, under that part's temporary name, and locally a regular file of ours)."""
        target = self.part_target(number)
        if not self._dir_open:
            self._dir_fd, self._dir_open = publish.open_folder(self.target), True
        if self._dir_fd is not None:
            temp: Temp = publish.LocalTemp.existing(target, name, self._dir_fd)
        elif name.startswith(f"{target.name}.tmp-") and "/" not in name:
            temp = target.parent / name
            temp = temp if temp.is_file() else None
        else:
            temp = None
        return temp

    def track(self, temp: Temp) -> None:
        """Publish (or discard) ``temp``, an adopted part, with this run's files."""
        self._temps.append(temp)

    def _new_temp(self, number: int) -> Temp:
        return self._temp_beside(self.part_target(number))

    def _temp_beside(self, target: ObjectStoragePath) -> Temp:
        if not self._dir_open:
            self._dir_fd, self._dir_open = publish.open_folder(self.target), True
        temp = publish.temp_beside(target, self._dir_fd)
        self._temps.append(temp)
        return temp

    def _close_folder(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
        self._dir_fd, self._dir_open = None, False

    def finish(self, writer: RecordWriter) -> list[WrittenPart]:
        """Every part in its final form: rewritten first where the writer needs it (one part at a time)."""
        written = []
        for part in writer.parts:
            number = part.number + self.first_part
            temps = self._by_part[number]
            size = part.size
            if writer.needs_rewrite(part):
                log.info("rewriting part %d with the run's final columns and types", part.number)
                fresh = self._new_temp(number)
                # One segment open at a time: a part may have hundreds (one per schema change).
                sources = self._read_each(temps)
                try:
                    sink = EncodedFile(fresh.open("wb"), self.codec)
                    try:
                        writer.rewrite(part, sources, sink.stream)
                    finally:
                        sink.close()
                finally:
                    sources.close()
                for temp in temps:
                    temp.unlink()
                    self._temps.remove(temp)
                temps[:] = [fresh]
                size = sink.size
            (temp,) = temps
            written.append(WrittenPart(number, temp, self.part_target(number), part.records, size))
        return written

    def _read_each(self, temps: list[Temp]) -> Generator[Any, None, None]:
        """Each temporary file read back through the codec, opened when reached, closed when passed."""
        for temp in temps:
            with temp.open("rb") as raw:
                yield decoded(raw, self.codec)

    def publish(self, parts: list[WrittenPart]) -> None:
        """Check every final name, rename every part over its own, remove the parts of an earlier run beyond
        this run's count (all of them without ``max_file_bytes``), then write the manifest (split runs)."""
        manifest = self.manifest_target
        names = [part.target.name for part in parts]
        publish.check_targets(self.target, [*names, manifest.name] if self.split else names)
        # No manifest while the set changes: a reader never sees one that lists parts being replaced.
        self._remove_own(
            lambda name: name == manifest.name,
            "the manifest of an earlier run",
            "manifest",
            pattern=publish.glob_escape(manifest.name),
        )
        self._remove_legacy_manifest()
        for part in parts:
            part.temp.move(part.target)
            self._temps.remove(part.temp)
        count, pattern = len(parts) if self.split else 0, self._part

        def orphan(name: str) -> bool:
            match = pattern.fullmatch(name)
            return match is not None and int(match.group(1)) >= count

        self._remove_own(orphan, "a part of an earlier run that had more", "part")
        if self.split:
            self._write_manifest(parts, manifest)
        self._close_folder()

    def _remove_own(self, matches: Any, why: str, kind: str, *, pattern: str | None = None) -> None:
        glob = pattern if pattern is not None else f"{publish.glob_escape(self.stem)}.part*"
        publish.remove_own_files(self.target, glob, matches, why, kind=kind)

    def _remove_legacy_manifest(self) -> None:
        """Remove a ``<stem>.parts.json`` (the name releases before 0.2 used) that lists only this output's
        parts: it would go on listing a set this run replaces. One listing another output's parts (the same
        stem in another format) is that output's, and is left alone."""
        legacy = self.target.parent / f"{self.stem}.parts.json"
        if legacy.name == self.manifest_target.name:
            return
        try:
            # Never through a link nor blocking on a FIFO another user planted there (publish's rule).
            raw = publish.read_own_file(legacy, LEGACY_MANIFEST_MAX_BYTES, self._dir_fd, kind="manifest")
            if raw is None:
                return
            body = json.loads(raw)
            names = [entry["name"] for entry in body["parts"]]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return  # absent, unreadable or not a manifest of ours: nothing to replace
        if names and all(isinstance(n, str) and self._part.fullmatch(n) for n in names):
            self._remove_own(
                lambda name: name == legacy.name,
                "the manifest of an earlier release (now named after the whole output name)",
                "manifest",
                pattern=publish.glob_escape(legacy.name),
            )

    def _write_manifest(self, parts: list[WrittenPart], manifest: ObjectStoragePath) -> None:
        listed = [{"name": part.target.name, "records": part.records, "bytes": part.bytes} for part in parts]
        body = {
            "parts": listed,
            "records": sum(part.records for part in parts),
            "bytes": sum(part.bytes for part in parts),
        }
        temp = self._temp_beside(manifest)
        with temp.open("wb") as out:
            out.write(json.dumps(body, indent=1).encode("utf-8") + b"\n")
        temp.move(manifest)
        self._temps.remove(temp)

    def discard(self, keep: Collection[str] = ()) -> None:
        """Remove every temporary file still there (a failed or skipped run) but the staged parts named in
        ``keep`` (left for a retry to resume after)."""
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:  # the failure that brought us here matters more
                log.warning("could not close a temporary file: %s", exc)
        self._sinks.clear()
        for temp in self._temps:
            if temp.name not in keep:
                publish.discard(temp)
        self._temps.clear()
        self._close_folder()


class _Hashed(io.RawIOBase):
    """Passes bytes on to ``raw`` and hashes them (SHA-256): what a staged part is verified against."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self.raw = raw
        self._sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sha.update(data)
        self.raw.write(data)
        return len(data) if not isinstance(data, memoryview) else data.nbytes

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def flush(self) -> None:
        if not self.raw.closed:
            self.raw.flush()

    def close(self) -> None:
        if not self.closed:
            try:
                self.raw.close()
            finally:
                super().close()
