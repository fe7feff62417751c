"""The probe's checks of what Deyel leaves undocumented beyond paging: the id key, ``dtLastUpdate`` and its
unit, the date literal ``search`` accepts, the ``in`` separator, and the clocks.

Each check asks a few GETs of small pages after paging is known, says what it found, and sets the extra that
makes the provider read this server (``id_field``, ``date_literal``, ``in_separator``; ``settle_seconds``
only when the clocks call for more than the default). A check the server cannot answer is a warning, not the
end of the probe: the others still run.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from deyel_provider.api.dates import MAX_LITERAL_MS, MIN_LITERAL_MS, finer_unit, in_seconds, is_iso
from deyel_provider.api.dates import search_literal as literal
from deyel_provider.api.instance_ids import LINKS, instance_id, self_link_id
from deyel_provider.connection.fields import DEFAULTS
from deyel_provider.probe.results import FAIL, OK, TINY, WARN, Answer, ProbeFailed, search_field, unique

if TYPE_CHECKING:
    from deyel_provider.probe.results import ProbeSession

#: Keys tried for the instance id after the connection's own, before any other key of the instances.
ID_KEYS = ("idObjectValue", "id", "ID", "Id", "_id", "instanceId", "idInstance", "value")
#: Separators of ``in`` values tried after the connection's own.
SEPARATORS = (";", ",", "|")
FIELD = "dtLastUpdate"
#: Searches for instances newer than the newest seen, before the newest is reported as a lower bound.
MAX_NEWEST_STEPS = 8
#: Added to the clock skew seen for the suggested ``settle_seconds``: the ``Date`` header's whole seconds,
#: and a second for the request's own time.
SETTLE_SLACK_S = 2
#: The settle margin assumed when the connection declares none (the settle helper's own default wins).
FALLBACK_SETTLE_S = 5


def server_ms(date: str | None) -> int | None:
    """The ``Date`` header in epoch ms (None: absent or unreadable)."""
    try:
        moment = email.utils.parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        return None
    return int(moment.timestamp() * 1000) if moment is not None and moment.tzinfo is not None else None


class KeyChecks:
    """Runs the checks on a prober whose paging is known; ``clock``: this machine's, epoch seconds."""

    def __init__(self, prober: ProbeSession, clock: Callable[[], float] = time.time) -> None:
        self.prober = prober
        self.config = prober.config
        self.extras = prober.result.extras
        self.clock = clock
        self.id_field: str | None = None
        #: The first timed answer, and this machine's clock before and after it.
        self._timing: tuple[Answer, float, float] | None = None

    # -- plumbing ------------------------------------------------------------------------------------------

    def _size(self, count: int) -> dict[str, Any]:
        extras = self.extras
        name = extras.get("page_size_param") or extras.get("limit_param")
        if extras.get("paging") == "none" or not name:
            return {}
        return {name: min(count, int(extras.get("page_size") or count))}

    def _search(self, search: str, count: int = 2 * TINY) -> Answer:
        return self.prober.listing({"search": search, **self._size(count)})

    def _note(self, level: str, topic: str, text: str) -> None:
        self.prober.note(level, topic, text)

    # -- the checks ----------------------------------------------------------------------------------------

    def _timed(self, search: str) -> Answer:
        """A search whose answer's ``Date`` is compared with this machine's clock (the first one timed)."""
        started = self.clock()
        answer = self._search(search)
        if self._timing is None:
            self._timing = (answer, started, self.clock())
        return answer

    def run(self) -> None:
        first = self.prober._prefix_answer
        if self.extras.get("paging") == "none" and first is not None and first.records:
            sample = first.records[: 2 * TINY]  # each listing is the whole form: not one more
        else:
            sample = self.prober.listing(self._size(2 * TINY)).records or []
        if len(sample) < 2:
            self._note(
                WARN, "id key", "fewer than 2 instances listed: the id key and search cannot be checked"
            )
            return
        for check in (
            lambda: self.id_key(sample),
            lambda: self.updated(sample),
            lambda: self.separator(sample),
        ):
            try:
                check()
            except ProbeFailed as exc:
                self._note(WARN, "probe", f"a check could not finish: {exc}")

    def id_key(self, sample: list[dict[str, Any]]) -> None:
        """Which key holds the id: one whose value every self link ends with, or that GET by id answers."""
        named = unique([self.config.id_field], ID_KEYS, (k for r in sample for k in r))
        candidates = [k for k in named if k != LINKS and self._distinct(sample, k)]
        linked = [self_link_id(r.get(LINKS)) for r in sample]
        for key in candidates:
            values = [instance_id(r, key) for r in sample]
            if all(linked) and values == linked:
                self._found(key, "its self link ends with it")
                return
        if all(linked):
            self._found(LINKS, "no key holds it; every instance's self link ends with its id")
            return
        for key in candidates[:3]:
            value = instance_id(sample[0], key)
            item = self.prober.get(f"{self.prober._collection}/{quote(str(value), safe='')}")
            body = item.body
            if item.status == 200 and isinstance(body, dict) and instance_id(body, key) in (value, None):
                self._found(key, f"GET .../instances/{value} answers the instance")
                return
        guess = next((k for k in candidates if k in (self.config.id_field, *ID_KEYS)), None)
        if guess is not None:
            self.id_field = guess
            self.extras["id_field"] = guess
            self._note(
                WARN,
                "id key",
                f"{guess} is distinct in every instance listed, but no self link or GET by id confirms it is "
                f"the instance id: check it",
            )
            return
        self._note(
            FAIL,
            "id key",
            f"no key of the listed instances holds their id ({', '.join(named[:8])} looked at), and they "
            f"have no self link: extractions and the write-back cannot tell instances apart",
        )

    @staticmethod
    def _distinct(sample: list[dict[str, Any]], key: str) -> bool:
        values = [instance_id(r, key) for r in sample]
        return all(v is not None for v in values) and len(set(values)) == len(values)

    def _found(self, key: str, how: str) -> None:
        self.id_field = key
        self.extras["id_field"] = key
        said = "" if key == self.config.id_field else f" (the connection says {self.config.id_field})"
        self._note(OK, "id key", f"{key}: the instance id ({how}){said}")

    def updated(self, sample: list[dict[str, Any]]) -> None:
        """``dtLastUpdate`` present and in epoch milliseconds; then the date literal and the clocks."""
        raw = [r.get(FIELD) for r in sample]
        missing = sum(v is None or v == "" for v in raw)
        if missing:
            self._note(
                WARN,
                "updated",
                f"{FIELD} missing in {missing} of {len(raw)} instances listed: incremental extractions need "
                f"an epoch-millisecond field that every write moves (incremental_field)",
            )
            return
        present = int(self.clock() * 1000)  # the server's Date is compared below
        values: list[int] = []
        for value in raw:
            text = str(value).strip()
            if is_iso(text):
                self._unit_fail("ISO 8601 text", text)
                return
            if isinstance(value, bool) or not text.lstrip("-").isdigit():
                self._unit_fail("neither a number nor a date", text)
                return
            values.append(int(text))
        if in_seconds(max(values), present):
            self._unit_fail("epoch seconds", str(max(values)))
            return
        # Before any date literal is built from them: a value in a finer unit is no date of years 1-9999.
        unit = finer_unit(max(values), present)
        if unit is not None:
            self._unit_fail(f"epoch {unit}", str(max(values)))
            return
        if not all(MIN_LITERAL_MS <= v <= MAX_LITERAL_MS for v in values):
            self._unit_fail("values beyond the dates of years 1 to 9999", str(max(values, key=abs)))
            return
        self._note(OK, "updated", f"{FIELD} in every instance, epoch milliseconds")
        kind = self.date_literal(sample, values)
        if self._timing is not None:
            answer, started, finished = self._timing
            self.clocks(server_ms(answer.headers.get("Date")), started, finished, max(values), kind)

    def _unit_fail(self, unit: str, example: str) -> None:
        self._note(
            FAIL,
            "updated",
            f"{FIELD} holds {unit} (e.g. {example[:40]!r}), not epoch milliseconds: extractions refuse it; "
            f"set incremental_field to an epoch-millisecond field",
        )

    def date_literal(self, sample: list[dict[str, Any]], values: list[int]) -> str | None:
        """The literal of dates ``search`` accepts: a one-millisecond range around a listed instance's stamp
        must answer it, and only instances of that millisecond."""
        moment = values[0]
        said: dict[str, str] = {}
        accepted: list[str] = []
        for kind in unique([self.config.date_literal], ("epoch_ms", "iso")):
            search = f"{FIELD}=gte:{literal(moment, kind)},{FIELD}=lt:{literal(moment + 1, kind)}"
            answer = self._timed(search)
            records = answer.records
            if records is None:
                error = answer.deyel_error()
                said[kind] = f"refused ({answer.status}{f': {error}' if error else ''})"
            elif not records or any(str(r.get(FIELD)) != str(sample[0].get(FIELD)) for r in records):
                said[kind] = f"not applied ({len(records)} instances, not the one of {FIELD}={moment})"
            else:
                said[kind] = "accepted"
                accepted.append(kind)
        shown = "; ".join(f"{kind} {text}" for kind, text in said.items())
        if not accepted:
            self._note(
                FAIL,
                "date",
                f"no date literal bounds {FIELD} in search ({shown}): incremental extractions cannot cut "
                f"windows on this server",
            )
            return None
        chosen = accepted[0]
        self.extras["date_literal"] = chosen
        self._note(OK, "date", f"{FIELD} bounded in search with {chosen} literals ({shown})")
        return chosen

    def clocks(
        self, date_ms: int | None, started: float, finished: float, newest: int, kind: str | None
    ) -> None:
        """The server's ``Date`` against this machine's clock, and the newest ``dtLastUpdate`` against it."""
        if date_ms is None:
            self._note(
                WARN,
                "clock",
                "no Date header: extractions fall back on this machine's clock with a 5-minute margin",
            )
            return
        # Date has whole seconds: the server's clock read between date_ms and date_ms + 1 s, while this
        # machine's read between started and finished.
        low, high = date_ms / 1000 - finished, date_ms / 1000 + 1 - started
        skew = 0.0 if low <= 0 <= high else (low if low > 0 else high)
        if kind is not None:
            newest, exact = self._newest(newest, kind)
        else:
            exact = False
        ahead_ms = newest - (date_ms + 1000)
        in_range = MIN_LITERAL_MS <= newest <= MAX_LITERAL_MS  # a stamp found by the search may not be
        stamp = literal(newest, "iso") if in_range else f"{newest} (no date of years 1 to 9999)"
        newest_text = f"newest {FIELD} {'' if exact else 'at least '}{stamp}"
        if skew == 0.0:
            date_text = "Date agrees with this machine's clock (within its 1 s resolution)"
        else:
            side = "ahead of" if skew > 0 else "behind"
            date_text = f"Date {abs(skew):.1f} s {side} this machine's clock"
        level = OK
        if ahead_ms > 0:
            level = WARN
            newest_text += (
                f", {ahead_ms / 1000:.1f} s after Date: the clock stamping instances runs ahead of the Date "
                f"header, and windows ending at Date cannot hold those instances yet"
            )
        else:
            newest_text += ", not after Date"
        suggested = math.ceil(abs(skew)) + SETTLE_SLACK_S
        current = getattr(self.config, "settle_seconds", None)
        default = current if current is not None else DEFAULTS.get("settle_seconds", FALLBACK_SETTLE_S)
        if skew != 0.0 and suggested > default:
            level = WARN
            self.extras["settle_seconds"] = suggested
            date_text += f"; settle_seconds of at least {suggested} suggested"
        self._note(level, "clock", f"{date_text}; {newest_text}")

    def _newest(self, newest: int, kind: str) -> tuple[int, bool]:
        """The newest stamp: search past the newest seen until nothing newer comes back."""
        size = int(self.extras.get("page_size") or self.config.page_size)
        for _ in range(MAX_NEWEST_STEPS):
            if newest >= MAX_LITERAL_MS:
                return newest, False  # no literal can be written past it
            answer = self._search(f"{FIELD}=gte:{literal(newest + 1, kind)}", size)
            records = answer.records
            if records is None:
                return newest, False
            stamps = [int(str(r.get(FIELD))) for r in records if str(r.get(FIELD, "")).strip().isdigit()]
            if not stamps:
                return newest, True
            newest = max(newest, *stamps)
        return newest, False

    def separator(self, sample: list[dict[str, Any]]) -> None:
        """A search for two known values with ``in`` must answer both (and nothing else): on the id key, or
        on another field when the server refuses to search the id."""
        pairs: list[tuple[str, Any, Any]] = []
        if self.id_field is not None and self.id_field != LINKS:
            pairs.append(
                (self.id_field, instance_id(sample[0], self.id_field), instance_id(sample[1], self.id_field))
            )
        picked = search_field(sample)
        if picked is not None and picked[0] not in (self.id_field, LINKS):
            pairs.append((picked[0], picked[1], sample[1].get(picked[0])))
        pairs = [(n, a, b) for n, a, b in pairs if a is not None and b is not None and str(a) != str(b)]
        if not pairs:
            self._note(WARN, "in", "no field with two distinct plain values to check the in separator on")
            return
        shown = ""
        for name, first, second in pairs:
            said: dict[str, str] = {}
            if self._separator_on(name, first, second, said):
                return
            shown = "; ".join(f"{s!r} {t}" for s, t in said.items())
            if not all(text.startswith("answered") for text in said.values()):
                break  # the field was searched, and no separator found both: another field says no more
        self._note(
            WARN,
            "in",
            f"no separator finds both {name} values with in ({shown}): the write-back's key search needs it "
            f"(or batch_size=1, one eq search per record)",
        )

    def _separator_on(self, name: str, first: Any, second: Any, said: dict[str, str]) -> bool:
        wanted = {str(first), str(second)}
        for sep in unique([self.config.in_separator], SEPARATORS):
            if any(sep in value for value in wanted):
                continue
            search = f"{name}=in:{first}{sep}{second}"
            answer = self._search(search, 4 * TINY)
            records = answer.records
            got = {str(r.get(name)) for r in records or []}
            if records is not None and got == wanted:
                self.extras["in_separator"] = sep
                level = OK if sep == self.config.in_separator else WARN
                before = "; ".join(f"{s!r} {t}" for s, t in said.items())
                tried = f" (tried before: {before})" if before else ""
                self._note(level, "in", f"search={search} answers both instances{tried}")
                return True
            said[sep] = (
                f"answered {answer.status}"
                if records is None
                else f"found {len(got & wanted)} of the 2 values"
            )
        return False
