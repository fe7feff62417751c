"""Form instances: the generated CRM_ACCOUNT collection plus an overlay of the mutations made through the API.

The seeded records are never stored; the overlay holds only what clients created, changed or deleted.
With ``commit_lag_ms`` a save is held back (stamped, not yet visible) until its commit time passes on the
emulator's clock, as a database transaction that takes its timestamp when it starts. A listing is a
sequence of ids in the collection's order (by id, or by dtLastUpdate then id): a ``range``
when nothing narrows or reorders it, else an ``array`` of ids built once per (form, search, overlay version)
and cached, so paging through it does not rescan. Searches on dtLastUpdate use an index of the seeded values
built on first use, so a narrow time slice of a large form costs no scan.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from deyel_provider.emulator.clock import Clock
from deyel_provider.emulator.forms import SCHEMAS, TARGET_FORM
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


@dataclass(frozen=True)
class Listing:
    """The ids of a listing in the collection's order, and the sort key of that order (for cursors)."""

    ids: Sequence[int]
    key: Callable[[int], Any]


def _dict_getter(instance_id: int, values: dict[str, Any], id_key: str) -> Callable[[str], Any]:
    def get(name: str) -> Any:
        return str(instance_id) if name == id_key else values.get(name)

    return get


class _UpdatedIndex:
    """The seeded ids sorted by (dtLastUpdate, id), with their values: a time slice is two bisections."""

    def __init__(self, generator: RecordGenerator, seeded: int) -> None:
        values = [generator.updated_ms(i) for i in range(seeded)]
        order = sorted(range(seeded), key=values.__getitem__)  # stable: ties stay in id order
        self.ids = array("q", (i + 1 for i in order))
        self.values = array("q", (values[i] for i in order))

    def between(self, low: int, high: int) -> Sequence[int]:
        return self.ids[bisect.bisect_left(self.values, low) : bisect.bisect_right(self.values, high)]


