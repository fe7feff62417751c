"""The ids a form listed at one moment, stored compactly and authenticated, and what left between two of them.

A snapshot is one file: a JSON header line, then a zlib stream of the id set (the bitmap of decimal ids,
then the other ids ascending: :mod:`~deyel_provider.read.id_snapshot_body`). The header names what was
listed (connection, form, search, id key), when (the read's horizon, epoch ms), how many ids, the body's
sizes and digest, and a MAC keyed like the watermarks (a key derived from the connection's client secret,
token URL and client id). A snapshot of another connection, form or search, or one altered by a byte, is a
:class:`DeyelSnapshotError`: never trusted, so a planted file cannot make the operator report live instances
deleted or hide deleted ones.

Versions: 2 is written (the other ids as length-prefixed records); 1 (the other ids as one JSON array, as
written before the comparison streamed) is still read, as a stream too, and replaced by a version 2 snapshot
on the next run. Memory: neither is ever decoded whole by the operator; the body is read a chunk
at a time beside the current ids (:func:`~deyel_provider.read.id_snapshot_body.compare`). The header is
verified before any body byte is read (:meth:`SnapshotCodec.decode_header`), and the body's digest before
it is compared (:meth:`SnapshotCodec.check_body`).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import IO, Any

from deyel_provider.auth.crypto import purpose_mac
from deyel_provider.exceptions import DeyelSnapshotError
from deyel_provider.read.id_runs import decode, encode
from deyel_provider.read.id_set import IdSet, _small_number, set_bits
from deyel_provider.read.id_snapshot_body import CHUNK, BodyFacts, BodyReader, BodyWriter

FORMAT = "deyel-id-snapshot"
#: The version written; :data:`READ_VERSIONS` are read.
VERSION = 2
READ_VERSIONS = (1, 2)
#: MAC purpose: a key of its own, derived as the watermarks' is (a watermark MAC never verifies a snapshot).
SNAPSHOT_PURPOSE = "id-snapshot-mac"
#: The longest header line read (it holds names and numbers only).
MAX_HEADER_BYTES = 64 * 1024
#: The runs whose published output a snapshot remembers (a rerun of an older one reads nothing).
MAX_RUNS = 48


@dataclass(frozen=True)
class Identity:
    """What a snapshot lists: only a snapshot of the same identity is compared with a new read."""

    base_url: str
    client_id: str
    form: str
    search: str
    id_field: str
    #: The task that keeps it (``<dag_id>.<task_id>``, ``[map index]`` when mapped): two tasks sharing a path
    #: would each consume the other's deletes.
    owner: str = ""


class SnapshotIds(IdSet):
    """An :class:`IdSet` held whole in memory, that can be listed and compared with another (small sets and
    tests: the operator streams instead, see :func:`~deyel_provider.read.id_snapshot_body.compare`)."""

    def __contains__(self, instance_id: object) -> bool:
        if not isinstance(instance_id, str):
            return False
        number = _small_number(instance_id)
        if number is None:
            return instance_id in self._others
        byte, bit = divmod(number, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)

    def missing_from(self, newer: SnapshotIds) -> Iterator[str]:
        """The ids of this set that ``newer`` lacks: decimal ones ascending, then the others sorted."""
        old, new = self._bits, newer._bits
        for offset in range(0, len(old), CHUNK):
            gone = int.from_bytes(old[offset : offset + CHUNK], "little") & ~int.from_bytes(
                new[offset : offset + CHUNK], "little"
            )
            if gone:
                yield from map(
                    str, set_bits(gone.to_bytes(min(CHUNK, len(old) - offset), "little"), offset * 8)
                )
        yield from sorted(other for other in self._others if other not in newer._others)


def build(ids: Iterable[str]) -> SnapshotIds:
    result = SnapshotIds()
    result.update(ids)
    return result


@dataclass(frozen=True)
class Stamp:
    """What a snapshot's header says besides its body: whose ids, when, and what the latest runs published."""

    identity: Identity
    #: The read's settled horizon on the server's clock (epoch ms; both equal since the horizon replaced the
    #: worker's start and end times): the next run's ``gone_after``, this run's ``gone_by``.
    started_ms: int
    finished_ms: int
    #: The Airflow run that wrote it, and how many ids that run reported gone (a rerun of that run reports
    #: the same file again instead of comparing the snapshot with itself).
    run_id: str
    gone: int
    #: The worker's clock when the read began (epoch ms): breaks a tie of two reads' ``started_ms``.
    listed_at_ms: int = 0
    #: What the latest runs published (run id, output, its digest, counts, bounds), newest last: a rerun of
    #: any of them re-emits its output instead of reading (:data:`MAX_RUNS` kept).
    runs: tuple[dict[str, Any], ...] = ()

    def order(self) -> tuple[int, int]:
        """Which of two snapshots is newer: the later read (the server's horizon, then the worker's clock)."""
        return (self.started_ms, self.listed_at_ms)

    def run(self, run_id: str) -> dict[str, Any] | None:
        return next((entry for entry in reversed(self.runs) if entry.get("run_id") == run_id), None)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot held whole: its ids and its stamp's fields (small sets and tests)."""

    ids: SnapshotIds
    identity: Identity
    started_ms: int
    finished_ms: int
    run_id: str
    gone: int
    listed_at_ms: int = 0
    runs: tuple[dict[str, Any], ...] = ()

    def stamp(self) -> Stamp:
        return Stamp(**{name: getattr(self, name) for name in Stamp.__dataclass_fields__})


