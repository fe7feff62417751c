"""The ids a form listed at one moment, stored compactly and authenticated, and what left between two of them.

A snapshot is one file: a JSON header line, then a zlib stream of the id set (the bitmap of decimal ids,
then the other ids as a JSON array). The header names what was listed (connection, form, search, id key),
when (the read's start and end, epoch ms), how many ids, the body's digest, and a MAC keyed like the
watermarks (a key derived from the connection's client secret, token URL and client id). A snapshot of
another connection, form or search, or one altered by a byte, is a :class:`DeyelSnapshotError`: never
trusted, so a planted file cannot make the operator report live instances deleted or hide deleted ones.

Memory: the bitmap holds canonical decimal ids below 2**28 at one bit each (10M sequential ids: 1.25 MB); any
other id (a UUID, ten digits or more) costs a Python string in a set, and decoding a snapshot holds all of its
own: about 160 MB per million ten-digit ids, 210 MB per million UUIDs (tests/test_deletes_review.py bounds
both at 256 MB). Decoding is bounded by the sizes the authenticated header declares, and the header is
verified before any body byte is read (:meth:`SnapshotCodec.decode_header`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from deyel_provider.auth.crypto import purpose_mac
from deyel_provider.exceptions import DeyelSnapshotError
from deyel_provider.read.id_set import _BITMAP_LIMIT, IdSet, _small_number

FORMAT = "deyel-id-snapshot"
VERSION = 1
#: MAC purpose: a key of its own, derived as the watermarks' is (a watermark MAC never verifies a snapshot).
SNAPSHOT_PURPOSE = "id-snapshot-mac"
#: The longest header line read (it holds names and numbers only).
MAX_HEADER_BYTES = 64 * 1024
#: The most bytes of the bitmap a header may declare (every id below the bitmap limit).
MAX_BITS_BYTES = _BITMAP_LIMIT // 8
#: The runs whose published output a snapshot remembers (a rerun of an older one reads nothing).
MAX_RUNS = 48
_CHUNK = 1 << 16


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
    """An :class:`IdSet` that can be listed, compared with another and stored."""

    def __contains__(self, instance_id: object) -> bool:
        if not isinstance(instance_id, str):
            return False
        number = _number(instance_id)
        if number is None:
            return instance_id in self._others
        byte, bit = divmod(number, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)

    def missing_from(self, newer: SnapshotIds) -> Iterator[str]:
        """The ids of this set that ``newer`` lacks: decimal ones ascending, then the others sorted.

        The bitmaps are compared a chunk at a time as integers (``old & ~new``): a few hundred KB in flight
        whatever the form's size, and only the bits that differ are looked at one by one.
        """
        old, new = self._bits, newer._bits
        for offset in range(0, len(old), _CHUNK):
            gone = _as_int(old[offset : offset + _CHUNK]) & ~_as_int(new[offset : offset + _CHUNK])
            if not gone:
                continue
            chunk = gone.to_bytes(min(_CHUNK, len(old) - offset), "little")
            for index, byte in enumerate(chunk):
                if byte:
                    base = (offset + index) * 8
                    for bit in range(8):
                        if byte >> bit & 1:
                            yield str(base + bit)
        yield from sorted(other for other in self._others if other not in newer._others)

    def body(self) -> bytes:
        """The set as bytes (not compressed): the bitmap's length, the bitmap, the other ids as JSON."""
        bits = bytes(self._bits).rstrip(b"\0")
        return struct.pack(">Q", len(bits)) + bits + json.dumps(sorted(self._others)).encode()

    @classmethod
    def from_body(cls, body: bytes, count: int) -> SnapshotIds:
        (length,) = struct.unpack_from(">Q", body)
        if length > MAX_BITS_BYTES or 8 + length > len(body):
            raise ValueError("bitmap length out of range")
        ids = cls()
        ids._bits = bytearray(body[8 : 8 + length])
        others = json.loads(body[8 + length :])
        if not isinstance(others, list) or not all(isinstance(o, str) for o in others):
            raise ValueError("other ids are not a list of texts")
        ids._others = set(others)
        if any(_number(o) is not None for o in ids._others) or len(ids._others) != len(others):
            raise ValueError("other ids repeat or belong in the bitmap")
        ids._count = int.from_bytes(ids._bits, "little").bit_count() + len(ids._others)
        if ids._count != count:
            raise ValueError(f"holds {ids._count} ids where its header says {count}")
        return ids


