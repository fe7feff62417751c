"""Form instances: the generated CRM_ACCOUNT collection plus an overlay of the mutations made through the API.

The seeded records are never stored; the overlay holds only what clients created, changed or deleted.
A listing is a sorted sequence of ids: a ``range`` when it can be computed arithmetically (no mutations,
and no search or one on dtLastUpdate alone), else an ``array`` of ids built once per (form, search, overlay
version) and cached, so paging through it does not rescan.
"""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from deyel_provider.emulator.records import FIELD_NAMES, SEEDED_FORM, RecordGenerator
from deyel_provider.emulator.search import Search
from deyel_provider.emulator.settings import EmulatorSettings

# Keys the server owns: whatever a client sends under them is ignored.
RESERVED_KEYS = frozenset({"idObjectValue", "idObjectName", "dtLastUpdate", "links"})
_CACHE_ENTRIES = 8


class UpdateResult(Enum):
    UPDATED = "updated"
    NOT_FOUND = "not_found"
    MISSING_VERSION = "missing_version"
    STALE = "stale"


@dataclass
class _Form:
    seeded: int
    next_id: int
    changed: dict[int, dict[str, Any]] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    version: int = 0


@dataclass(frozen=True)
class _Snapshot:
    seeded: int
    version: int
    changed: dict[int, dict[str, Any]]
    deleted: frozenset[int]


def _dict_getter(instance_id: int, values: dict[str, Any]) -> Callable[[str], Any]:
    def get(name: str) -> Any:
        return str(instance_id) if name == "idObjectValue" else values.get(name)

    return get


