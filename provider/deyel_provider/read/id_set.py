"""The instance ids an extraction has written, kept small enough for a million-instance form.

Deyel issues ids as decimal strings of a growing sequence: those are bits in a bitmap (125 KB per million),
anything else an exact string in a set. Membership is exact either way: no hash collision can drop a record.
"""

from __future__ import annotations

#: Ids up to this value go to the bitmap (at most 32 MiB of bits); larger or non-decimal ids to the set.
_BITMAP_LIMIT = 1 << 28


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

    def _add_number(self, number: int) -> bool:
        byte, bit = divmod(number, 8)
        bits = self._bits
        if byte >= len(bits):
            # Grow by doubling: amortised O(1), and a sequence of ids costs one bit each; never past the
            # bitmap's limit (32 MiB), whatever the doubling would reach.
            bits.extend(bytes(min(max(byte + 1, 2 * len(bits)), _BITMAP_LIMIT // 8) - len(bits)))
        if bits[byte] >> bit & 1:
            return False
        bits[byte] |= 1 << bit
        self._count += 1
        return True


def _small_number(text: str) -> int | None:
    # Canonical decimals only ("7", not "07" or "+7"), so two spellings can never share a bit.
    if not text.isdecimal() or not text.isascii() or (len(text) > 1 and text[0] == "0") or len(text) > 9:
        return None
    number = int(text)
    return number if number < _BITMAP_LIMIT else None