class DataStore:
    """Thread-safe: the overlay is guarded by one lock; record generation and scans run outside it."""

    def __init__(self, settings: EmulatorSettings, clock: Clock | None = None) -> None:
        self._clock = clock or Clock()
        self._generator = RecordGenerator(
            seed=settings.seed,
            updated_start_ms=settings.updated_start_ms,
            updated_step_ms=settings.updated_step_ms,
            v80=settings.version == "8.0",
            records=settings.records,
            updated_order=settings.updated_order,
            updated_burst=settings.updated_burst,
        )
        self._by_update = settings.list_order == "dtLastUpdate"
        self._id_key = settings.id_key
        self._reserved = RESERVED_KEYS | {settings.id_key}
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._index: _UpdatedIndex | None = None
        self._forms: dict[str, _Form] = {
            SEEDED_FORM: _Form(seeded=settings.records, next_id=settings.records + 1),
            TARGET_FORM: _Form(seeded=0, next_id=1),
        }
        for name in filter(None, (n.strip() for n in settings.empty_forms.split(","))):
            self._forms.setdefault(name, _Form(seeded=0, next_id=1))
        self._last_ms = 0
        self._commit_lag_ms = settings.commit_lag_ms
        #: Saves not committed yet: (commit time in ms, order, form, id, values); see ``commit_lag_ms``.
        self._uncommitted: list[tuple[int, int, str, int, dict[str, Any]]] = []
        self._saves = 0
        self._cache: OrderedDict[tuple[str, str], tuple[int, Listing]] = OrderedDict()

    # -- reading -------------------------------------------------------------------------------------------

    def exists(self, form: str) -> bool:
        with self._lock:
            return form in self._forms

    def known_fields(self, form: str) -> frozenset[str] | None:
        """Top-level fields a search may name, when the form has a fixed schema (the seeded one)."""
        if form == SEEDED_FORM:
            return frozenset(FIELD_NAMES) | {self._id_key}
        schema = SCHEMAS.get(form)
        if schema is not None and schema.closed:
            return schema.fields | {self._id_key, "dtLastUpdate"}
        return None

    def get(self, form: str, instance_id: int) -> dict[str, Any] | None:
        with self._lock:
            self._commit_due()
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
            self._commit_due()
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

    def next_id(self, form: str) -> int:
        with self._lock:
            return self._forms[form].next_id

    def all_ids(self, form: str) -> list[int]:
        """Every live id of a form, in id order (for tests that check what a client read)."""
        with self._lock:
            self._commit_due()
            state = self._forms[form]
            live = set(range(1, state.seeded + 1)) - state.deleted
            live |= state.changed.keys()
        return sorted(live)

    # -- listing -------------------------------------------------------------------------------------------

    def _updated_index(self, seeded: int) -> _UpdatedIndex:
        with self._index_lock:
            if self._index is None:
                self._index = _UpdatedIndex(self._generator, seeded)
            return self._index

    def select(self, form: str, search: Search, search_key: str) -> Listing:
        """The ids of the instances matching ``search``, in the collection's order."""
        with self._lock:
            self._commit_due()
            state = self._forms[form]
            cached = self._cache.get((form, search_key))
            if cached is not None and cached[0] == state.version:
                self._cache.move_to_end((form, search_key))
                return cached[1]
            snap = _Snapshot(state.seeded, state.version, dict(state.changed), frozenset(state.deleted))
        listing = Listing(self._select(snap, search), self._sort_key(snap))
        with self._lock:
            self._cache[(form, search_key)] = (snap.version, listing)
            self._cache.move_to_end((form, search_key))
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return listing

    def _sort_key(self, snap: _Snapshot) -> Callable[[int], Any]:
        if not self._by_update:
            return lambda i: i
        updated = self._generator.updated_ms

        def key(i: int) -> tuple[int, int]:
            values = snap.changed.get(i)
            return (int(values["dtLastUpdate"]) if values else updated(i - 1), i)

        return key

    def _select(self, snap: _Snapshot, search: Search) -> Sequence[int]:
        touched = snap.deleted | snap.changed.keys()
        bounds = search.updated_bounds()
        if bounds is None and not search.clauses and not touched and not self._by_update:
            return range(1, snap.seeded + 1)
        if snap.seeded == 0:
            # A form without generated instances (the index below belongs to the seeded one).
            candidates: Sequence[int] = ()
            residual = False
        elif bounds is not None:
            candidates = self._updated_index(snap.seeded).between(bounds[0], bounds[1])
            residual = not bounds[2]
        elif self._by_update:
            candidates = self._updated_index(snap.seeded).ids
            residual = bool(search.clauses)
        else:
            candidates = range(1, snap.seeded + 1)
            residual = bool(search.clauses)
        field_of = self._generator.field
        id_key = self._id_key
        ids = []
        for instance_id in candidates:
            if instance_id in touched:
                continue
            if residual:

                def get(name: str, i: int = instance_id - 1) -> Any:
                    return str(i + 1) if name == id_key else field_of(i, name)

                if not search.matches(get):
                    continue
            ids.append(instance_id)
        # The index lists in (dtLastUpdate, id) order; the collection may list by id.
        reorder = bounds is not None and not self._by_update
        if not search.clauses:
            ids.extend(snap.changed)
            reorder = reorder or bool(snap.changed)
        elif search.stamps_only:
            # An extraction's slices: the changed instances grow with each edit, each listing tests them all.
            matches_stamp = search.matches_stamp
            for instance_id, values in snap.changed.items():
                if matches_stamp(values.get("dtLastUpdate")):
                    ids.append(instance_id)
                    reorder = True
        else:
            for instance_id, values in snap.changed.items():
                if search.matches(_dict_getter(instance_id, values, id_key)):
                    ids.append(instance_id)
                    reorder = True
        if reorder:
            ids.sort(key=self._sort_key(snap))
        return array("q", ids)

    # -- writing -------------------------------------------------------------------------------------------

    def _now_ms(self, previous: int = 0) -> int:
        # Strictly increasing, and past the previous value, so a second write always changes dtLastUpdate.
        self._last_ms = max(int(self._clock.now() * 1000), self._last_ms + 1, previous + 1)
        return self._last_ms

    def _save(self, form: str, state: _Form, instance_id: int, values: dict[str, Any]) -> None:
        """Store a save (under the lock): at once, or held back until it commits (``commit_lag_ms``)."""
        if self._commit_lag_ms <= 0:
            state.changed[instance_id] = values
            state.version += 1
            return
        self._saves += 1
        due = int(self._clock.now() * 1000) + self._commit_lag_ms
        heapq.heappush(self._uncommitted, (due, self._saves, form, instance_id, values))

    def _commit_due(self) -> None:
        """Make the saves whose commit time has passed visible (under the lock), in commit order."""
        if not self._uncommitted:
            return
        now = int(self._clock.now() * 1000)
        while self._uncommitted and self._uncommitted[0][0] <= now:
            _, _, form, instance_id, values = heapq.heappop(self._uncommitted)
            state = self._forms[form]
            state.changed[instance_id] = values
            state.version += 1

    def _locked_by_save(self, form: str, instance_id: int) -> bool:
        """An instance with a save still in its transaction: another save waits for it, here refused."""
        return any(entry[2] == form and entry[3] == instance_id for entry in self._uncommitted)

    def _clean(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k not in self._reserved}

    def create(self, form: str, values: dict[str, Any]) -> tuple[int, str]:
        with self._lock:
            state = self._forms.setdefault(form, _Form(seeded=0, next_id=1))
            instance_id = state.next_id
            state.next_id += 1
            stamp = str(self._now_ms())
            self._save(form, state, instance_id, {**self._clean(values), "dtLastUpdate": stamp})
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
            self._commit_due()
            state = self._forms[form]
            # Read again under the lock: a concurrent writer may have won since the unlocked read.
            latest = state.changed.get(instance_id, current)
            if instance_id in state.deleted:
                return UpdateResult.NOT_FOUND, ""
            if self._locked_by_save(form, instance_id):
                return UpdateResult.STALE, str(latest["dtLastUpdate"])
            if str(values["dtLastUpdate"]) != str(latest["dtLastUpdate"]):
                return UpdateResult.STALE, str(latest["dtLastUpdate"])
            base = {k: v for k, v in latest.items() if k != "dtLastUpdate"} if partial else {}
            stamp = str(self._now_ms(int(latest["dtLastUpdate"])))
            self._save(form, state, instance_id, {**base, **self._clean(values), "dtLastUpdate": stamp})
        return UpdateResult.UPDATED, stamp

    def touch(self, form: str, instance_id: int, values: dict[str, Any] | None = None) -> str | None:
        """Another user saves the instance (with ``values`` merged in): its dtLastUpdate moves on, so a
        client's update with the value it read before is now stale. None when there is no such instance."""
        current = self.get(form, instance_id)
        if current is None:
            return None
        with self._lock:
            self._commit_due()
            state = self._forms[form]
            if instance_id in state.deleted or self._locked_by_save(form, instance_id):
                return None
            latest = state.changed.get(instance_id, current)
            stamp = str(self._now_ms(int(latest["dtLastUpdate"])))
            self._save(
                form, state, instance_id, {**latest, **self._clean(values or {}), "dtLastUpdate": stamp}
            )
        return stamp

    def delete(self, form: str, instance_id: int) -> bool:
        if self.get(form, instance_id) is None:
            return False
        with self._lock:
            self._commit_due()
            state = self._forms[form]
            if instance_id in state.deleted or self._locked_by_save(form, instance_id):
                return False
            state.changed.pop(instance_id, None)
            if instance_id <= state.seeded:
                state.deleted.add(instance_id)
            state.version += 1
        return True
