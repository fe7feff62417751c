"""Reading a JSON Lines source: one object per line, each line read with the record's byte limit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO

from deyel_provider.exceptions import DeyelSourceError
from deyel_provider.load.records import Reader, Record


class JsonLinesReader(Reader):
    """The records of a JSON Lines file (blank lines skipped)."""

    def read(self, raw: IO[bytes]) -> Iterator[Record]:
        # readline, not iteration: Airflow 3.0's ObjectStoragePath file wrapper does not iterate. With a
        # limit: a line past max_record_bytes is refused having read only that much of it.
        number = 0
        readline = raw.readline  # once: Airflow's file wrapper finds it by __getattr__ on each access
        while line := self._line(readline, number + 1):
            number += 1
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                row = json.loads(line)
            except RecursionError:
                raise self._too_deep(where) from None
            except ValueError as exc:
                raise DeyelSourceError(f"{self.name}: {where} is not JSON ({str(exc)[:120]})") from None
            yield Record(where, self.values_of(row, where), len(line))