def build(ids: Iterable[str]) -> SnapshotIds:
    result = SnapshotIds()
    for instance_id in ids:
        result.add(instance_id)
    return result


@dataclass(frozen=True)
class Snapshot:
    """A decoded, verified snapshot: its ids and its header's facts."""

    ids: SnapshotIds
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
class Header:
    """A snapshot's verified header alone (read first, before any body byte, so a planted file costs at most
    :data:`MAX_HEADER_BYTES`)."""

    length: int
    body: dict[str, Any]

    @property
    def file_bytes(self) -> int:
        """The whole file's size the header declares (0: not declared, an older snapshot)."""
        compressed = self.body.get("compressed_bytes")
        return self.length + 1 + compressed if isinstance(compressed, int) and compressed >= 0 else 0

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

    def encode(self, snapshot: Snapshot) -> bytes:
        raw = snapshot.ids.body()
        compressed = zlib.compress(raw, 6)
        header: dict[str, Any] = {
            "format": FORMAT,
            "v": VERSION,
            "identity": asdict(snapshot.identity),
            "started_ms": snapshot.started_ms,
            "finished_ms": snapshot.finished_ms,
            "run_id": snapshot.run_id,
            "gone": snapshot.gone,
            "listed_at_ms": snapshot.listed_at_ms,
            "runs": list(snapshot.runs[-MAX_RUNS:]),
            "compressed_bytes": len(compressed),
            "count": len(snapshot.ids),
            "body_bytes": len(raw),
            "body_sha256": hashlib.sha256(compressed).hexdigest(),
        }
        header["mac"] = self._mac(header)
        return json.dumps(header, sort_keys=True).encode() + b"\n" + compressed

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
        if header.get("v") != VERSION:
            raise _refused(where, f"has format version {header.get('v')!r}; this provider reads {VERSION}")
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
        return Header(len(line), body)

    def decode(self, data: bytes, expected: Identity, where: str) -> Snapshot:
        """The snapshot in ``data`` once it proved to be this connection's, of ``expected``, unaltered."""
        header = self.decode_header(data, expected, where)
        body = header.body
        compressed = data[header.length + 1 :]
        if hashlib.sha256(compressed).hexdigest() != body.get("body_sha256"):
            raise _refused(where, "has a body that is not the one its header was signed with")
        try:
            declared = int(body["body_bytes"])
            if not 8 <= declared <= MAX_BITS_BYTES + 8 + len(compressed) * 1100:
                raise ValueError("declared size out of range")
            inflater = zlib.decompressobj()
            raw = inflater.decompress(compressed, declared + 1)
            if len(raw) != declared or not inflater.eof:
                raise ValueError("body size differs from its header's")
            ids = SnapshotIds.from_body(raw, int(body["count"]))
            return Snapshot(
                ids=ids,
                identity=expected,
                started_ms=int(body["started_ms"]),
                finished_ms=int(body["finished_ms"]),
                run_id=str(body["run_id"]),
                gone=int(body["gone"]),
                listed_at_ms=int(body.get("listed_at_ms", 0)),
                runs=tuple(entry for entry in body.get("runs", ()) if isinstance(entry, dict)),
            )
        except (ValueError, KeyError, TypeError, struct.error, zlib.error) as exc:
            raise _refused(where, f"cannot be decoded ({exc})") from None


def _refused(where: str, why: str) -> DeyelSnapshotError:
    return DeyelSnapshotError(
        f"the id snapshot at {where} {why}; nothing was reported and the file was left as it is. Remove it "
        f"(the next run then starts a new snapshot and reports nothing gone) or point snapshot= elsewhere"
    )


def _as_int(chunk: bytes | bytearray) -> int:
    return int.from_bytes(chunk, "little")


#: Canonical decimals below the bitmap limit are bits; anything else a text in the set (IdSet's rule).
_number = _small_number