class DataStore:
    """Thread-safe: the overlay is guarded by one lock; record generation and scans run outside it."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self._generator = RecordGenerator(
            seed=settings.seed,
            updated_start_ms=settings.updated_start_ms,
            updated_step_ms=settings.updated_step_ms,
            v80=settings.version == "8.0",
        )
        self._start_ms = settings.updated_start_ms
        self._step_ms = settings.updated_step_ms
        self._lock = threading.Lock()
        self._forms: dict[str, _Form] = {
            SEEDED_FORM: _Form(seeded=settings.records, next_id=settings.records + 1)
        }
        self._last_ms = 0
        self._cache: OrderedDict[tuple[str, str], tuple[int, Sequence[int]]] = OrderedDict()

    # -- reading -------------------------------------------------------------------------------------------

    def exists(self, form: str) -> bool:
        with self._lock:
            return form in self._forms

    def known_fields(self, form: str) -> frozenset[str] | None:
        """Top-level fields a search may name, when the form has a fixed schema (the seeded one)."""
        if form == SEEDED_FORM:
            return frozenset(FIELD_NAMES) | {"idObjectValue"}
        return None

    def get(self, form: str, instance_id: int) -> dict[str, Any] | None:
        with self._lock:
            state = self._forms.get(form)
            if state is None:
                return None
            changed = state.changed.get(instance_id)
            if changed is not None:
                return dict(changed)
            if instance_id in state.deleted or not 1 <= instance_id <= state.seeded:
                return None
        return self._generator.fields(instance_id - 1)

    def get_many(self, form: str, ids: Sequence[int]) -> list[tuple[int, dict[str, Any]]]:
        """The instances for a page of ids, skipping any deleted since the listing was computed."""
        with self._lock:
            state = self._forms.get(form)
            if state is None:
                return []
            changed = {i: dict(state.changed[i]) for i in ids if i in state.changed}
            deleted = {i for i in ids if i in state.deleted}
            seeded = state.seeded
        out = []
        fields = self._generator.fields
        for i in ids:
            values = changed.get(i)
            if values is None:
                if i in deleted or not 1 <= i <= seeded:
                    continue
                values = fields(i - 1)
            out.append((i, values))
        return out

    # -- listing -------------------------------------------------------------------------------------------

    def select(self, form: str, search: Search, search_key: str) -> Sequence[int]:
        """The sorted ids of the instances matching ``search``."""
        with self._lock:
            state = self._forms[form]
            cached = self._cache.get((form, search_key))
            if cached is not None and cached[0] == state.version:
                self._cache.move_to_end((form, search_key))
                return cached[1]
            snap = _Snapshot(state.seeded, state.version, dict(state.changed), frozenset(state.deleted))
        touched = snap.deleted | snap.changed.keys()
        seeded_range = self._arithmetic_range(snap.seeded, search)
        if seeded_range is not None and not touched:
            return seeded_range
        if seeded_range is not None:
            ids = array("q", seeded_range)
            for i in sorted(touched):
                if seeded_range.start <= i < seeded_range.stop:
                    del ids[bisect.bisect_left(ids, i)]
            for i in sorted(snap.changed):
                if search.matches(_dict_getter(i, snap.changed[i])):
                    bisect.insort(ids, i)
        else:
            ids = self._scan(snap, search)
        with self._lock:
            self._cache[(form, search_key)] = (snap.version, ids)
            self._cache.move_to_end((form, search_key))
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return ids

    def _arithmetic_range(self, seeded: int, search: Search) -> range | None:
        """Seeded ids as a range when the search allows it (dtLastUpdate is start + index * step)."""
        if not search.clauses:
            return range(1, seeded + 1)
        bounds = search.updated_range()
        if bounds is None:
            return None
        low, high = bounds
        first = max(0, -((self._start_ms - low) // self._step_ms))  # ceil((low - start) / step)
        last = min(seeded - 1, (high - self._start_ms) // self._step_ms)
        return range(first + 1, max(first, last + 1) + 1)

    def _scan(self, snap: _Snapshot, search: Search) -> array[int]:
        ids: array[int] = array("q")
        field_of = self._generator.field
        for i in range(snap.seeded):
            instance_id = i + 1
            if instance_id in snap.deleted or instance_id in snap.changed:
                continue

            def get(name: str, i: int = i) -> Any:
                return str(i + 1) if name == "idObjectValue" else field_of(i, name)

            if search.matches(get):
                ids.append(instance_id)
        for instance_id in sorted(snap.changed):
            if search.matches(_dict_getter(instance_id, snap.changed[instance_id])):
                bisect.insort(ids, instance_id)
        return ids

    # -- writing -------------------------------------------------------------------------------------------

    def _now_ms(self, previous: int = 0) -> int:
        # Strictly increasing, and past the previous value, so a second write always changes dtLastUpdate.
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1, previous + 1)
        return self._last_ms

    @staticmethod
    def _clean(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k not in RESERVED_KEYS}

    def create(self, form: str, values: dict[str, Any]) -> tuple[int, str]:
        with self._lock:
            state = self._forms.setdefault(form, _Form(seeded=0, next_id=1))
            instance_id = state.next_id
            state.next_id += 1
            stamp = str(self._now_ms())
            state.changed[instance_id] = {**self._clean(values), "dtLastUpdate": stamp}
            state.version += 1
        return instance_id, stamp

    def update(
        self, form: str, instance_id: int, values: dict[str, Any], *, partial: bool
    ) -> tuple[UpdateResult, str]:
        """Replace (PUT) or merge (PATCH) an instance if the client's dtLastUpdate is current."""
        current = self.get(form, instance_id)
        if current is None:
            return UpdateResult.NOT_FOUND, ""
        if "dtLastUpdate" not in values or values["dtLastUpdate"] in (None, ""):
            return UpdateResult.MISSING_VERSION, ""
        with self._lock:
            state = self._forms[form]
            # Read again under the lock: a concurrent writer may have won since the unlocked read.
            latest = state.changed.get(instance_id, current)
            if instance_id in state.deleted:
                return UpdateResult.NOT_FOUND, ""
            if str(values["dtLastUpdate"]) != str(latest["dtLastUpdate"]):
                return UpdateResult.STALE, str(latest["dtLastUpdate"])
            base = {k: v for k, v in latest.items() if k != "dtLastUpdate"} if partial else {}
            stamp = str(self._now_ms(int(latest["dtLastUpdate"])))
            state.changed[instance_id] = {**base, **self._clean(values), "dtLastUpdate": stamp}
            state.version += 1
        return UpdateResult.UPDATED, stamp

    def delete(self, form: str, instance_id: int) -> bool:
        if self.get(form, instance_id) is None:
            return False
        with self._lock:
            state = self._forms[form]
            if instance_id in state.deleted:
                return False
            state.changed.pop(instance_id, None)
            if instance_id <= state.seeded:
                state.deleted.add(instance_id)
            state.version += 1
        return True
