"""The sliced reader's checks on what a response holds: every instance inside its slice, a field in epoch
milliseconds and not after the present, an id per instance, each yielded once."""

from __future__ import annotations

from itertools import compress
from operator import itemgetter
from typing import Any

from deyel_provider.api.clock import latest_present, settled_present, utc_text
from deyel_provider.api.dates import finer_unit, in_seconds, is_iso
from deyel_provider.api.instance_ids import LINKS, instance_id, not_an_id
from deyel_provider.api.pagination import Page
from deyel_provider.exceptions import DeyelConfigError, DeyelIncompleteError
from deyel_provider.read.slice_requests import Slice, SliceRequests

#: An accepted instance: ``(value, len(id), id, record)``, sorted on its first three (never on the record:
#: ids are unique in a response).
Entry = tuple[int, int, str, dict[str, Any]]
_ORDER = itemgetter(0, 1, 2)
#: The exact types :meth:`SliceValues._plain_entries` takes for a value and an id.
_NUMBER_TYPES = frozenset({str, int})
_TEXT_TYPE = frozenset({str})


class SliceValues(SliceRequests):
    """Accepts a response's instances into a :class:`Slice` once they pass every check."""

    def _accept(
        self, page: Page, start: int, end: int | None, *, clip: bool = False, crowded: bool = False
    ) -> Slice:
        """The page's instances not yielded before, after checking each lies in the slice asked for.

        :param clip: keep only those below ``end`` (the whole-window probe of a watermark run asked for no
            upper bound); otherwise one outside the slice means the server ignored the search.
        :param crowded: a page of a crowded millisecond, which says nothing of the form's usual density.
        """
        if not self._unit_checked and page.records:
            self._check_unit(page)
        elif not self._unit_checked and start > 0 and self.stats.requests == 1:
            # The first response was empty: sample an older instance, and with none, a future one (a field
            # in a finer unit lies after every millisecond bound). A healthy empty window costs one more.
            if not self._check_unit(self._sample_before(start)):
                self._check_unit(self._sample_after(self._future_bound(page)), page)
        entries = self._plain_entries(page.records, start, end)
        if entries is None:
            entries = self._checked_entries(page, start, end, clip)
        added = self._seen.add_all([entry[2] for entry in entries])
        fresh = list(compress(entries, added))
        repeats = len(entries) - len(fresh)
        # Ordered by (field, id) whatever the server's order or the slicing: reruns write the same bytes.
        fresh.sort(key=_ORDER)
        with self._lock:
            self.stats.slices += 1
            self.stats.repeats += repeats
            if page.server_ms is not None:
                self.stats.accepted_ms = max(page.server_ms, self.stats.accepted_ms or page.server_ms)
            if page.asked_ms is not None:
                latest = self.stats.accepted_clock_ms
                self.stats.accepted_clock_ms = max(
                    page.asked_ms, latest if latest is not None else page.asked_ms
                )
            # A slice of a few instances says little of the density: only well-filled ones count.
            # (A zero-width slice, which only a whole-window probe can be, says nothing either.)
            if (
                end is not None
                and end > start
                and not crowded
                and len(page.records) >= max(8, self._paging.page_size // 3)
            ):
                self._density = max(self._density or 0.0, len(page.records) / (end - start))
        return Slice(start, end, [entry[3] for entry in fresh], plain=page.plain)

    def _checked_entries(self, page: Page, start: int, end: int | None, clip: bool) -> list[Entry]:
        """``(value, len(id), id, record)`` of each instance of ``page``, each checked: its value inside the
        slice (past ``end`` with ``clip``: dropped), an id, and no id twice in one response (a consistent
        snapshot lists an instance once)."""
        entries: list[Entry] = []
        in_response: set[str] = set()
        for record in page.records:
            value = self._value_of(record)
            if value < start or (end is not None and value >= end):
                if clip and end is not None and value >= end:
                    # Past the window's end: settling yet, for the next run, unless no clock has reached
                    # it (a finer unit, a stamping clock running ahead): then no run would ever read it.
                    self._check_future(page, value)
                    continue
                raise DeyelIncompleteError(
                    f"asked for {self._field} in [{start}, {end}) and got an instance with {value}: the "
                    f"server ignores the search, or does not compare dates as epoch milliseconds (the "
                    f"connection's date_literal is {self._date_literal!r})"
                )
            instance_id = self._id_of(record)
            if instance_id in in_response:
                raise DeyelConfigError(not_an_id(self._id_field))
            in_response.add(instance_id)
            entries.append((value, len(instance_id), instance_id, record))
        return entries

    def _plain_entries(
        self, records: list[dict[str, Any]], start: int, end: int | None
    ) -> list[Entry] | None:
        """:meth:`_checked_entries` for the common page, at a fraction of its cost per instance: every value
        a decimal text or an integer inside the slice, every id a non-empty text, none twice. None for any
        other page, which the checked path then accepts or refuses (with its own error, record by record)."""
        field, id_field = self._field, self._id_field
        if id_field == LINKS:
            return None
        if not records:
            return []
        try:
            # Whole columns at C speed (a missing key: KeyError, the checked path says which instance).
            raws = list(map(itemgetter(field), records))
            ids = list(map(itemgetter(id_field), records))
        except (KeyError, TypeError):
            return None
        # Exact types: a bool is an int, and the checked path refuses it.
        if not _NUMBER_TYPES.issuperset(map(type, raws)) or not _TEXT_TYPE.issuperset(map(type, ids)):
            return None
        distinct = set(ids)
        if len(distinct) != len(ids) or "" in distinct:
            return None
        try:
            values = list(map(int, raws))  # int() strips as str.strip() does
        except ValueError:
            return None
        if min(values) < start or (end is not None and max(values) >= end):
            return None
        return list(zip(values, map(len, ids), ids, records, strict=True))

    # -- values ----------------------------------------------------------------------------------------------

    def _present(self, page: Page) -> int:
        """The server's settled present (see :func:`settled_present`)."""
        return settled_present(page.server_ms, int(self._clock() * 1000), self._settle_ms, self._max_skew_ms)

    def _sample_value(self, record: dict[str, Any]) -> int:
        try:
            return self._value_of(record)
        except DeyelIncompleteError:
            return -1  # outside every range: ignored by the plan, and refused when the slice is accepted

    def _value_of(self, record: dict[str, Any]) -> int:
        raw = record.get(self._field)
        try:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw) if isinstance(raw, int) else int(str(raw).strip())
        except (TypeError, ValueError):
            ident = instance_id(record, self._id_field)
            unit = " (ISO 8601 text, not a number)" if is_iso(raw) else ""
            raise DeyelIncompleteError(
                f"instance {ident!r} has {self._field}={str(raw)[:40]!r}{unit}: slicing needs "
                f"epoch-millisecond values in every instance; set incremental_field to such a field"
            ) from None

    def _check_unit(self, page: Page, dated: Page | None = None) -> bool:
        """Refuse a field in epoch seconds (compared with millisecond bounds, every window reads empty), or
        one whose newest value lies after the present (see :meth:`_check_future`). False: nothing to check.

        :param dated: the response whose ``Date`` is the present (default: ``page``)."""
        self._unit_checked = True
        dated = dated or page
        values = [v for v in (self._sample_value(r) for r in page.records) if v > 0]
        if not values:
            return False
        present = dated.server_ms if dated.server_ms is not None else int(self._clock() * 1000)
        newest = max(values)
        if in_seconds(newest, present):
            raise DeyelIncompleteError(
                f"{self._field} holds epoch seconds (newest {newest}: in milliseconds a moment of 1970) "
                f"where epoch milliseconds are expected: every window bounded in milliseconds would read "
                f"nothing; set incremental_field to an epoch-millisecond field"
            )
        self._check_future(dated, newest)
        return True

    def _future_bound(self, page: Page) -> int:
        """The latest value a change can hold by the time of ``page``: its ``Date`` (our clock with its
        margin, without one) plus ``max_skew_ms``. Nothing after it has happened on any sane clock."""
        return latest_present(page.server_ms, int(self._clock() * 1000)) + self._max_skew_ms

    def _check_future(self, page: Page, value: int) -> None:
        """Refuse a value after :meth:`_future_bound`: no window bounded by the server's present would ever
        hold it, so dropping it (a watermark run's probe keeps what lies below its end) loses it for good."""
        bound = self._future_bound(page)
        if value <= bound:
            return
        present = bound - self._max_skew_ms
        where = "the server's Date" if page.server_ms is not None else "this worker's clock (no Date header)"
        unit = finer_unit(value, present)
        why = (
            f"it reads as epoch {unit}, not milliseconds"
            if unit
            else "a moment no clock has reached: the clock stamping instances is running ahead, or the field "
            "is not in epoch milliseconds"
        )
        raise DeyelIncompleteError(
            f"an instance has {self._field}={value}, {(value - present) / 1000:.0f} s after {where} "
            f"({utc_text(present)}), more than max_clock_skew_seconds "
            f"({self._max_skew_ms / 1000:g} s): {why}; "
            f"windows bounded by the server's present would never read it. Fix the stamping clock (NTP), or "
            f"set incremental_field to an epoch-millisecond field"
        )

    def _sample_before(self, start: int) -> Page:
        """One instance older than an empty first window, to check the field's unit with: a field in
        seconds compared with millisecond bounds makes every window empty, so an empty one proves nothing."""
        if not self._paging.pages:
            return Page(records=[])  # one response would hold every older instance
        clauses = [self._search] if self._search else []
        clauses.append(f"{self._field}=lt:{self._literal(start)}")
        query = {**self._params, "search": ",".join(clauses), **self._paging.params_for(0, 1)}
        return self._call(self._endpoint, query)

    def _sample_after(self, moment: int) -> Page:
        """One instance at or after ``moment`` (past the present): only a finer unit or a clock running
        ahead puts one there. Asked only when a window and everything before it were empty."""
        clauses = [self._search] if self._search else []
        clauses.append(f"{self._field}=gte:{self._literal(moment)}")
        query = {**self._params, "search": ",".join(clauses), **self._paging.params_for(0, 1)}
        return self._call(self._endpoint, query)
