"""A snapshot's body, written and read as a stream: the comparison of two id sets in a bounded memory.

The body is one zlib stream of: the bitmap's length (8 bytes, big-endian), the bitmap (bit ``n`` of byte
``n // 8`` for decimal id ``n``), then the other ids ascending (by UTF-8 bytes, Python's order of ``str``):

- version 2 (written now): in blocks (:func:`~deyel_provider.read.id_runs.encode_block`: a count, the
  lengths, the bytes);
- version 1 (read only): as a JSON array of strings, ``json.dumps(sorted(ids))``, parsed a string at a time.

:func:`compare` reads the previous body a chunk at a time (64 KiB of bitmap, a block of ids), walks the
current ids beside it (:class:`~deyel_provider.read.id_runs.CurrentIds`: the bitmap, then the merged
runs), reports each previous id the current ids lack as it is met, and writes the current ids as the next
body. What it holds is the current bitmap (at most 32 MiB; 1.25 MB for 10M sequential ids) and a few
blocks, never all the ids.

Every rule a decoder relies on is checked as the ids stream past (ascending without repeats, decimal ids
only in the bitmap, sizes, count, digest) and raised as :class:`BodyError`: the caller turns it into a typed
error before anything was published.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from json import JSONDecodeError
from json.decoder import scanstring  # type: ignore[attr-defined]
from operator import lt
from typing import IO

from deyel_provider.read.id_runs import (
    BLOCK_BYTES,
    BLOCK_IDS,
    CurrentIds,
    decode,
    decode_blocks,
    encode,
    encode_blocks,
    join,
)
from deyel_provider.read.id_set import _BITMAP_LIMIT, set_bits

#: The most bytes of the bitmap a body may hold (every id below the bitmap limit).
MAX_BITS_BYTES = _BITMAP_LIMIT // 8
#: Bitmap bytes compared at a time, and compressed bytes read at a time.
CHUNK = 1 << 16
#: The longest id a version-1 body's JSON may hold before it is refused (a bound on the parser's buffer).
MAX_JSON_ID = 1 << 20
_LENGTH = 8


class BodyError(ValueError):
    """A stored body that breaks a rule of its format (the caller names the file in a typed error)."""


@dataclass(frozen=True)
class BodyFacts:
    """What the header states about its body (and a writer reports of the body it wrote)."""

    count: int
    body_bytes: int
    compressed_bytes: int | None
    sha256: str


class BodyWriter:
    """Writes a body (version 2) to ``sink``: :meth:`bitmap` once, then each :meth:`block` of other ids."""

    def __init__(self, sink: IO[bytes], level: int = 1) -> None:
        self._sink = sink
        self._deflate = zlib.compressobj(level)
        self._sha = hashlib.sha256()
        self._count = self._raw = self._compressed = 0

    def bitmap(self, bits: bytes | bytearray) -> None:
        self._emit(len(bits).to_bytes(_LENGTH, "big"))
        for offset in range(0, len(bits), CHUNK):
            chunk = bits[offset : offset + CHUNK]
            self._count += int.from_bytes(chunk, "little").bit_count()
            self._emit(chunk)

    def block(self, ids: list[bytes]) -> None:
        """The next ids, ascending (after the previous block's)."""
        self._count += len(ids)
        for data in encode_blocks(ids):
            self._emit(data)

    def finish(self) -> BodyFacts:
        self._out(self._deflate.flush())
        return BodyFacts(self._count, self._raw, self._compressed, self._sha.hexdigest())

    def _emit(self, raw: bytes | bytearray) -> None:
        self._raw += len(raw)
        self._out(self._deflate.compress(raw))

    def _out(self, compressed: bytes) -> None:
        if compressed:
            self._sha.update(compressed)
            self._compressed += len(compressed)
            self._sink.write(compressed)


class BodyReader:
    """Reads the body at ``source``'s position: :meth:`bitmap_chunks`, then :meth:`others`, then
    :meth:`finish` (which proves the whole body was the one ``facts`` describe)."""

    def __init__(self, source: IO[bytes], version: int, facts: BodyFacts) -> None:
        if version not in (1, 2):
            raise BodyError(f"no body of version {version!r}")
        self._source = source
        self._version = version
        self._facts = facts
        self._sha = hashlib.sha256()
        self._inflater = zlib.decompressobj()
        self._count = self._raw = self._compressed = 0
        self._chunks = self._inflate()
        self._pending = b""
        self._stage = "bitmap"

    def bitmap_chunks(self) -> Iterator[tuple[int, bytes]]:
        """``(byte offset, bytes)`` of the bitmap, :data:`CHUNK` bytes at a time."""
        self._advance("bitmap", "others")
        length = int.from_bytes(self._read(_LENGTH), "big")
        if length > MAX_BITS_BYTES:
            raise BodyError("bitmap length out of range")
        for offset in range(0, length, CHUNK):
            chunk = self._read(min(CHUNK, length - offset))
            self._count += int.from_bytes(chunk, "little").bit_count()
            yield offset, chunk

    def others(self) -> Iterator[list[bytes]]:
        """The other ids as stored (UTF-8 bytes) in blocks, checked ascending, repeat-free and not decimal."""
        self._advance("others", "finish")
        rest = self._rest()
        if self._version == 2:
            blocks = decode_blocks(rest)
        else:
            blocks = _text_blocks(_json_strings(rest))
        last = None
        while True:
            try:
                block = next(blocks, None)
            except BodyError:
                raise
            except ValueError as exc:  # a block cut short, bad JSON, a byte that is not ASCII
                raise BodyError(str(exc)) from None
            if block is None:
                return
            ascending = all(map(lt, block, islice(block, 1, None)))
            if not ascending or (last is not None and block[0] <= last) or _has_bitmap_id(block):
                raise BodyError("other ids repeat, are out of order or belong in the bitmap")
            self._count += len(block)
            last = block[-1]
            yield block

    def finish(self) -> None:
        self._advance("finish", "done")
        if self._pending or next(self._chunks, b""):
            raise BodyError("bytes after the ids")
        facts = self._facts
        if self._count != facts.count:
            raise BodyError(f"holds {self._count} ids where its header says {facts.count}")
        if self._raw != facts.body_bytes:
            raise BodyError("body size differs from its header's")
        if facts.compressed_bytes is not None and self._compressed != facts.compressed_bytes:
            raise BodyError("compressed size differs from its header's")
        if self._sha.hexdigest() != facts.sha256:
            raise BodyError("the body is not the one its header was signed with")

    def _advance(self, stage: str, following: str) -> None:
        if self._stage != stage:
            raise RuntimeError(f"a body is read bitmap, others, finish in that order (not {stage} now)")
        self._stage = following

    def _inflate(self) -> Iterator[bytes]:
        inflater = self._inflater
        declared = self._facts.compressed_bytes
        while not inflater.eof:
            want = CHUNK if declared is None else min(CHUNK, declared - self._compressed)
            block = self._source.read(want) if want > 0 else b""
            if not block:
                raise BodyError("the body ends before its compressed stream does")
            self._compressed += len(block)
            self._sha.update(block)
            try:
                data = inflater.decompress(block, CHUNK)
            except zlib.error as exc:
                raise BodyError(f"not a zlib stream ({exc})") from None
            while True:
                self._raw += len(data)
                if self._raw > self._facts.body_bytes:
                    raise BodyError("body larger than its header says")
                if data:
                    yield data
                if not inflater.unconsumed_tail:
                    break
                try:
                    data = inflater.decompress(inflater.unconsumed_tail, CHUNK)
                except zlib.error as exc:
                    raise BodyError(f"not a zlib stream ({exc})") from None
        if inflater.unused_data or self._source.read(1):
            raise BodyError("bytes after the compressed body")

    def _read(self, size: int) -> bytes:
        parts = []
        while size > 0:
            if not self._pending:
                self._pending = next(self._chunks, b"")
                if not self._pending:
                    raise BodyError("the body ends early")
            part, self._pending = self._pending[:size], self._pending[size:]
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    def _rest(self) -> Iterator[bytes]:
        if self._pending:
            pending, self._pending = self._pending, b""
            yield pending
        yield from self._chunks


def compare(
    previous: BodyReader | None,
    current: CurrentIds,
    writer: BodyWriter,
    gone: Callable[[str], None],
) -> int:
    """Call ``gone`` for each id of ``previous`` that ``current`` lacks (decimal ids ascending, then the
    others ascending), write ``current`` to ``writer``, and return how many ids ``current`` holds."""
    bits = current.bits()
    writer.bitmap(bits)
    if previous is not None:
        for offset, chunk in previous.bitmap_chunks():
            newer = bits[offset : offset + len(chunk)]
            lost = int.from_bytes(chunk, "little") & ~int.from_bytes(newer, "little")
            if lost:
                for number in set_bits(lost.to_bytes(len(chunk), "little"), offset * 8):
                    gone(str(number))

    def gone_block(block: list[bytes]) -> None:
        for data in block:
            gone(decode(data))

    older = previous.others() if previous is not None else iter(())
    others = join(older, current.others(), writer.block, gone_block)
    if previous is not None:
        previous.finish()
    return current.decimal_count + others


def _has_bitmap_id(block: list[bytes]) -> bool:
    """Whether an id of ``block`` follows the rule of :func:`~deyel_provider.read.id_set._small_number`
    (a canonical decimal below the bitmap's limit belongs in the bitmap)."""
    if not any(map(bytes.isdigit, block)):
        return False
    return any(
        len(data) <= 9 and not (len(data) > 1 and data[0] == 0x30) and int(data) < _BITMAP_LIMIT
        for data in block
        if data.isdigit()
    )


def _text_blocks(texts: Iterator[str]) -> Iterator[list[bytes]]:
    """A version-1 body's strings in blocks, cut as stored ones are (ids, then bytes)."""
    block: list[bytes] = []
    size = 0
    for text in texts:
        data = encode(text)
        block.append(data)
        size += len(data)
        if len(block) == BLOCK_IDS or size >= BLOCK_BYTES:
            yield block
            block, size = [], 0
    if block:
        yield block


def _json_strings(chunks: Iterator[bytes]) -> Iterator[str]:
    """The strings of a JSON array of strings (``json.dumps``'s ASCII), a chunk of text at a time."""
    # What may come next: "[" (open), a string or "]" (first), a string (value), "," or "]" (separator).
    text, pos, expect = "", 0, "open"
    for chunk in chunks:
        text = text[pos:] + chunk.decode("ascii")
        pos = 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos == len(text):
                break
            char = text[pos]
            if expect == "open" and char == "[":
                expect, pos = "first", pos + 1
            elif expect in ("first", "separator") and char == "]":
                if text[pos + 1 :].strip() or any(part.strip() for part in chunks):
                    raise ValueError("bytes after the other ids")
                return
            elif expect == "separator" and char == ",":
                expect, pos = "value", pos + 1
            elif expect in ("first", "value") and char == '"':
                try:
                    value, end = scanstring(text, pos + 1)
                except JSONDecodeError:
                    if len(text) - pos > MAX_JSON_ID:
                        raise ValueError("an id longer than any this provider reads") from None
                    break  # cut by the chunk: wait for the next one
                yield value
                expect, pos = "separator", end
            else:
                raise ValueError("the other ids are not a JSON array of strings")
    raise ValueError("the other ids' JSON array is not closed")
