"""Where a run without a data interval (``@daily`` cron, manual, asset-triggered) starts, and which window a
cleared or retried run reads again: watermarks bound to their owner and their run, kept in Airflow.

- **Owner.** One watermark per (connection, DAG, task, map index, form, field, search), or per
  (``watermark_key``, form, field, search) when the user shares one on purpose: two DAGs writing under one
  folder, or one task mapped over two connections, never start where the other ended.
- **Run.** Each run's window ``[start, end)`` is recorded when it is chosen (before the publish): in the
  task's state (Airflow 3.3+, ``context["task_state_store"]``, kept per DAG run, task and map index across
  retries and clears) and, once published, in the watermark's history of the last :data:`HISTORY` windows
  (the asset's state on 3.3+, the asset event's ``extra`` before). A cleared or retried run, whichever it is,
  reads exactly its recorded window again; a run older than the history whose window is gone is a typed error.
- **Authenticated.** Every stored value carries a MAC from a key derived from the connection's client secret
  (:func:`deyel_provider.auth.crypto.purpose_mac`) over the key it was written under; a value that fails it,
  is not this shape, or is out of range is a :class:`~deyel_provider.exceptions.DeyelWatermarkError` naming
  how to reset it (a run triggered with ``{"deyel_watermark_reset": true}`` in its conf).

The newest end advances only after a publish: a failed run leaves it where it was, and the next run reads
that window again (its own recorded window stays with it for its retries).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from deyel_provider.auth.crypto import WATERMARK_PURPOSE, purpose_mac
from deyel_provider.exceptions import DeyelWatermarkError

if TYPE_CHECKING:
    from airflow.sdk import Asset, Context

#: The key of the watermark in the asset event's extra (versions without an asset state store).
EXTRA_KEY = "watermark"
#: The format of stored values; 1 was the unauthenticated ``{"start", "end", "run_id"}`` of 0.x releases.
VERSION = 2
#: Published windows kept per watermark: a run older than the last ``HISTORY`` ones cannot be re-read.
HISTORY = 50
#: The ``dag_run.conf`` flag of a run that resets this DAG's watermarks to ``start_from``.
RESET_CONF = "deyel_watermark_reset"
#: No epoch-millisecond value past 9999-12-31T23:59:59.999Z is a moment this provider stores.
MAX_MS = 253_402_300_799_999

_HOW_TO_RESET = (
    f"reset it by triggering one run of this DAG with the conf {{{json.dumps(RESET_CONF)}: true}} (that run "
    f"reads from start_from and stores a new watermark; docs/extraction.md, 'Resetting a watermark')"
)


def has_asset_state() -> bool:
    """Whether this Airflow keeps per-asset state (3.3+)."""
    try:
        from airflow.sdk.execution_time.context import AssetStateStoreAccessors  # noqa: F401
    except ImportError:
        return False
    return True


def watermark_key(
    form: str,
    field: str,
    search: str | None,
    *,
    conn_id: str,
    dag_id: str | None,
    task_id: str | None,
    map_index: int | None = None,
    shared: str | None = None,
) -> str:
    """The key of one watermark: its owner (or the user's ``shared`` key) and what it reads.

    :param map_index: a mapped task's index (each instance of a mapped task owns its watermark); None or -1
        for a task that is not mapped.
    :param shared: ``watermark_key`` given by the user: replaces connection, DAG, task and map index.
    """
    owner: list[Any] = ["shared", shared] if shared else ["task", conn_id, dag_id, task_id]
    if not shared and map_index is not None and map_index >= 0:
        owner.append(map_index)
    text = json.dumps([*owner, form, field, search or ""], separators=(",", ":"))
    return f"deyel_watermark2:{form}:{field}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def legacy_key(form: str, field: str, search: str | None) -> str:
    """The key of releases before watermarks had owners (read only to say it is not used)."""
    digest = hashlib.sha256((search or "").encode()).hexdigest()[:16]
    return f"deyel_watermark:{form}:{field}:{digest}"


class WatermarkSigner:
    """MACs of stored watermarks with a key derived from the connection's client secret.

    :param client_secret: the connection's secret (never stored in a value, message or repr).
    :param salt: what else the key depends on (the credential: token URL and client id).
    """

    def __init__(self, client_secret: str, salt: str) -> None:
        self._secret = client_secret
        self._salt = salt

    def __repr__(self) -> str:
        return "WatermarkSigner()"

    @classmethod
    def for_connection(cls, client_secret: str, token_url: str, client_id: str) -> WatermarkSigner:
        """The signer of a connection: its key changes with the secret, the token URL or the client id."""
        return cls(client_secret, json.dumps(["watermark", token_url, client_id]))

    def mac(self, body: dict[str, Any]) -> str:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return purpose_mac(self._secret, self._salt, WATERMARK_PURPOSE, canonical)

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "mac": self.mac(body)}

    def verified(self, value: Any, key: str, where: str) -> dict[str, Any]:
        """``value`` without its MAC, once it proved to be a value of this version written under ``key``
        with this connection's key."""
        if not isinstance(value, dict):
            raise _untrusted(key, where, f"is a {type(value).__name__}, not a watermark of this provider")
        body = {k: v for k, v in value.items() if k != "mac"}
        if body.get("v") != VERSION or body.get("key") != key:
            raise _untrusted(key, where, "is not a watermark this provider wrote under this key")
        mac = value.get("mac")
        try:
            # compare_digest refuses non-ASCII text, and a hostile body may not even serialise.
            genuine = isinstance(mac, str) and mac.isascii() and hmac.compare_digest(mac, self.mac(body))
        except (ValueError, TypeError, RecursionError):
            genuine = False
        if not genuine:
            raise _untrusted(
                key,
                where,
                "fails its MAC: it was not written by this provider with this connection's client secret "
                "(planted or altered), or the secret was changed since",
            )
        return body


@dataclass(frozen=True)
class Window:
    """One run's window ``[start, end)`` in epoch ms; ``run_after``: the run's ``run_after`` (epoch ms), which
    orders runs when old windows are dropped."""

    run_id: str
    start: int
    end: int
    run_after: int | None = None

    def as_list(self) -> list[Any]:
        return [self.run_id, self.start, self.end, self.run_after]

    @classmethod
    def parse(cls, value: Any, key: str, where: str) -> Window:
        if not isinstance(value, list) or len(value) != 4 or not isinstance(value[0], str):
            raise _untrusted(key, where, "holds a window that is not [run_id, start, end, run_after]")
        start, end = _moment(value[1], key, where), _moment(value[2], key, where)
        run_after = None if value[3] is None else _moment(value[3], key, where)
        if start > end:
            raise _untrusted(key, where, f"holds a window that starts ({start}) after it ends ({end})")
        return cls(value[0], start, end, run_after)


@dataclass(frozen=True)
class Watermark:
    """The newest published end of one key, and the last :data:`HISTORY` published windows.

    ``dropped_after``: the newest ``run_after`` among windows no longer kept (or of a reset): a run at or
    before it without a recorded window may have had one, so it is not given another.
    """

    key: str
    end: int
    windows: tuple[Window, ...] = ()
    dropped_after: int | None = None

    def window_of(self, run_id: str | None) -> Window | None:
        return next((w for w in self.windows if run_id and w.run_id == run_id), None)

    def forgot(self, run_after: int | None) -> bool:
        """Whether a run of this ``run_after`` may have had a window that is no longer kept."""
        return run_after is not None and self.dropped_after is not None and run_after <= self.dropped_after

    def with_window(self, window: Window) -> Watermark:
        """This watermark once ``window`` is published: the newest end never moves back."""
        kept = [w for w in self.windows if w.run_id != window.run_id] + [window]
        dropped = self.dropped_after
        while len(kept) > HISTORY:
            old = kept.pop(0)
            if old.run_after is not None:
                dropped = max(dropped or old.run_after, old.run_after)
        return replace(self, end=max(self.end, window.end), windows=tuple(kept), dropped_after=dropped)

    def to_json(self, signer: WatermarkSigner) -> dict[str, Any]:
        # "key" and "end" keep the names of the previous release's value, which looks values up by its key.
        return signer.sign(
            {
                "key": self.key,
                "v": VERSION,
                "end": self.end,
                "windows": [w.as_list() for w in self.windows],
                "dropped_after": self.dropped_after,
            }
        )

    @classmethod
    def from_json(cls, value: Any, key: str, signer: WatermarkSigner, where: str) -> Watermark:
        body = signer.verified(value, key, where)
        windows = body.get("windows")
        if not isinstance(windows, list) or len(windows) > HISTORY:
            raise _untrusted(key, where, f"holds no list of at most {HISTORY} windows")
        dropped = body.get("dropped_after")
        return cls(
            key,
            _moment(body.get("end"), key, where),
            tuple(Window.parse(w, key, where) for w in windows),
            None if dropped is None else _moment(dropped, key, where),
        )


def read_watermark(context: Context, asset: Asset, key: str, signer: WatermarkSigner) -> Watermark | None:
    """The watermark stored under ``key``, or None before the first publish; a typed error when untrusted."""
    stores = context.get("asset_state_store")
    if stores is not None:
        value = stores[asset].get(key)
        return None if value is None else Watermark.from_json(value, key, signer, "the asset's state")
    for event in reversed(_events(context, asset)):
        stored = (getattr(event, "extra", None) or {}).get(EXTRA_KEY)
        if isinstance(stored, dict) and stored.get("key") == key:
            return Watermark.from_json(stored, key, signer, "the asset's latest event")
    return None


def write_watermark(
    context: Context, asset: Asset, mark: Watermark, signer: WatermarkSigner, extra: dict[str, Any]
) -> None:
    """Store ``mark``: in the asset's state (3.3+), and in the event's ``extra`` in any case."""
    value = mark.to_json(signer)
    extra[EXTRA_KEY] = value
    stores = context.get("asset_state_store")
    if stores is not None:
        stores[asset].set(mark.key, value)


def read_run_window(context: Context, key: str, signer: WatermarkSigner, run_id: str | None) -> Window | None:
    """This run's window, as recorded in the task's state (3.3+) when it was chosen; None if none was."""
    store = context.get("task_state_store")
    if store is None or not run_id:
        return None
    value = store.get(_window_key(key))
    if value is None:
        return None
    body = signer.verified(value, key, "this task's state")
    window = Window.parse(body.get("window"), key, "this task's state")
    if window.run_id != run_id:
        why = f"records a window of another run ({window.run_id[:80]!r})"
        raise _untrusted(key, "this task's state", why)
    return window


def record_run_window(context: Context, key: str, window: Window, signer: WatermarkSigner) -> None:
    """Record this run's window in the task's state (3.3+) before anything is published."""
    store = context.get("task_state_store")
    if store is None or not window.run_id:
        return
    value = signer.sign({"key": key, "v": VERSION, "window": window.as_list()})
    try:
        from airflow.sdk.execution_time.context import NEVER_EXPIRE
    except ImportError:  # pragma: no cover - 3.3 has it; the store exists only there
        store.set(_window_key(key), value)
        return
    # Kept as long as its DAG run (deleted with it): the window must outlive the task's retention.
    store.set(_window_key(key), value, retention=NEVER_EXPIRE)


def legacy_end(context: Context, asset: Asset, form: str, field: str, search: str | None) -> int | None:
    """The end of a watermark stored by a release before 1.x's owners and MACs, to name it in a warning
    (``None`` when absent, or not a moment between 1970 and 9999)."""
    key = legacy_key(form, field, search)
    stored: Any = None
    stores = context.get("asset_state_store")
    if stores is not None:
        stored = stores[asset].get(key)
    else:
        for event in reversed(_events(context, asset)):
            value = (getattr(event, "extra", None) or {}).get(EXTRA_KEY)
            if isinstance(value, dict) and value.get("key") == key:
                stored = value
                break
    end = stored.get("end") if isinstance(stored, dict) else stored
    # Unauthenticated: anyone who can write the asset's state may plant it. Only a moment a date can hold
    # is named (the warning formats it; year 3170843 would fail every first and every reset run).
    if not isinstance(end, int) or isinstance(end, bool) or not 0 <= end <= MAX_MS:
        return None
    return end


def reset_requested(context: Context) -> bool:
    """Whether this run was triggered to reset its watermarks (``{"deyel_watermark_reset": true}``)."""
    conf = getattr(context.get("dag_run"), "conf", None)
    return isinstance(conf, dict) and conf.get(RESET_CONF) is True


def untrusted_window(key: str, why: str) -> DeyelWatermarkError:
    return _untrusted(key, "this run", why)


def _untrusted(key: str, where: str, why: str) -> DeyelWatermarkError:
    return DeyelWatermarkError(f"the watermark {key!r} in {where} {why}; {_HOW_TO_RESET}")


def _moment(value: Any, key: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MS:
        shown = f"{value}" if isinstance(value, int) and value.bit_length() < 128 else type(value).__name__
        raise _untrusted(
            key, where, f"holds {shown[:40]!r} where an epoch-millisecond moment before year 10000 goes"
        )
    return value


def _window_key(key: str) -> str:
    return f"{key}:window"


def _events(context: Context, asset: Asset) -> list[Any]:
    try:
        return list(context["inlet_events"][asset])
    except (KeyError, TypeError):
        return []
