"""Write-back test data: customers keyed by cdCustomer, the target form's state, JSON Lines sources."""

from __future__ import annotations

import json
from typing import Any

from deyel_provider.emulator.forms import TARGET_FORM

FORM = TARGET_FORM


KEY = "cdCustomer"


COUNTRIES = ("AR", "BR", "UY", "CL", "MX")


def customer(i: int, prefix: str = "C-", **changes: Any) -> dict[str, Any]:
    return {
        KEY: f"{prefix}{i:05d}",
        "dsName": f"Customer {i}",
        "cdCountry": COUNTRIES[i % len(COUNTRIES)],
        "qtEmployee": i % 700,
        "cbIsPartner": i % 3 == 0,
        "nuRevenue": round(i * 1.25, 2),
        "dtOpening": str(1540782000000 + i * 86_400_000),
        **changes,
    }


def stored(emulator, prefix: str = "") -> dict[str, dict[str, Any]]:
    """The form's instances by key; a key held twice fails the test."""
    store = emulator.state.store
    by_key: dict[str, dict[str, Any]] = {}
    for instance_id in store.all_ids(FORM):
        values = store.get(FORM, instance_id)
        if not str(values.get(KEY, "")).startswith(prefix):
            continue
        assert values[KEY] not in by_key, f"two instances have {KEY}={values[KEY]!r}"
        by_key[values[KEY]] = values
    return by_key


def assert_state_is(emulator, records, prefix: str = "") -> None:
    state = stored(emulator, prefix)
    assert sorted(state) == sorted(r[KEY] for r in records)
    for record in records:
        instance = state[record[KEY]]
        assert {field: instance.get(field) for field in record} == record


def write_jsonl(path, records) -> str:
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return str(path)
