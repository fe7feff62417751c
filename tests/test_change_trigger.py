"""DeyelChangeTrigger against the emulator: it fires for changes after its watermark, each event's window
extracts exactly those changes, and the watermark survives a triggerer restart through the asset's state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from airflow.triggers.base import BaseEventTrigger

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelAuthError, DeyelConfigError, DeyelWatermarkError
from deyel_provider.extract.watermark import MAX_MS, VERSION
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.triggers.deyel import DeyelChangeTrigger, _signer_of
from tests.support.change_trigger import (
    FORM,
    AssetState,
    approve,
    create,
    in_window,
    next_event,
    watcher,
    watching,
)
from tests.support.helpers import CLIENT_SECRET

#: These tests move the emulator's clock a second or two past each change: no settle margin (its own tests
#: are in test_settle.py).
NO_MARGIN = {"settle_seconds": 0}


def test_fires_for_later_changes_with_a_window_that_extracts_them(emulator, deyel_conn):
    deyel_conn(extra=NO_MARGIN)
    first, second = create("PENDING"), create("PENDING")
    emulator.advance(5)  # these two were written well before the watch starts
    state = AssetState()
    trigger = watcher(state)

    async def scenario() -> tuple[dict, dict]:
        events = trigger.run()
        waiting = asyncio.ensure_future(next_event(events))
        await watching(trigger, state)
        await asyncio.sleep(0.05)
        assert not waiting.done()  # nothing changed since the watch started
        await asyncio.to_thread(approve, second)
        emulator.advance(2)  # the server's present moves past the change
        event = await waiting
        await asyncio.to_thread(approve, first)
        emulator.advance(2)
        later = await next_event(events)
        await events.aclose()
        return event, later

    event, later = asyncio.run(scenario())
    assert event["count"] == 1
    assert in_window(event) == [second]
    assert later["window_start"] == event["window_end"]  # consecutive windows, nothing between them
    assert in_window(later) == [first]
    # A window is saved once the triggerer asks for the next event: the first one is; the last one was only
    # taken (the generator was closed right after), so a restarted trigger sends it again, never loses it.
    assert list(state.values) == [trigger.state_key]
    assert state.values[trigger.state_key]["end"] == event["window_end"]  # signed: {"v", "key", "end", "mac"}


def test_watching_a_form_before_its_first_instance(emulator, deyel_conn):
    deyel_conn(extra=NO_MARGIN)
    state = AssetState()
    trigger = watcher(state)

    async def scenario() -> dict:
        events = trigger.run()
        waiting = asyncio.ensure_future(next_event(events))
        await watching(trigger, state)
        created = await asyncio.to_thread(create, "PENDING")
        emulator.advance(2)
        event = await waiting
        await events.aclose()
        assert in_window(event) == [created]
        return event

    assert asyncio.run(scenario())["count"] == 1


def test_the_watermark_survives_a_triggerer_restart(emulator, deyel_conn):
    deyel_conn(extra=NO_MARGIN)
    (pending,) = [create("PENDING")]
    state = AssetState()
    first_run = watcher(state)

    async def until_cancelled() -> None:
        events = first_run.run()
        pending = asyncio.ensure_future(events.__anext__())
        await watching(first_run, state)
        pending.cancel()  # the triggerer stops
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await events.aclose()

    emulator.advance(5)
    asyncio.run(until_cancelled())  # the triggerer stops; the watermark it started from is in the state
    started_at = state.values[first_run.state_key]["end"]
    approve(pending)  # changed while no triggerer ran
    emulator.advance(2)
    _, kwargs = first_run.serialize()
    restarted = watcher(state, **{k: v for k, v in kwargs.items() if k not in ("form", "poll_interval")})

    async def first_after_restart() -> dict:
        events = restarted.run()
        event = await next_event(events)
        await events.aclose()
        return event

    event = asyncio.run(first_after_restart())
    assert event["window_start"] == started_at
    assert in_window(event) == [pending]


def test_start_reads_everything_since_then_once(emulator, deyel_conn):
    trigger = watcher(form="CRM_ACCOUNT", search="cdCountry=eq:AR", start=0)

    async def first() -> dict:
        events = trigger.run()
        event = await next_event(events)
        await events.aclose()
        return event

    event = asyncio.run(first())
    expected = [
        i["idObjectValue"] for i in DeyelHook().iter_instances("CRM_ACCOUNT", search="cdCountry=eq:AR")
    ]
    assert expected
    assert (event["count"], event["count_exact"]) == (len(expected), True)
    assert in_window(event) == sorted(expected)


def test_refused_credentials_end_the_trigger(emulator, deyel_conn):
    deyel_conn(password="wrong-secret")

    async def first() -> None:
        async for _ in watcher().run():
            pass

    with pytest.raises(DeyelAuthError):
        asyncio.run(first())


def test_serialises_to_plain_values_without_secrets(emulator, deyel_conn):
    trigger = DeyelChangeTrigger(form=FORM, search="cdStatus=eq:APPROVED", poll_interval=30, start=5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "deyel_provider.triggers.deyel.DeyelChangeTrigger"
    text = json.dumps(kwargs)
    assert CLIENT_SECRET not in text
    assert DeyelChangeTrigger(**json.loads(text)).serialize() == (classpath, kwargs)
    # An AssetWatcher identifies its trigger by this hash: the same arguments, the same trigger.
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*trigger.serialize())
    assert emulator.stats()["token_requests"] == 0


# -- the watermark in the asset's state: owned by the connection, signed (issue 20, findings 2 and 3) ------


def _first_event(trigger: DeyelChangeTrigger) -> dict:
    async def first() -> dict:
        events = trigger.run()
        event = await next_event(events)
        await events.aclose()
        return event

    return asyncio.run(first())


def test_two_connections_watching_one_asset_keep_their_own_watermarks(emulator, deyel_conn):
    """Finding 2 for the change trigger: its key was (form, field, search), so two watchers of one asset
    through two connections (two tenants) shared one watermark, each starting where the other stopped."""
    deyel_conn("deyel_tenant_b")
    state = AssetState()
    tenant_a = watcher(state, start=0)
    tenant_b = watcher(state, start=0, deyel_conn_id="deyel_tenant_b")
    assert tenant_a.state_key != tenant_b.state_key
    create("PENDING")
    emulator.advance(15)  # past the settle margin
    first_a = _first_event(tenant_a)
    first_b = _first_event(tenant_b)
    assert first_a["window_start"] == first_b["window_start"] == 0  # B did not start at A's end
    assert first_a["count"] == first_b["count"] == 1


@pytest.mark.parametrize(
    "planted",
    [
        4_102_444_800_000,  # a bare moment (year 2100), as an earlier release stored it
        {"v": 2, "key": None, "end": 4_102_444_800_000, "mac": "0" * 64},
        "not a watermark",
    ],
)
def test_a_planted_watermark_is_not_trusted(emulator, deyel_conn, planted):
    """Finding 3 for the change trigger: whatever was in the asset's state was trusted, so a moment planted
    far ahead silenced the watcher until then. Now a value this provider did not sign is refused: with
    ``start`` the watch begins there (repeats at most), without it the trigger fails typed."""
    create("PENDING")
    emulator.advance(15)
    state = AssetState()
    key = watcher(state).state_key
    if isinstance(planted, dict):
        planted = {**planted, "key": key}
    state.values[key] = planted
    event = _first_event(watcher(state, start=0))
    assert event["window_start"] == 0 and event["count"] == 1

    state.values[key] = planted
    with pytest.raises(DeyelWatermarkError, match="pass start="):
        _first_event(watcher(state))


def test_a_watermark_signed_with_another_connections_secret_is_not_trusted(emulator, deyel_conn):
    """A value signed under this very key, but with another connection's client secret (another tenant's,
    or this one's before a rotation), is refused too."""
    deyel_conn("deyel_other", password="another-secret")
    state = AssetState()
    mine = watcher(state)
    theirs = _signer_of(DeyelHook(deyel_conn_id="deyel_other"))
    state.values[mine.state_key] = theirs.sign(
        {"v": VERSION, "key": mine.state_key, "end": 4_102_444_800_000}
    )
    with pytest.raises(DeyelWatermarkError, match="fails its check"):
        _first_event(mine)
    # The same value signed with this connection's own secret is trusted (the check above can pass).
    state.values[mine.state_key] = _signer_of(DeyelHook()).sign(
        {"v": VERSION, "key": mine.state_key, "end": 0}
    )
    create("PENDING")
    emulator.advance(15)
    assert _first_event(mine)["window_start"] == 0


