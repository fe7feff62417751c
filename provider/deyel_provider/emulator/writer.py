"""Another user at work on the seeded form: edits, inserts and deletes between a client's listing requests.

Seeded from ``writer_seed``, so a test replays the same sequence of mutations for the same requests. Every
mutation is logged with the instance's id and its dtLastUpdate before and after, so a test can tell which
instances matched a filter for a whole run and which changed while it ran.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

from deyel_provider.emulator.records import SEEDED_FORM
from deyel_provider.emulator.settings import EmulatorSettings
from deyel_provider.emulator.store import DataStore, UpdateResult


@dataclass(frozen=True)
class Mutation:
    kind: str  # "edit", "insert" or "delete"
    id: int
    #: dtLastUpdate before the mutation (None for an insert) and after it (None for a delete).
    before_ms: int | None
    after_ms: int | None


class ConcurrentWriter:
    def __init__(self, settings: EmulatorSettings, store: DataStore) -> None:
        self._rates = (
            ("edit", settings.writer_edits),
            ("insert", settings.writer_inserts),
            ("delete", settings.writer_deletes),
        )
        self._active = any(rate > 0 for _, rate in self._rates)
        self._rng = random.Random(settings.writer_seed)
        self._store = store
        self._lock = threading.Lock()
        self._log: list[Mutation] = []

    def before_listing(self) -> None:
        """Mutate the form as the rates say: the whole part of a rate always, its fraction by chance."""
        if not self._active:
            return
        with self._lock:
            for kind, rate in self._rates:
                count = int(rate) + (1 if self._rng.random() < rate - int(rate) else 0)
                for _ in range(count):
                    mutation = self._mutate(kind)
                    if mutation is not None:
                        self._log.append(mutation)

    def set_rates(self, edits: float = 0.0, inserts: float = 0.0, deletes: float = 0.0) -> None:
        with self._lock:
            self._rates = (("edit", edits), ("insert", inserts), ("delete", deletes))
            self._active = any(rate > 0 for _, rate in self._rates)

    def log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(m) for m in self._log]

    def _mutate(self, kind: str) -> Mutation | None:
        store = self._store
        if kind == "insert":
            new_id, stamp = store.create(SEEDED_FORM, {"dsCompany": "Inserted while listing"})
            return Mutation("insert", new_id, None, int(stamp))
        # A live instance at random: a few draws find one unless most of the form is deleted.
        for _ in range(20):
            instance_id = self._rng.randint(1, max(1, store.next_id(SEEDED_FORM) - 1))
            current = store.get(SEEDED_FORM, instance_id)
            if current is None:
                continue
            before = int(current["dtLastUpdate"])
            if kind == "delete":
                return (
                    Mutation("delete", instance_id, before, None)
                    if store.delete(SEEDED_FORM, instance_id)
                    else None
                )
            values = {"dsNotes": f"edited while listing ({len(self._log)})", "dtLastUpdate": str(before)}
            result, stamp = store.update(SEEDED_FORM, instance_id, values, partial=True)
            if result is not UpdateResult.UPDATED:
                return None
            return Mutation("edit", instance_id, before, int(stamp))
        return None
