"""The instance ids an extraction has written, kept small enough for a million-instance form.

Deyel issues ids as decimal strings of a growing sequence: those are bits in a bitmap (125 KB per million),
anything else an exact string in a set. Membership is exact either way: no hash collision can drop a record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress, count, islice, repeat
from operator import setitem, sub

import msgspec

#: Ids up to this value go to the bitmap (at most 32 MiB of bits); larger or non-decimal ids to the set.
_BITMAP_LIMIT = 1 << 28
#: A page of ids read as numbers in one C call: JSON's integers are canonical decimals ("7", not "07" or
#: "+7"), once every character is an ASCII digit (so no sign, space, point or exponent reaches it).
_NUMBERS = msgspec.json.Decoder(list[int])
#: Byte ``1`` to bit ``j`` (every other byte to 0), for each ``j``: eight bytes of 0/1 flags packed into one.
_FLAG_TO_BIT = [bytes((1 << j) if value == 1 else 0 for value in range(256)) for j in range(8)]
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

    def add_all(self, instance_ids: Sequence[str]) -> list[bool]:
        """:meth:`add` each of ``instance_ids`` in order; what each call would have returned.

        A page of canonical decimal ids below the bitmap's limit (Deyel's) is checked at once and set bit by
        bit without a call per id; any other page goes id by id through :meth:`add`."""
        numbers = _small_numbers(instance_ids)
        if numbers is None:
            add = self.add
            return [add(instance_id) for instance_id in instance_ids]
        return self._add_numbers(numbers)

    def update(self, ids: Iterable[str]) -> None:
        """Remember each of ``ids``, as :meth:`add` would one at a time, with the per-id work done in C a
        batch at a time (what a listing of 10M ids waits for)."""
        ahead = iter(ids)
        while batch := list(islice(ahead, _BATCH)):
            numbers, others = _split(batch)
            if numbers:
                self._set_numbers(numbers)
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

    def _set_numbers(self, numbers: list[int]) -> None:
        """Set the bits of ``numbers`` (each below the limit), counting the new ones. A dense batch (a listing
        in id order: at most 2 bytes of bitmap per id) is set in C: each id a 0/1 flag byte, eight flags
        packed into a byte by lookup tables, OR-ed into the bitmap as one integer; any other batch bit by bit
        (a third cheaper than :meth:`_add_numbers`, which tells each id's answer)."""
        first, top = min(numbers) >> 3, max(numbers) >> 3
        if top >= len(self._bits):
            self._grow(top)
        bits = self._bits
        size = top - first + 1
        if size > 2 * len(numbers):
            new = 0
            for number in numbers:
                byte, mask = number >> 3, 1 << (number & 7)
                old = bits[byte]
                if not old & mask:
                    bits[byte] = old | mask
                    new += 1
            self._count += new
            return
        flags = bytearray(8 * size)  # flag n - 8 * first for id n: byte k's bit j is flag 8k + j
        deque(map(setitem, repeat(flags), map(sub, numbers, repeat(8 * first)), repeat(1)), 0)
        packed = 0
        for bit, table in enumerate(_FLAG_TO_BIT):
            packed |= int.from_bytes(flags[bit::8].translate(table), "little")
        old_bits = int.from_bytes(bits[first : top + 1], "little")
        self._count += (packed & ~old_bits).bit_count()
        bits[first : top + 1] = (old_bits | packed).to_bytes(size, "little")

    def _add_numbers(self, numbers: list[int]) -> list[bool]:
        """Set the bits of ``numbers`` (each below the limit), in order; whether each was new."""
        top = max(numbers) >> 3
        if top >= len(self._bits):
            self._grow(top)
        bits = self._bits
        added: list[bool] = []
        append = added.append
        for number in numbers:
            byte, mask = number >> 3, 1 << (number & 7)
            old = bits[byte]
            if old & mask:
                append(False)
            else:
                bits[byte] = old | mask
                append(True)
        self._count += added.count(True)
        return added


def set_bits(data: bytes, first: int) -> Iterator[int]:
    """The numbers of the bits set in ``data`` (bit ``n`` of byte ``n // 8``), counted from ``first``,
    ascending: the zero bytes are skipped in C (a diff of two bitmaps is mostly zeros)."""
    for index in compress(count(), data):
        byte, base = data[index], first + index * 8
        for bit in range(8):
            if byte >> bit & 1:
                yield base + bit


def _small_numbers(texts: Sequence[str]) -> list[int] | None:
    """Every one of ``texts`` as :func:`_small_number` reads it; None unless each is such a number (and a
    str: ``join`` refuses anything else)."""
    if not texts:
        return None
    try:
        digits = "".join(texts)  # no id holds anything but 0-9 (a comma of "1,2" included)
        # isascii() reads a flag; for ASCII the bytes' isdigit() is str.isdecimal() without its Unicode lookup
        # per character (about 170 instructions per id of a sequence)
        if not (digits.isascii() and digits.encode().isdigit()) or len(digits) > 9 * len(texts):
            return None  # (more digits than that: an id of 10 or more, past the limit, no need to parse)
        # An empty id leaves ",," (or "[," ",]"), a zero-led one "07": neither is JSON, so each id is one
        # canonical integer (a big one is parsed as such: refused below, past the limit).
        numbers = _NUMBERS.decode("[" + ",".join(texts) + "]")
    except (TypeError, msgspec.DecodeError):  # a non-str id; not JSON
        return None
    return numbers if max(numbers) < _BITMAP_LIMIT else None


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
        return [], batch  # no decimal
    numbers = _small_numbers(batch)
    if numbers is not None:
        return numbers, []
    if min(map(len, batch)) > 9:
        return [], batch  # none short enough for the bitmap (a ten-digit sequence)
    numbers, others = [], []
    for instance_id in batch:
        number = _small_number(instance_id)
        if number is None:
            others.append(instance_id)
        else:
            numbers.append(number)
    return numbers, others
