"""Reading a staged part back for a resumed retry: its bytes counted and hashed, its records counted through
its codec (:mod:`deyel_provider.extract.resume` compares them with what the earlier attempt recorded)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import IO, Any, cast

from deyel_provider.storage.compression import decoded

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ReadBack:
    """What a staged part holds: its bytes, their SHA-256, and its records (None: its codec could not read
    it, damaged bytes that the size or the hash then tell apart)."""

    size: int
    sha256: str
    records: int | None


def read_back(raw: IO[bytes], codec: str | None, fmt: str) -> ReadBack:
    """Read ``raw`` (a part's file, as stored) to its end once: hashed as stored, counted as decoded."""
    hashed = _Reading(raw)
    try:
        records: int | None = count_records(decoded(cast("IO[bytes]", hashed), codec), fmt)
    except Exception:  # a codec's error on damaged bytes (EOFError, zlib's): the size or hash says which
        records = None
    while hashed.read(_CHUNK):
        pass
    return ReadBack(hashed.size, hashed.hexdigest(), records)


def count_records(stream: Any, fmt: str) -> int:
    """Records in a part's decoded bytes: lines of JSON Lines, rows of CSV after the header.

    A CSV row ends at a line break outside quotes (the writer quotes a cell holding a quote or a line break,
    and doubles its quotes); counted on the bytes, so a cell may be longer than the csv module's field limit.
    """
    count, quoted = 0, False
    while chunk := stream.read(_CHUNK):
        if fmt != "csv":
            count += chunk.count(b"\n")
            continue
        for index, piece in enumerate(chunk.split(b'"')):
            quoted = quoted != (index > 0)
            if not quoted:
                count += piece.count(b"\n")
    return max(0, count - 1) if fmt == "csv" else count


class _Reading(io.RawIOBase):
    """Reads ``raw`` and hashes what passes (SHA-256), counting bytes."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self._sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self._sha.update(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
