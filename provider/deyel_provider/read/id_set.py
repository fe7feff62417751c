"""The instance ids an extraction has written, kept small enough for a million-instance form.

Deyel issues ids as decimal strings of a growing sequence: those are bits in a bitmap (125 KB per million),
anything else an exact string in a set. Membership is exact either way: no hash collision can drop a record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import compress, count, islice

#: Ids up to this value go to the bitmap (at most 32 MiB of bits); larger or non-decimal ids to the set.
_BITMAP_LIMIT = 1 << 28
#: Ids taken at a time by :meth:`IdSet.update` (classified, parsed and encoded in C a batch at a time). 4096
#: were no faster and raised the peak of a 1M-UUID comparison by 3 MB (the strings and their bytes held).
_BATCH = 1024


class IdSet:
    def __init__(self) -> None:
        self._bits = bytearray()
        self._others: set[str] = set()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, instance_id: str) -> bool:
        """Remember ``instance_id``; False when it was there already."""
        number = _small_number(instance_id)
        if number is not None:
            return self._add_number(number)
        if instance_id in self._others:
            return False
        self._others.add(instance_id)
        self._count += 1
        return True

    def update(self, ids: Iterable[str]) -> None:
        """Remember each of ``ids``, as :meth:`add` would one at a time, with the per-id work done in C a
        batch at a time (what a listing of 10M ids waits for)."""
        ahead = iter(ids)
        while batch := list(islice(ahead, _BATCH)):
            numbers, others = _split(batch)
            if numbers:
                self._add_numbers(numbers)
            if others:
                self._add_others(others)

    def _add_others(self, others: list[str]) -> None:
        before = len(self._others)
        self._others.update(others)
        self._count += len(self._others) - before

    def _grow(self, byte: int) -> None:
        # Grow by doubling: amortised O(1), and a sequence of ids costs one bit each; never past the
        # bitmap's limit (32 MiB), whatever the doubling would reach.
        bits = self._bits
        bits.extend(bytes(min(max(byte + 1, 2 * len(bits)), _BITMAP_LIMIT // 8) - len(bits)))

    def _add_number(self, number: int) -> bool:
        byte, bit = divmod(number, 8)
        bits = self._bits
        if byte >= len(bits):
            self._grow(byte)
        if bits[byte] >> bit & 1:
            return False
        bits[byte] |= 1 << bit
        self._count += 1
        return True

    def _add_numbers(self, numbers: list[int]) -> None:
        top = max(numbers) >> 3
        if top >= len(self._bits):
            self._grow(top)
        bits, new = self._bits, 0
        for number in numbers:
            byte, mask = number >> 3, 1 << (number & 7)
            if not bits[byte] & mask:
                bits[byte] |= mask
                new += 1
        self._count += new


def set_bits(data: bytes, first: int) -> Iterator[int]:
    """The numbers of the bits set in ``data`` (bit ``n`` of byte ``n // 8``), counted from ``first``,
    ascending: the zero bytes are skipped in C (a diff of two bitmaps is mostly zeros)."""
    for index in compress(count(), data):
        byte, base = data[index], first + index * 8
        for bit in range(8):
            if byte >> bit & 1:
                yield base + bit


def _small_number(text: str) -> int | None:
    # Canonical decimals only ("7", not "07" or "+7"), so two spellings can never share a bit.
    if not text.isdecimal() or not text.isascii() or (len(text) > 1 and text[0] == "0") or len(text) > 9:
        return None
    number = int(text)
    return number if number < _BITMAP_LIMIT else None


def _split(batch: list[str]) -> tuple[list[int], list[str]]:
    """``batch`` as the numbers of its bitmap ids (see :func:`_small_number`) and its other ids, in order.
    A batch of one kind (a listing's usual case) is told in C; a mixed one id by id."""
    if not any(map(str.isdecimal, batch)):
        return [], batch
    shortest = min(map(len, batch))
    if shortest > 9:
        return [], batch  # decimals, all past the bitmap (a ten-digit sequence)
    text = "".join(batch)
    if shortest and text.isascii() and text.encode().isdigit():  # ASCII digits (faster told as bytes)
        if not (text.startswith("0") or "\n0" in "\n".join(batch)):  # no zero-led id ("0" is told below)
            try:
                numbers = list(map(int, batch))
            except ValueError:  # more digits than int() reads: not a bitmap id, told below
                pass
            else:
                if max(numbers) < _BITMAP_LIMIT:  # so none has more than 9 digits
                    return numbers, []
    numbers, others = [], []
    for instance_id in batch:
        number = _small_number(instance_id)
        if number is None:
            others.append(instance_id)
        else:
            numbers.append(number)
    return numbers, others