@dataclass(frozen=True)
class Header:
    """A snapshot's verified header alone (read first, before any body byte, so a planted file costs at most
    :data:`MAX_HEADER_BYTES`)."""

    length: int
    body: dict[str, Any]

    @property
    def version(self) -> int:
        return int(self.body["v"])

    @property
    def count(self) -> int:
        return int(self.body["count"])

    @property
    def file_bytes(self) -> int:
        """The whole file's size the header declares (0: not declared, an older snapshot)."""
        compressed = self.body.get("compressed_bytes")
        return self.length + 1 + compressed if isinstance(compressed, int) and compressed >= 0 else 0

    def facts(self) -> BodyFacts:
        compressed = self.body.get("compressed_bytes")
        return BodyFacts(
            int(self.body["count"]),
            int(self.body["body_bytes"]),
            compressed if isinstance(compressed, int) else None,
            str(self.body["body_sha256"]),
        )

    def stamp(self, identity: Identity) -> Stamp:
        body = self.body
        return Stamp(
            identity=identity,
            started_ms=int(body["started_ms"]),
            finished_ms=int(body["finished_ms"]),
            run_id=str(body["run_id"]),
            gone=int(body["gone"]),
            listed_at_ms=int(body.get("listed_at_ms", 0)),
            runs=tuple(entry for entry in body.get("runs", ()) if isinstance(entry, dict)),
        )

    def order(self) -> tuple[int, int]:
        return (int(self.body.get("started_ms", 0)), int(self.body.get("listed_at_ms", 0)))


