"""One record of a load's source, and what every format's reader shares: the bounds a record is held to
(``max_record_bytes``, nesting) and the :class:`~deyel_provider.exceptions.DeyelSourceError` naming the
record that passes one (see :mod:`deyel_provider.load.sources`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from deyel_provider.exceptions import DeyelSourceError
from deyel_provider.load.values import MAX_DEPTH, TooDeep, UnsupportedValue, deyel_value


@dataclass(frozen=True)
class Record:
    """One record of the source: where it is (``line 12``, ``record 3``), for messages, and its values."""

    where: str
    values: dict[str, Any]
    #: Bytes it took in the source (0 for a list's records, already in memory).
    size: int = 0


class Reader:
    """Reads one source's records from its open file, held to its bounds (a format's reader extends it).

    :param name: the source as messages name it.
    :param max_record_bytes: the most bytes of one record.
    :param max_batch_bytes: the most bytes of the records of one batch, and of a Parquet run of rows.
    """

    def __init__(self, name: str, max_record_bytes: int, max_batch_bytes: int) -> None:
        self.name = name
        self.max_record_bytes = max_record_bytes
        self.max_batch_bytes = max_batch_bytes

    def read(self, raw: IO[bytes]) -> Iterator[Record]:
        """Every record of the open file, in order, with Deyel values."""
        raise NotImplementedError

    def _too_large(self, where: str, size: str) -> DeyelSourceError:
        return DeyelSourceError(
            f"{self.name}: {where} is {size}, past max_record_bytes={self.max_record_bytes}: split the "
            f"record in the source, or raise max_record_bytes if a record of Deyel's can really be that large"
        )

    def _line(self, readline: Callable[[int], bytes], number: int) -> bytes:
        """The next line (its ending removed; ``b""`` at the end), read holding at most the record's limit."""
        line = readline(self.max_record_bytes + 2)
        if not line:
            return line
        body = line.rstrip(b"\r\n")
        if len(body) > self.max_record_bytes:
            raise self._too_large(f"line {number}", f"more than {self.max_record_bytes} bytes long")
        return body or b"\n"  # an empty line is not the end

    def values_of(self, row: Any, where: str) -> dict[str, Any]:
        if not isinstance(row, Mapping) or not all(isinstance(k, str) for k in row):
            raise DeyelSourceError(
                f"{self.name}: {where} is {type(row).__name__}, not an object of field names to values"
            )
        values: dict[str, Any] = {}
        for field, value in row.items():
            try:
                values[field] = deyel_value(field, value)  # refuses nesting past MAX_DEPTH as it goes
            except TooDeep:
                raise self._too_deep(where) from None
            except UnsupportedValue as exc:
                raise DeyelSourceError(
                    f"{self.name}: {where} holds in {field!r} {exc} (a text, number, boolean, date or grid); "
                    f"convert it in the source, e.g. to text"
                ) from None
        return values

    def _too_deep(self, where: str) -> DeyelSourceError:
        return DeyelSourceError(
            f"{self.name}: {where} holds a value nested deeper than {MAX_DEPTH} levels (a Deyel value is at "
            f"most a grid of rows: 2 levels); flatten it in the source"
        )
