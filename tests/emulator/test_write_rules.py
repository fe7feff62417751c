"""What the emulator enforces on writes: required fields and types per form (400 with one Deyel error per
field), the concurrent editor fault (409 for the writer that read before), a late lost answer, URL length."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from deyel_provider.emulator import RunningEmulator, run_emulator
from deyel_provider.emulator.forms import TARGET_FORM
from tests.support.emulator_tokens import bearer, get_token

GOOD = {"cdCustomer": "C-1", "dsName": "Tenaris", "qtEmployee": 10, "cbIsPartner": True, "dtOpening": "1"}


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with run_emulator(records=20) as running:
        yield running


@pytest.fixture(scope="module")
def token(emu: RunningEmulator) -> str:
    return get_token(emu)


def call(emu: RunningEmulator, token: str, method: str, form: str, path: str = "", **kwargs: Any):
    url = f"{emu.url}/forms/{form}/instances{path}"
    return requests.request(method, url, headers=bearer(token), timeout=10, **kwargs)


def entries(response: requests.Response) -> list[tuple[str, str]]:
    return [(e["attribute-name"], e["message"]) for e in response.json()["errors"]]


def test_the_target_form_exists_empty_and_refuses_what_it_cannot_store(emu, token):
    listed = call(emu, token, "GET", TARGET_FORM)
    assert (listed.status_code, listed.json()) == (200, [])

    missing = call(emu, token, "POST", TARGET_FORM, json={"qtEmployee": "ten", "dsOther": "x"})
    assert missing.status_code == 400
    assert entries(missing) == [
        ("cdCustomer", "The field 'cdCustomer' is required"),
        ("dsName", "The field 'dsName' is required"),
        ("qtEmployee", "Invalid value for the field 'qtEmployee': expected a number"),
        ("dsOther", f"The form '{TARGET_FORM}' has no field 'dsOther'"),
    ]
    for field, value in [("cbIsPartner", "yes"), ("dtOpening", 1540782000000), ("dsName", 5)]:
        wrong = call(emu, token, "POST", TARGET_FORM, json={**GOOD, field: value})
        assert wrong.status_code == 400 and [a for a, _ in entries(wrong)] == [field]
    assert call(emu, token, "GET", TARGET_FORM).json() == []  # nothing refused was stored

    created = call(emu, token, "POST", TARGET_FORM, json={**GOOD, "nuRevenue": None})
    assert created.status_code == 201
    instance_id = created.json()["idObjectValue"]
    stamp = created.json()["dtLastUpdate"]
    # A PATCH need not name the required fields, but must not empty one; a PUT must hold them all.
    emptied = call(
        emu, token, "PATCH", TARGET_FORM, f"/{instance_id}", json={"dsName": "", "dtLastUpdate": stamp}
    )
    assert entries(emptied) == [("dsName", "The field 'dsName' is required")]
    partial_put = call(
        emu, token, "PUT", TARGET_FORM, f"/{instance_id}", json={"dsName": "x", "dtLastUpdate": stamp}
    )
    assert [a for a, _ in entries(partial_put)] == ["cdCustomer"]
    patched = call(
        emu, token, "PATCH", TARGET_FORM, f"/{instance_id}", json={"qtEmployee": 11, "dtLastUpdate": stamp}
    )
    assert patched.status_code == 202
    # Searches name the form's fields only.
    assert (
        call(emu, token, "GET", TARGET_FORM, params={"search": "cdCustomer=in:C-1;C-2"}).json()[0][
            "qtEmployee"
        ]
        == 11
    )
    assert call(emu, token, "GET", TARGET_FORM, params={"search": "dsOther=eq:x"}).status_code == 400


def test_the_seeded_form_checks_the_types_of_its_own_fields_only(emu, token):
    wrong = call(emu, token, "POST", "CRM_ACCOUNT", json={"dsCompany": "x", "qtEmployee": "many"})
    assert wrong.status_code == 400 and [a for a, _ in entries(wrong)] == ["qtEmployee"]
    assert (
        call(emu, token, "POST", "CRM_ACCOUNT", json={"dsCompany": "x", "qtOther": "many"}).status_code == 201
    )
    # A form created by a POST has no schema.
    assert call(emu, token, "POST", "FREE_FORM", json={"qtEmployee": "many"}).status_code == 201


def test_validation_is_a_switch_and_8_0_takes_strings():
    with run_emulator(records=1, validate_writes=False) as emu:
        token = get_token(emu)
        assert call(emu, token, "POST", TARGET_FORM, json={"qtEmployee": "ten"}).status_code == 201
    with run_emulator(records=1, version="8.0") as emu:
        token = get_token(emu)
        as_strings = {**GOOD, "qtEmployee": "10", "cbIsPartner": "true"}
        assert call(emu, token, "POST", TARGET_FORM, json=as_strings).status_code == 201
        assert call(emu, token, "POST", TARGET_FORM, json=GOOD).status_code == 400


def test_the_edit_fault_is_another_user_saving_first(emu, token):
    before = call(emu, token, "GET", "CRM_ACCOUNT", "/7").json()
    emu.set_faults(
        [{"route": "data", "method": "PATCH", "action": "edit", "count": 1, "body": {"dsNotes": "theirs"}}]
    )
    try:
        mine = {"qtEmployee": 3, "dtLastUpdate": before["dtLastUpdate"]}
        assert call(emu, token, "PATCH", "CRM_ACCOUNT", "/7", json=mine).status_code == 409
        after = call(emu, token, "GET", "CRM_ACCOUNT", "/7").json()
        assert after["dsNotes"] == "theirs" and after["qtEmployee"] == before["qtEmployee"]
        assert int(after["dtLastUpdate"]) > int(before["dtLastUpdate"])
        again = {"qtEmployee": 3, "dtLastUpdate": after["dtLastUpdate"]}
        assert call(emu, token, "PATCH", "CRM_ACCOUNT", "/7", json=again).status_code == 202  # count: 1
    finally:
        emu.clear_faults()


def test_a_long_request_target_gets_414():
    with run_emulator(records=1, max_url_length=300) as emu:
        token = get_token(emu)
        short = call(emu, token, "GET", "CRM_ACCOUNT", params={"search": "dsCompany=in:" + "a;" * 40})
        assert short.status_code == 200
        long = call(emu, token, "GET", "CRM_ACCOUNT", params={"search": "dsCompany=in:" + "a;" * 80})
        assert long.status_code == 414 and entries(long)[0][0] == "search"
        assert emu.stats()["status_counts"] == {"200": 1, "414": 1}


def test_data_requests_are_counted_per_method():
    with run_emulator(records=3) as emu:
        token = get_token(emu)
        call(emu, token, "GET", "CRM_ACCOUNT", "/1")
        call(emu, token, "POST", TARGET_FORM, json=GOOD)
        call(emu, token, "POST", TARGET_FORM, json={})  # refused: counted all the same
        assert emu.methods() == {"GET": 1, "POST": 2}
        assert requests.get(emu.url + "/_emulator/stats/methods", timeout=10).json() == emu.methods()
        emu.reset()
        assert emu.methods() == {}