# -- a watermark checked against the server's present (review R6) --------------------------------------------


# A moment of 2026 in microseconds (a fixed value: pytest-xdist needs the same test ids in every worker).
NOW_IN_MICROSECONDS = 1_780_000_000_000_000


@pytest.mark.parametrize("start", [NOW_IN_MICROSECONDS, -1, MAX_MS + 1, True, "5", 1.5])
def test_a_start_that_is_no_epoch_millisecond_moment_is_refused_when_built(start):
    """Review R6: start= in microseconds by mistake was taken as it is (and failed only when polled)."""
    with pytest.raises(DeyelConfigError, match=r"start must be epoch milliseconds"):
        DeyelChangeTrigger(form=FORM, start=start)


@pytest.mark.parametrize("literal", ["epoch_ms", "iso"])
@pytest.mark.parametrize("where", ["start", "asset state"])
def test_a_watermark_after_the_servers_present_is_a_typed_error(deyel_conn, literal, where):
    """Review R6: a mark a day after the server's Date (a start= from a clock running ahead, or a stored
    one) watched silently forever: no change is stamped there until then. Now the first poll refuses it,
    with no request more than a poll makes."""
    with run_emulator(records=0, date_format=literal) as emulator:
        deyel_conn(url=emulator.url, extra={"cache": "memory", **NO_MARGIN, "date_literal": literal})
        ahead = int(time.time() * 1000) + 86_400_000
        state = AssetState()
        if where == "start":
            trigger = watcher(state, start=ahead)
        else:
            trigger = watcher(state)
            state.values[trigger.state_key] = _signer_of(DeyelHook()).sign(
                {"v": VERSION, "key": trigger.state_key, "end": ahead}
            )
        create("PENDING")
        emulator.advance(2)
        emulator.reset()
        with pytest.raises(DeyelWatermarkError, match=r"after the server's present.*start="):
            _first_event(trigger)
        assert emulator.methods() == {"GET": 1}  # the poll's own request, nothing more
