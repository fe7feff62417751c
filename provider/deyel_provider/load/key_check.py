"""The key check: before anything is written, the whole source is read once; every record has a key that
Deyel's search can find, and no two share one (compared as the key's type).

It keeps 8 bytes per record (a hash of its key) and sorts them in runs, so a source of millions of records
is checked in tens of MB; a hash that repeats is confirmed by comparing the keys themselves in a second pass.
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
from collections.abc import Iterator
from typing import Protocol

from deyel_provider.exceptions import DeyelSourceError
from deyel_provider.load.key_types import KeyType, NotAKey, key_text, normalise, written_value
from deyel_provider.load.records import Record

#: Hashes sorted at once when looking for repeated keys (8 MB per run).
_RUN = 1 << 20
#: Repeated keys named in the error (the rest are counted).
_NAMED = 5
#: What separates the filters of Deyel's ``search`` (``f=op:v,f=op:v``): a key holding it cannot be searched.
SEARCH_SEPARATOR = ","


class KeyedSource(Protocol):
    """What the check reads of a source (:class:`~deyel_provider.load.sources.Source`)."""

    name: str

    def header(self) -> list[str] | None: ...

    def records(self) -> Iterator[Record]: ...


def _key_hash(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _repeated(hashes: array[int]) -> set[int]:
    """The hashes that occur more than once: runs sorted separately, then merged."""
    runs = [array("Q", sorted(hashes[start : start + _RUN])) for start in range(0, len(hashes), _RUN)]
    repeated: set[int] = set()
    previous = None
    for value in heapq.merge(*runs):
        if value == previous:
            repeated.add(value)
        previous = value
    return repeated


def check_keys(source: KeyedSource, key: str, key_type: KeyType = "text") -> int:
    """Read the whole source once: every record has ``key`` and no two share a value; return their number.

    Keys are compared as ``key_type`` (:func:`~deyel_provider.load.key_types.normalise`): for a number, ``7``
    and
    ``"007"`` are one key, and a value that is not a number is an error naming its record.

    Raises :class:`DeyelSourceError` naming the records to fix (nothing has been written yet).
    """
    header = source.header()
    if header is not None and key not in header:
        raise DeyelSourceError(
            f"{source.name}: the header has no column {key!r} (the key); columns: {header[:20]}"
        )
    hashes: array[int] = array("Q")
    for record in source.records():
        text = _key_of(source, record, key, key_type)
        if SEARCH_SEPARATOR in text:
            raise DeyelSourceError(
                f"{source.name}: {record.where} has {text!r} in {key!r}, the key: a key holding "
                f"{SEARCH_SEPARATOR!r} cannot be searched (Deyel's search separates filters with it and "
                f"documents no escape), so its instance would never be found and be created again on every "
                f"run; change the key in the source or match on another field"
            )
        hashes.append(_key_hash(text))
    suspects = _repeated(hashes)
    count = len(hashes)
    del hashes
    if suspects:
        _name_duplicates(source, key, key_type, suspects)
    return count


def _key_of(source: KeyedSource, record: Record, key: str, key_type: KeyType) -> str:
    """The record's key as compared (its canonical text), or a :class:`DeyelSourceError` naming the record."""
    value = record.values.get(key)
    try:
        text = normalise(value, key_type)
        if text is not None:
            written_value(key, value, key_type)  # a key a create cannot send exactly: created every run
    except NotAKey as exc:
        raise DeyelSourceError(
            f"{source.name}: {record.where} has {str(value)[:80]!r} in {key!r}, the key, which is compared "
            f"as a number ({exc}); fix the value, or pass key_type='text' if the field holds text"
        ) from None
    if text is None:
        what = "has no" if value in (None, "") else f"has a {type(value).__name__} in"
        raise DeyelSourceError(
            f"{source.name}: {record.where} {what} {key!r}, the key: every record needs a text or number "
            f"there to be matched with an instance"
        )
    return text


def _name_duplicates(source: KeyedSource, key: str, key_type: KeyType, suspects: set[int]) -> None:
    places: dict[str, list[str]] = {}
    for record in source.records():
        text = _key_of(source, record, key, key_type)
        if _key_hash(text) in suspects:
            # The raw value too when it is written otherwise ('007' for the numeric key '7').
            raw = key_text(record.values.get(key))
            shown = record.where if raw == text else f"{record.where} ({str(raw)[:80]!r})"
            places.setdefault(text, []).append(shown)
    repeated = {text: where for text, where in places.items() if len(where) > 1}
    if not repeated:
        return  # 64-bit hashes that collide, keys that differ
    named = "; ".join(
        f"{text!r} at {', '.join(where[:3])}" for text, where in list(repeated.items())[:_NAMED]
    )
    more = f" and {len(repeated) - _NAMED} more" if len(repeated) > _NAMED else ""
    compared = " (compared as numbers: 7 and '007' are one key)" if key_type == "number" else ""
    raise DeyelSourceError(
        f"{source.name}: {len(repeated)} values of the key {key!r} appear in more than one record{compared} "
        f"({named}{more}): each key names one instance; remove or merge the repeated records"
    )
