"""Driving a DeyelChangeTrigger against the emulator: an asset state store, changes, and the next event."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.triggers.deyel import DeyelChangeTrigger

FORM = "PURCHASE_REQUEST"


class AssetState:
    """What Airflow 3.3 injects as ``asset_state_store``: an asset's JSON values by key (in its database)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))


def create(status: str) -> str:
    return DeyelHook().create_instance(FORM, {"cdStatus": status})["idObjectValue"]


def approve(instance_id: str) -> None:
    hook = DeyelHook()
    current = hook.get_instance(FORM, instance_id)
    hook.update_instance(FORM, instance_id, {"cdStatus": "APPROVED", "dtLastUpdate": current["dtLastUpdate"]})


def in_window(event: dict) -> list[str]:
    instances = DeyelHook().iter_instances(
        event["form"], search=event["search"] or None, start=event["window_start"], end=event["window_end"]
    )
    return sorted(i["idObjectValue"] for i in instances)


def watcher(state: AssetState | None = None, **kwargs) -> DeyelChangeTrigger:
    trigger = DeyelChangeTrigger(form=kwargs.pop("form", FORM), poll_interval=0.01, **kwargs)
    trigger.asset_state_store = state  # type: ignore[assignment]
    return trigger


async def watching(trigger: DeyelChangeTrigger, state: AssetState) -> None:
    """Until the trigger has taken its first watermark (the server's present): later changes are after it."""
    deadline = asyncio.get_running_loop().time() + 20
    while trigger.state_key not in state.values:
        assert asyncio.get_running_loop().time() < deadline, "the trigger never took a watermark"
        await asyncio.sleep(0.005)


async def next_event(events, timeout: float = 20.0) -> dict:
    return (await asyncio.wait_for(events.__anext__(), timeout)).payload
