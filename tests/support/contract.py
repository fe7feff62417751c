"""The extraction contract as a check: what an emulator held before a read, what its concurrent writer did
during it, and what the read returned.

1. Every instance that matched for the whole read appears exactly once; one changed during the read at most
   once (exactly once in a full load, whose window follows it to its new value); no duplicates.
2. An instance of an incremental window that was edited during the read and is missing from the output has
   moved to the window's future, where the next window reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deyel_provider.emulator import RunningEmulator

FORM = "CRM_ACCOUNT"


@dataclass(frozen=True)
class Before:
    """Each live instance's dtLastUpdate before the read, read in-process (the writer acts on HTTP reads)."""

    updated: dict[str, int]
    mutations_seen: int

    @classmethod
    def of(cls, emulator: RunningEmulator) -> Before:
        store = emulator.state.store
        updated = {}
        for instance_id in store.all_ids(FORM):
            values = store.get(FORM, instance_id)
            assert values is not None
            updated[str(instance_id)] = int(values["dtLastUpdate"])
        return cls(updated, len(emulator.mutations()))


def check_contract(
    emulator: RunningEmulator,
    before: Before,
    records: list[dict[str, Any]],
    *,
    start: int | None,
    end: int | None,
) -> dict[str, int]:
    """Assert the contract; returns counts for the caller's own assertions."""
    low, high = start if start is not None else 0, end if end is not None else 2**63
    ids = [r["idObjectValue"] for r in records]
    assert len(ids) == len(set(ids)), f"duplicates: {sorted({i for i in ids if ids.count(i) > 1})[:10]}"
    during = emulator.mutations()[before.mutations_seen :]
    changed = {str(m["id"]) for m in during}
    inserted = {str(m["id"]) for m in during if m["kind"] == "insert"}
    deleted = {str(m["id"]) for m in during if m["kind"] == "delete"}
    matched = {i for i, updated in before.updated.items() if low <= updated < high}
    steady = matched - changed
    missing = steady - set(ids)
    assert not missing, f"{len(missing)} that matched the whole read are missing: {sorted(missing)[:10]}"
    strangers = set(ids) - matched - changed
    assert not strangers, f"instances that never matched: {sorted(strangers)[:10]}"
    assert all(low <= int(r["dtLastUpdate"]) < high for r in records)
    last_after: dict[str, int | None] = {}
    for m in during:
        last_after[str(m["id"])] = m["after_ms"]
    if end is None:
        # A full load follows an instance edited during the read to its new value: it is in the file, once
        # (one created during the read may come after the last look at the present: at most once).
        edited = {str(m["id"]) for m in during if m["kind"] == "edit"} & before.updated.keys()
        lost = (edited - deleted) - set(ids)
        assert not lost, f"instances edited during a full load are missing: {sorted(lost)[:10]}"
    else:
        for instance_id in (matched & changed) - set(ids):
            after = last_after[instance_id]
            assert after is None or after >= high, f"{instance_id} edited to {after}, inside the read window"
    return {
        "mutations": len(during),
        "records": len(ids),
        "steady": len(steady),
        "changed": len(changed),
        "inserted": len(inserted),
        "deleted": len(deleted),
    }
