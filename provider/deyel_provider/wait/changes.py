"""What the change trigger decides at each poll: whether instances of a form changed at or after its
watermark, the window an event covers (up to the server's present less ``settle_seconds``), and the key of
its watermark in the asset's state. Signing that watermark is the trigger's (the extraction's signer)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deyel_provider.api.clock import latest_present, settled_present
from deyel_provider.api.dates import search_literal
from deyel_provider.exceptions import DeyelClockSkewError, DeyelWatermarkError
from deyel_provider.wait.instance_state import InstanceQuery, probe

if TYPE_CHECKING:
    import logging

    from deyel_provider.hooks.deyel import DeyelHook

#: Prefix of the change trigger's watermark in the asset's state (not the extraction's ``deyel_watermark``).
CHANGE_STATE_PREFIX = "deyel_change_watermark2"


def change_state_key(conn_id: str, form: str, field: str, search: str) -> str:
    """One watermark per (connection, form, field, search) in the asset's state: two watchers of one asset
    reading two tenants (or one form through two connections) keep their own."""
    owner = json.dumps([conn_id, form, field, search], separators=(",", ":"))
    digest = hashlib.sha256(owner.encode()).hexdigest()[:32]
    return f"{CHANGE_STATE_PREFIX}:{form}:{field}:{digest}"


@dataclass(frozen=True)
class ChangeWatch:
    """One watched form: ``query`` (its form and search) through connection ``conn_id``, on ``field``.

    :param log: where a poll that moves nothing says why (the trigger's logger).
    """

    conn_id: str
    query: InstanceQuery
    field: str
    log: logging.Logger | Any

    @property
    def state_key(self) -> str:
        return change_state_key(self.conn_id, self.query.form, self.field, self.query.search)

    def narrowed(self, *clauses: str) -> InstanceQuery:
        search = ",".join(c for c in (self.query.search, *clauses) if c)
        return InstanceQuery.build(self.query.form, search, 1, 0, None)

    def present(self, hook: DeyelHook) -> int | None:
        """Where a watch with no watermark starts: the server's settled present (None: not trusted yet)."""
        return self.settled_present(hook, probe(hook, self.query).server_ms)

    def changes_since(self, hook: DeyelHook, mark: int) -> dict[str, Any] | None:
        """The event of the changes at or after ``mark`` (None: none yet, or none settled)."""
        kind = hook.config.date_literal  # dates in search as the server reads them (date_literal extra)
        changed = probe(hook, self.narrowed(f"{self.field}=gte:{search_literal(mark, kind)}"))
        self.check_mark(hook, mark, changed.server_ms)
        if changed.count == 0:
            return None
        end = self.settled_present(hook, changed.server_ms)
        if end is None or end <= mark:
            return None
        window = probe(
            hook,
            self.narrowed(
                f"{self.field}=gte:{search_literal(mark, kind)}",
                f"{self.field}=lt:{search_literal(end, kind)}",
            ),
        )
        if window.count == 0:  # every change is too close to the present yet: the next poll takes it
            return None
        return {
            "form": self.query.form,
            "search": self.query.search,
            "field": self.field,
            "window_start": mark,
            "window_end": end,
            "count": window.count,
            "count_exact": window.exact,
        }

    def check_mark(self, hook: DeyelHook, mark: int, server_ms: int | None) -> None:
        """Refuse a watermark after the server's present (its ``Date``; our clock with its margin without
        one) by more than ``max_clock_skew_seconds``: no change is stamped there before that moment comes, so
        the watch would wait silently (as the extraction refuses a window starting after the present)."""
        worker_ms = int(hook.clock() * 1000)
        now = latest_present(server_ms, worker_ms)
        if mark <= now + round(hook.config.max_clock_skew_seconds * 1000):
            return
        where = "the server's present (its Date)" if server_ms is not None else "this triggerer's clock"
        raise DeyelWatermarkError(
            f"the change trigger of {self.query.form} watches from {self.field}={mark}, "
            f"{(mark - now) / 1000:.0f} s after {where}: no change is stamped there yet (a start= in the "
            f"future, or a watermark written while a clock ran ahead); pass start= (epoch ms) in the past "
            f"and delete the key {self.state_key!r} from the asset's state"
        )

    def settled_present(self, hook: DeyelHook, server_ms: int | None) -> int | None:
        """The latest moment a window may end at (:func:`~deyel_provider.api.clock.settled_present`); None
        (with a warning) for a ``Date`` too far from our clock: it moves no watermark."""
        config = hook.config
        try:
            return settled_present(
                server_ms,
                int(hook.clock() * 1000),
                round(config.settle_seconds * 1000),
                round(config.max_clock_skew_seconds * 1000),
            )
        except DeyelClockSkewError as exc:
            self.log.warning("Not moving the change watermark of %s: %s", self.query.form, exc.detail)
            return None
