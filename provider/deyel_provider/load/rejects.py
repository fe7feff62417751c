"""The records a load could not write, with Deyel's reasons: JSON Lines written beside the target and
published by one rename (:mod:`deyel_provider.storage.publish`: never through a link, nothing partial under
the
final name). It holds whole source records, so a local file is published 0600 (only its owner reads it,
whatever the umask); an object store has no file mode: its access is the bucket's.

Each reject's texts come from the load (server-supplied values in them quoted through the connection's
redactor and cut: :func:`~deyel_provider.http.redact.quoted`) or from Deyel's error answers (redacted and
bounded
by :mod:`deyel_provider.http.error_bodies`); the record is the source's own."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from deyel_provider.http.error_bodies import readable
from deyel_provider.storage import publish
from deyel_provider.storage.paths import as_storage_path

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
# A record holding a lone surrogate has no UTF-8 form: written with \uXXXX escapes (still the same JSON).
_json_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode


@dataclass(frozen=True)
class Reject:
    """A record Deyel refused (or the load could not place), and why.

    ``errors`` has Deyel's shape: ``[{"message": ..., "attribute-name": ...}]``; ``status`` is the HTTP
    status of the refusal (None when the load itself refused, e.g. no instance to update).
    """

    key: str
    where: str
    errors: list[dict[str, Any]]
    status: int | None
    record: dict[str, Any]

    def summary(self) -> str:
        """One line for the log and the load's error, bounded (``error_bodies.MAX_DETAIL``); its server texts
        were redacted when the reject was made."""
        first = self.errors[0] if self.errors else {}
        attribute = first.get("attribute-name") or ""
        where = f" [{attribute}]" if attribute else ""
        return readable(f"{self.where} (key {self.key!r}): {first.get('message', '')}{where}")


class RejectsFile:
    """Rejected records as JSON Lines, one per line in the order they were refused.

    :param target: where the file is published (any fsspec protocol, or a local path).
    :param conn_id: the object store's Airflow connection, if it needs one.
    """

    def __init__(self, target: str | ObjectStoragePath, conn_id: str | None = None) -> None:
        self.target = as_storage_path(target, conn_id)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        publish.remove_leftovers(self.target)
        self._temp = publish.temp_beside(self.target, private=True)
        try:
            self._sink = self._temp.open("wb")
        except BaseException:
            publish.discard(self._temp)
            raise
        self.count = 0

    def add(self, reject: Reject) -> None:
        entry = asdict(reject)
        try:
            line = _json(entry).encode("utf-8")
        except UnicodeEncodeError:
            line = _json_ascii(entry).encode("ascii")
        self._sink.write(line + b"\n")
        self.count += 1

    def publish(self) -> str:
        """Move the file under its final name (an older one is replaced); return that name."""
        self._sink.close()
        self._temp.move(self.target)
        return str(self.target)

    def discard(self) -> None:
        """Drop the temporary file: the load failed before it knew every reject."""
        try:
            self._sink.close()
        finally:
            publish.discard(self._temp)