class SnapshotCodec:
    """Writes and verifies snapshots of one connection (``client_secret``, never stored or shown)."""

    def __init__(self, client_secret: str, token_url: str, client_id: str) -> None:
        self._secret = client_secret
        self._salt = json.dumps(["id-snapshot", token_url, client_id])

    def __repr__(self) -> str:
        return "SnapshotCodec()"

    def _mac(self, header: dict[str, Any]) -> str:
        canonical = json.dumps(header, sort_keys=True, separators=(",", ":"))
        return purpose_mac(self._secret, self._salt, SNAPSHOT_PURPOSE, canonical)

    def header_line(self, stamp: Stamp, facts: BodyFacts) -> bytes:
        """The signed header line (with its newline) of a body written by :class:`BodyWriter`."""
        header: dict[str, Any] = {
            "format": FORMAT,
            "v": VERSION,
            "identity": asdict(stamp.identity),
            "started_ms": stamp.started_ms,
            "finished_ms": stamp.finished_ms,
            "run_id": stamp.run_id,
            "gone": stamp.gone,
            "listed_at_ms": stamp.listed_at_ms,
            "runs": list(stamp.runs[-MAX_RUNS:]),
            "compressed_bytes": facts.compressed_bytes,
            "count": facts.count,
            "body_bytes": facts.body_bytes,
            "body_sha256": facts.sha256,
        }
        header["mac"] = self._mac(header)
        return json.dumps(header, sort_keys=True).encode() + b"\n"

    def encode(self, snapshot: Snapshot) -> bytes:
        """A whole snapshot held in memory, as the bytes of its file."""
        sink = io.BytesIO()
        writer = BodyWriter(sink)
        writer.bitmap(bytes(snapshot.ids._bits).rstrip(b"\0"))
        others = sorted(encode(other) for other in snapshot.ids._others)
        if others:
            writer.block(others)
        return self.header_line(snapshot.stamp(), writer.finish()) + sink.getvalue()

    def decode_header(self, data: bytes, expected: Identity, where: str) -> Header:
        """The header at the start of ``data`` (the body need not follow) once its MAC and identity hold."""
        line, newline, _ = data.partition(b"\n")
        try:
            if not newline or len(line) > MAX_HEADER_BYTES:
                raise ValueError("no header line")
            header = json.loads(line)
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError("not a snapshot")
        except (ValueError, RecursionError):
            raise _refused(where, "is not an id snapshot of this provider") from None
        if header.get("v") not in READ_VERSIONS:
            raise _refused(
                where,
                f"has format version {header.get('v')!r}; this provider reads versions "
                f"{', '.join(map(str, READ_VERSIONS))} (a newer provider wrote it: upgrade this one)",
            )
        body = {k: v for k, v in header.items() if k != "mac"}
        mac = header.get("mac")
        try:
            genuine = isinstance(mac, str) and mac.isascii() and hmac.compare_digest(mac, self._mac(body))
        except (ValueError, TypeError, RecursionError):
            genuine = False
        if not genuine:
            raise _refused(
                where,
                "fails its MAC: it was not written by this provider with this connection's client secret "
                "(planted or altered), or the secret was changed since (after a rotation, re-baseline: "
                "docs/extraction.md, 'After rotating the client secret')",
            )
        if body.get("identity") != asdict(expected):
            raise _refused(
                where,
                f"lists {body.get('identity')!r}, not {asdict(expected)!r}: another connection, form, "
                f"search, id key or task wrote it; give each task its own snapshot path",
            )
        try:
            Header(len(line), body).facts()
        except (ValueError, KeyError, TypeError):
            raise _refused(where, "has a header without its body's sizes and digest") from None
        return Header(len(line), body)

    def check_body(self, source: IO[bytes], header: Header, where: str, limit: int) -> None:
        """Read the body at ``source``'s position to its end (a chunk at a time): refused unless it is the
        one the header was signed with, within ``limit`` bytes. Nothing of it is decoded or kept."""
        facts = header.facts()
        digest, size = hashlib.sha256(), 0
        while block := source.read(CHUNK):
            size += len(block)
            if size > limit:
                raise _refused(where, f"is larger than max_snapshot_bytes ({limit} bytes of body)")
            digest.update(block)
        if digest.hexdigest() != facts.sha256:
            raise _refused(where, "has a body that is not the one its header was signed with")

    def reader(self, source: IO[bytes], header: Header) -> BodyReader:
        """A reader of the body at ``source``'s position (its ``ValueError``: see :func:`refused_body`)."""
        return BodyReader(source, header.version, header.facts())

    def decode(self, data: bytes, expected: Identity, where: str) -> Snapshot:
        """A whole snapshot held in memory, once it proved to be this connection's, of ``expected``."""
        header = self.decode_header(data, expected, where)
        source = io.BytesIO(data[header.length + 1 :])
        self.check_body(source, header, where, len(data))
        source.seek(0)
        ids = SnapshotIds()
        try:
            reader = self.reader(source, header)
            for _offset, chunk in reader.bitmap_chunks():
                ids._bits += chunk
            ids._others = {decode(data) for block in reader.others() for data in block}
            reader.finish()
            ids._count = int.from_bytes(ids._bits, "little").bit_count() + len(ids._others)
            stamp = header.stamp(expected)
        except (ValueError, KeyError, TypeError) as exc:
            raise refused_body(where, exc) from None
        return Snapshot(ids, **{name: getattr(stamp, name) for name in Stamp.__dataclass_fields__})


def refused_body(where: str, exc: Exception) -> DeyelSnapshotError:
    """The error for a body that a :class:`BodyReader` refused."""
    return _refused(where, f"cannot be decoded ({exc})")


def _refused(where: str, why: str) -> DeyelSnapshotError:
    return DeyelSnapshotError(
        f"the id snapshot at {where} {why}; nothing was reported and the file was left as it is. Remove it "
        f"(the next run then starts a new snapshot and reports nothing gone) or point snapshot= elsewhere"
    )
