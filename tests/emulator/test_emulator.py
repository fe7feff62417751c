"""The Deyel emulator over real HTTP: token grants, data routes, switches, faults, counters and the CLI."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
import requests
import time_machine

from deyel_provider.emulator import EmulatorSettings, RunningEmulator, create_app, run_emulator
from tests.support.emulator_tokens import CLIENT, bearer, get_token, token_post

FORM = "CRM_ACCOUNT"
ALL = {"pageSize": 1000}


# -- helpers -------------------------------------------------------------------------------------------------


def instances_url(emu: RunningEmulator, form: str = FORM) -> str:
    return f"{emu.url}{emu.settings.api_prefix}/forms/{form}/instances"


def api(emu: RunningEmulator, method: str, path: str = "", token: str | None = None, **kwargs: Any):
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers.update(bearer(token))
    return requests.request(method, instances_url(emu) + path, headers=headers, timeout=10, **kwargs)


def ids_of(response: requests.Response) -> list[int]:
    return [int(item["idObjectValue"]) for item in response.json()]


def errors(message: str, attribute: str = "") -> dict[str, Any]:
    return {"errors": [{"message": message, "attribute-name": attribute}]}


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with run_emulator(records=200) as running:
        yield running


@pytest.fixture(scope="module")
def token(emu: RunningEmulator) -> str:
    return get_token(emu)


@pytest.fixture(scope="module")
def everything(emu: RunningEmulator, token: str) -> list[dict[str, Any]]:
    response = api(emu, "GET", token=token, params=ALL)
    assert response.status_code == 200
    return response.json()


# -- token endpoint ------------------------------------------------------------------------------------------


def test_client_credentials_grant_returns_the_documented_body(emu: RunningEmulator) -> None:
    response = token_post(emu, {"grant_type": "client_credentials"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400


def test_raw_basic_header_from_the_docs_is_accepted(emu: RunningEmulator) -> None:
    headers = {"Authorization": "Basic REVZRUxCT1Q6Qk9UREVZRUwzMTIh"}
    response = token_post(emu, {"grant_type": "client_credentials"}, auth=None, headers=headers)
    assert response.status_code == 200


def test_client_credentials_in_form_fields_are_accepted(emu: RunningEmulator) -> None:
    data = {
        "grant_type": "client_credentials",
        "client_id": CLIENT[0],
        "client_secret": CLIENT[1],
        "scope": "x",
    }
    assert token_post(emu, data, auth=None).status_code == 200


@pytest.mark.parametrize(
    ("auth", "data"),
    [
        (("DEYELBOT", "wrong"), {}),
        (("OTHER", "BOTDEYEL312!"), {}),
        (None, {}),
        (None, {"client_id": "DEYELBOT", "client_secret": "nope"}),
    ],
)
def test_bad_client_gets_401_invalid_client_id(emu: RunningEmulator, auth: Any, data: dict[str, str]) -> None:
    response = token_post(emu, {"grant_type": "client_credentials", **data}, auth=auth)
    assert response.status_code == 401
    assert response.text == '{"error_description":"Invalid client_id","error":"Invalid_request"}'


def test_password_grant_adds_a_refresh_token(emu: RunningEmulator) -> None:
    response = token_post(emu, {"grant_type": "password", "username": "JPerez", "password": "JPerez-pass1"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["sub"] == "JPerez"


@pytest.mark.parametrize("user", [("JPerez", "bad"), ("Nobody", "JPerez-pass1"), ("", "")])
def test_password_grant_with_a_bad_user(emu: RunningEmulator, user: tuple[str, str]) -> None:
    response = token_post(emu, {"grant_type": "password", "username": user[0], "password": user[1]})
    assert response.status_code == 401
    assert response.json() == {
        "error_description": "Invalid username or password",
        "error": "Invalid_request",
    }


def test_password_grant_with_a_bad_client(emu: RunningEmulator) -> None:
    data = {"grant_type": "password", "username": "JPerez", "password": "JPerez-pass1"}
    response = token_post(emu, data, auth=("DEYELBOT", "x"))
    assert response.status_code == 401
    assert response.json()["error_description"] == "Invalid client_id"


@pytest.mark.parametrize("refresh_auth", [("DEYELBOT", ""), CLIENT])
def test_refresh_grant_returns_a_new_access_token_and_the_same_refresh_token(
    emu: RunningEmulator, refresh_auth: tuple[str, str]
) -> None:
    first = token_post(
        emu, {"grant_type": "password", "username": "JPerez", "password": "JPerez-pass1"}
    ).json()
    response = token_post(
        emu, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, refresh_auth
    )
    assert response.status_code == 200
    body = response.json()
    assert body["refresh_token"] == first["refresh_token"]
    assert body["access_token"] != first["access_token"]
    assert api(emu, "GET", "/1", token=body["access_token"]).status_code == 200


@pytest.mark.parametrize(
    ("refresh", "auth"),
    [("not-a-refresh-token", CLIENT), (None, ("OTHER", "")), (None, ("DEYELBOT", "wrong"))],
)
def test_refresh_grant_failure_body(emu: RunningEmulator, refresh: str | None, auth: Any) -> None:
    if refresh is None:
        data = {"grant_type": "password", "username": "JPerez", "password": "JPerez-pass1"}
        refresh = token_post(emu, data).json()["refresh_token"]
    response = token_post(emu, {"grant_type": "refresh_token", "refresh_token": refresh}, auth)
    assert response.status_code == 401
    assert response.json() == {
        "errors": [
            {"message": "Unauthorized", "attribute-name": ""},
            {"message": "Invalid refresh token.", "attribute-name": "refresh_token"},
        ]
    }


@pytest.mark.parametrize(
    ("data", "description"),
    [({}, "Missing grant_type"), ({"grant_type": "authorization_code"}, "Unsupported grant_type")],
)
def test_missing_or_unsupported_grant_gets_400(
    emu: RunningEmulator, data: dict[str, str], description: str
) -> None:
    response = token_post(emu, data)
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid_request", "error_description": description}


def test_token_request_must_be_form_encoded(emu: RunningEmulator) -> None:
    response = requests.post(
        emu.url + "/oauth/token", json={"grant_type": "client_credentials"}, auth=CLIENT, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid_request"


def test_token_error_statuses_are_switches() -> None:
    with run_emulator(records=1, token_error_status=400, bad_grant_status=422) as emu:
        assert token_post(emu, {"grant_type": "client_credentials"}, ("x", "y")).status_code == 400
        assert token_post(emu, {"grant_type": "nope"}).status_code == 422


def test_jwt_header_and_claims(emu: RunningEmulator) -> None:
    first, second = get_token(emu), get_token(emu)
    assert first != second
    assert jwt.get_unverified_header(first) == {"kid": "k1", "alg": "RS256"}
    claims = jwt.decode(first, emu.state.tokens.public_key, algorithms=["RS256"])
    assert claims["iss"] == "Deyel"
    assert claims["sub"] == "DEYELBOT"
    assert claims["exp"] - claims["iat"] == 86400
    assert claims["cdOrgUnit"] == "0000000001"
    assert claims["company"] == "CST"
    assert claims["grant_type"] == "client_credentials"
    assert claims["idDataBaseSession"] == f"DEYELBOT*{claims['nuSecHidden']}"
    assert isinstance(claims["permissions"], str)
    assert json.loads(claims["permissions"])["lsPermissions"][0] == {
        "idApplication": "DEYEL",
        "cdPermission": "USUARIOFINAL",
    }
    later = jwt.decode(second, options={"verify_signature": False})
    assert later["nuSecHidden"] == claims["nuSecHidden"] + 1
    assert later["jti"] != claims["jti"]


# -- authorization of data calls -----------------------------------------------------------------------------


def test_data_calls_need_a_known_live_token(emu: RunningEmulator) -> None:
    unauthorized = errors("Unauthorized")
    assert api(emu, "GET").json() == unauthorized
    assert api(emu, "GET", headers={"Authorization": "Bearer"}).status_code == 401
    assert api(emu, "GET", headers={"Authorization": "Basic abc"}).status_code == 401
    assert api(emu, "GET", token="not.a.jwt").json() == unauthorized
    # A well-formed token signed by another emulator is unknown here.
    with run_emulator(records=1) as other:
        foreign = get_token(other)
    response = api(emu, "GET", token=foreign)
    assert (response.status_code, response.json()) == (401, unauthorized)


def test_revoked_tokens_are_refused() -> None:
    with run_emulator(records=2) as emu:
        _check_revocation(emu)


def _check_revocation(emu: RunningEmulator) -> None:
    one, two, three = get_token(emu), get_token(emu), get_token(emu)
    response = requests.post(emu.url + "/_emulator/revoke", json={"token": one}, timeout=10)
    assert response.json() == {"revoked": 1}
    assert api(emu, "GET", "/1", token=one).status_code == 401
    assert api(emu, "GET", "/1", token=two).status_code == 200
    emu.revoke(two)
    assert api(emu, "GET", "/1", token=two).status_code == 401
    assert requests.post(emu.url + "/_emulator/revoke", json={}, timeout=10).json()["revoked"] >= 1
    assert api(emu, "GET", "/1", token=three).status_code == 401


def test_expired_tokens_are_refused_with_the_errorcode_style() -> None:
    with (
        run_emulator(records=3, token_ttl=1, unauthorized_style="errorCode") as emu,
        time_machine.travel(time.time(), tick=False) as clock,
    ):
        token = get_token(emu)
        assert api(emu, "GET", "/1", token=token).status_code == 200
        assert emu.stats()["active_tokens"] == 1
        clock.shift(1.1)  # the emulator's thread reads the same, moved, clock
        response = api(emu, "GET", "/1", token=token)
        assert response.status_code == 401
        assert response.json() == {"errorCode": "UNAUTHORIZED", "message": "Unauthorized"}
        assert emu.stats()["active_tokens"] == 0


# -- instances -----------------------------------------------------------------------------------------------


def test_seeded_instances_have_the_documented_shape(
    emu: RunningEmulator, everything: list[dict[str, Any]]
) -> None:
    assert len(everything) == 200
    first = everything[0]
    assert first["idObjectValue"] == "1"
    assert first["links"] == [{"rel": "self", "href": f"{emu.url}/forms/CRM_ACCOUNT/instances/1"}]
    assert isinstance(first["qtEmployee"], int) and isinstance(first["cbIsPartner"], bool)
    assert isinstance(first["nuRevenue"], float) and first["dtOpening"].isdigit()
    # Spread over records * step from the start, shuffled: the listing (by id) is not in update order.
    updates = [int(item["dtLastUpdate"]) for item in everything]
    start = emu.settings.updated_start_ms
    assert all(start <= u < start + 200 * 60_000 for u in updates)
    assert len(set(updates)) == 200 and updates != sorted(updates)
    rows = [row for item in everything for row in item["lsAddress"]]
    assert rows and all(set(row) == {"lsAddress/dsAddress", "lsAddress/dsCity"} for row in rows)
    assert any(item["dsNotes"] is None for item in everything)
    assert any(("," in item["dsCompany"] or "\n" in item["dsCompany"]) for item in everything)
    assert "JPerez" in {item["cdInstanceOwner"] for item in everything}


def test_generation_is_deterministic_per_seed(emu: RunningEmulator, token: str) -> None:
    with run_emulator(records=200) as same, run_emulator(records=200, seed=7) as other:
        one = api(same, "GET", "/17", token=get_token(same)).json()
        two = api(other, "GET", "/17", token=get_token(other)).json()
    here = api(emu, "GET", "/17", token=token).json()
    strip = lambda d: {k: v for k, v in d.items() if k != "links"}  # noqa: E731
    assert strip(one) == strip(here)
    assert strip(two) != strip(here)


def test_single_instance_and_missing_ones(emu: RunningEmulator, token: str, everything: list[dict]) -> None:
    response = api(emu, "GET", "/42", token=token)
    assert response.status_code == 200
    assert response.json() == everything[41]
    for missing in ("/201", "/0", "/abc", "/042"):
        response = api(emu, "GET", missing, token=token)
        assert response.status_code == 404
        assert response.json()["errors"][0]["message"]
    response = requests.get(instances_url(emu, "NO_SUCH_FORM"), headers=bearer(token), timeout=10)
    assert response.status_code == 404


def test_crud_with_optimistic_locking() -> None:
    with run_emulator(records=10) as emu:
        token = get_token(emu)
        created = api(emu, "POST", token=token, json={"dsCompany": "Tenaris", "qtEmployee": 1000})
        assert created.status_code == 201
        body = created.json()
        assert body["idObjectValue"] == body["value"] == "11"
        assert body["idObjectName"] == body["name"] == FORM
        instance = api(emu, "GET", "/11", token=token).json()
        assert instance["dsCompany"] == "Tenaris" and instance["dtLastUpdate"] == body["dtLastUpdate"]

        seeded = api(emu, "GET", "/3", token=token).json()
        change = {"dsCompany": "Renamed", "qtEmployee": 5}
        missing = api(emu, "PUT", "/3", token=token, json=change)
        assert (missing.status_code, missing.json()["errors"][0]["attribute-name"]) == (400, "dtLastUpdate")
        stale = api(emu, "PUT", "/3", token=token, json={**change, "dtLastUpdate": "1"})
        assert (stale.status_code, stale.json()["errors"][0]["attribute-name"]) == (409, "dtLastUpdate")
        put = api(emu, "PUT", "/3", token=token, json={**change, "dtLastUpdate": seeded["dtLastUpdate"]})
        assert (put.status_code, put.content) == (202, b"")
        after = api(emu, "GET", "/3", token=token).json()
        assert after["dsCompany"] == "Renamed" and "cdCountry" not in after
        assert int(after["dtLastUpdate"]) > int(seeded["dtLastUpdate"])
        # The old dtLastUpdate is now stale.
        again = api(
            emu, "PATCH", "/3", token=token, json={"qtEmployee": 6, "dtLastUpdate": seeded["dtLastUpdate"]}
        )
        assert again.status_code == 409
        patch = api(
            emu, "PATCH", "/3", token=token, json={"qtEmployee": 6, "dtLastUpdate": after["dtLastUpdate"]}
        )
        assert (patch.status_code, patch.content) == (202, b"")
        patched = api(emu, "GET", "/3", token=token).json()
        assert (patched["dsCompany"], patched["qtEmployee"]) == ("Renamed", 6)
        assert int(patched["dtLastUpdate"]) > int(after["dtLastUpdate"])

        assert api(emu, "DELETE", "/3", token=token).status_code == 204
        assert api(emu, "GET", "/3", token=token).status_code == 404
        assert api(emu, "DELETE", "/3", token=token).status_code == 404
        assert api(emu, "PUT", "/3", token=token, json=patched).status_code == 404
        listed = ids_of(api(emu, "GET", token=token))
        assert listed == [1, 2, 4, 5, 6, 7, 8, 9, 10, 11]


def test_stale_status_is_a_switch() -> None:
    with run_emulator(records=2, stale_status=400) as emu:
        token = get_token(emu)
        response = api(emu, "PATCH", "/1", token=token, json={"qtEmployee": 1, "dtLastUpdate": "5"})
        assert response.status_code == 400
        assert response.json()["errors"][0]["attribute-name"] == "dtLastUpdate"


def test_post_validation_and_new_forms(emu: RunningEmulator, token: str) -> None:
    other = instances_url(emu, "MY_FORM")
    assert requests.get(other, headers=bearer(token), timeout=10).status_code == 404
    bad_type = api(emu, "POST", token=token, data="a=b", headers={"Content-Type": "text/plain"})
    assert bad_type.status_code == 415 and "errors" in bad_type.json()
    bad_json = api(emu, "POST", token=token, data="{oops", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and "errors" in bad_json.json()
    assert api(emu, "POST", token=token, json=[1, 2]).status_code == 400
    created = requests.post(other, json={"dsName": "x"}, headers=bearer(token), timeout=10)
    assert created.status_code == 201 and created.json()["value"] == "1"
    listed = requests.get(other + "/", headers=bearer(token), timeout=10)
    assert [item["dsName"] for item in listed.json()] == ["x"]
    assert listed.json()[0]["links"][0]["href"] == f"{emu.url}/forms/MY_FORM/instances/1"


def test_unknown_route_and_wrong_method_use_the_errors_shape(emu: RunningEmulator, token: str) -> None:
    response = requests.get(emu.url + "/nothing/here", headers=bearer(token), timeout=10)
    assert response.status_code == 404 and response.json() == errors("Not Found")
    response = requests.get(emu.url + "/oauth/token", timeout=10)
    assert response.status_code == 405 and response.json() == errors("Method Not Allowed")
    assert api(emu, "DELETE", token=token).status_code == 405


def test_overlay_mutations_are_seen_by_range_searches() -> None:
    with run_emulator(records=100, updated_order="id") as emu:
        token = get_token(emu)
        start = emu.settings.updated_start_ms
        window = {"search": f"dtLastUpdate=gte:{start},dtLastUpdate=lt:{start + 10 * 60_000}"}
        assert ids_of(api(emu, "GET", token=token, params=window)) == list(range(1, 11))
        current = api(emu, "GET", "/5", token=token).json()["dtLastUpdate"]
        api(emu, "PATCH", "/5", token=token, json={"dsNotes": "x", "dtLastUpdate": current})
        api(emu, "DELETE", "/7", token=token)
        assert ids_of(api(emu, "GET", token=token, params=window)) == [1, 2, 3, 4, 6, 8, 9, 10]
        recent = {"search": f"dtLastUpdate=gt:{start + 200 * 60_000}"}
        api(emu, "POST", token=token, json={"dsCompany": "New"})
        assert ids_of(api(emu, "GET", token=token, params=recent)) == [5, 101]


# -- search --------------------------------------------------------------------------------------------------


def _expected(everything: list[dict[str, Any]], predicate: Any) -> list[int]:
    return [int(item["idObjectValue"]) for item in everything if predicate(item)]


SEARCHES = [
    ("cdInstanceOwner=eq:JPerez", lambda i: i["cdInstanceOwner"] == "JPerez"),
    ("cdInstanceOwner=neq:JPerez", lambda i: i["cdInstanceOwner"] != "JPerez"),
    ("dsCompany=like:s.a.", lambda i: "s.a." in i["dsCompany"].lower()),
    ("dsEmail=sw:INFO1", lambda i: i["dsEmail"].startswith("info1")),
    ("dsEmail=nsw:info1", lambda i: not i["dsEmail"].startswith("info1")),
    ("dsEmail=ew:.org", lambda i: i["dsEmail"].endswith(".org")),
    ("dsEmail=new:.org", lambda i: not i["dsEmail"].endswith(".org")),
    ("qtEmployee=gt:25000", lambda i: i["qtEmployee"] > 25000),
    ("qtEmployee=gte:25000", lambda i: i["qtEmployee"] >= 25000),
    ("qtEmployee=lt:9000", lambda i: i["qtEmployee"] < 9000),
    ("qtEmployee=lte:9000", lambda i: i["qtEmployee"] <= 9000),
    ("cdCountry=in:AR;UY", lambda i: i["cdCountry"] in ("AR", "UY")),
    ("cdCountry=nin:AR;UY", lambda i: i["cdCountry"] not in ("AR", "UY")),
    ("cbIsPartner=eq:true", lambda i: i["cbIsPartner"] is True),
    ("dsNotes=eq:Key account", lambda i: i["dsNotes"] == "Key account"),
    ("dtOpening=gte:1262314800000", lambda i: int(i["dtOpening"]) >= 1262314800000),
    ("lsAddress/dsCity=eq:Rosario", lambda i: "Rosario" in [r["lsAddress/dsCity"] for r in i["lsAddress"]]),
    (
        "cdCountry=in:AR;BR,qtEmployee=gt:10000",
        lambda i: i["cdCountry"] in ("AR", "BR") and i["qtEmployee"] > 10000,
    ),
    # dtLastUpdate ranges are answered arithmetically; the result must equal a scan.
    ("dtLastUpdate=gte:1767229200000", lambda i: int(i["dtLastUpdate"]) >= 1767229200000),
    (
        "dtLastUpdate=gt:1767229200000,dtLastUpdate=lte:1767232800000",
        lambda i: 1767229200000 < int(i["dtLastUpdate"]) <= 1767232800000,
    ),
    ("dtLastUpdate=eq:1767225660000", lambda i: i["dtLastUpdate"] == "1767225660000"),
    ("dtLastUpdate=lt:1767225600000", lambda i: False),
]  # fmt: skip


@pytest.mark.parametrize(("search", "predicate"), SEARCHES, ids=[s for s, _ in SEARCHES])
def test_search_operators(
    emu: RunningEmulator, token: str, everything: list, search: str, predicate: Any
) -> None:
    response = api(emu, "GET", token=token, params={"search": search, **ALL})
    assert response.status_code == 200, response.text
    expected = _expected(everything, predicate)
    assert ids_of(response) == expected
    assert response.headers["X-Total-Count"] == str(len(expected))


@pytest.mark.parametrize(
    "search", ["qtEmployee=between:1", "nonsense", "qtEmployee=gt:many", "dsUnknown=eq:x"]
)
def test_bad_searches_get_400(emu: RunningEmulator, token: str, search: str) -> None:
    response = api(emu, "GET", token=token, params={"search": search})
    assert response.status_code == 400
    assert response.json()["errors"][0]["attribute-name"] == "search"


def test_iso_dates_and_in_separator_are_switches() -> None:
    with run_emulator(records=50, date_format="iso", in_separator="|", updated_order="id") as emu:
        token = get_token(emu)
        search = "dtLastUpdate=gte:2026-01-01T00:10:00Z,cdCountry=in:AR|UY|BR|CL|MX|ES|US|CO|PE|PY"
        assert ids_of(api(emu, "GET", token=token, params={"search": search})) == list(range(11, 51))
        epoch = api(emu, "GET", token=token, params={"search": "dtLastUpdate=gte:1767225600000"})
        assert epoch.status_code == 400
    assert datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000 == 1767225600000


# -- paging --------------------------------------------------------------------------------------------------


def test_page_paging_covers_everything_once_and_caps_the_size() -> None:
    with run_emulator(records=95, page_size_max=20, page_size_default=10) as emu:
        token = get_token(emu)
        first = api(emu, "GET", token=token)
        assert len(first.json()) == 10 and first.headers["X-Total-Count"] == "95"
        seen: list[int] = []
        for page in range(1, 10):
            response = api(emu, "GET", "/", token=token, params={"page": page, "pageSize": 500})
            seen += ids_of(response)
        assert seen == list(range(1, 96))
        assert api(emu, "GET", token=token, params={"page": 6, "pageSize": 20}).json() == []
        assert api(emu, "GET", token=token, params={"page": 0}).status_code == 400
        assert api(emu, "GET", token=token, params={"pageSize": "x"}).status_code == 400
        # A generic search pages through a cached id list.
        search = {"search": "qtEmployee=gt:20000", "pageSize": 7}
        total = int(api(emu, "GET", token=token, params=search).headers["X-Total-Count"])
        paged = [i for page in range(1, total // 7 + 2) for i in ids_of(
            api(emu, "GET", token=token, params={**search, "page": page}))]  # fmt: skip
        full = ids_of(api(emu, "GET", token=token, params={"search": search["search"], "pageSize": 20 * 5}))
        assert len(paged) == total and sorted(set(paged)) == paged
        assert full[:20] == paged[:20]


def test_offset_paging() -> None:
    with run_emulator(records=25, paging="offset", offset_param="start", limit_param="max") as emu:
        token = get_token(emu)
        seen = [i for offset in range(0, 25, 10) for i in ids_of(
            api(emu, "GET", token=token, params={"start": offset, "max": 10}))]  # fmt: skip
        assert seen == list(range(1, 26))
        response = api(emu, "GET", token=token, params={"start": 20, "max": 10})
        assert response.headers["X-Total-Count"] == "25" and len(response.json()) == 5


def test_link_paging_follows_next_links() -> None:
    with run_emulator(records=23, paging="link", api_prefix="/DeyelWeb/api") as emu:
        token = get_token(emu)
        url: str | None = instances_url(emu)
        params: dict[str, Any] | None = {"pageSize": 5, "search": "dtLastUpdate=gte:0"}
        seen: list[int] = []
        pages = 0
        while url:
            response = requests.get(url, params=params, headers=bearer(token), timeout=10)
            assert response.status_code == 200 and response.headers["X-Total-Count"] == "23"
            seen += ids_of(response)
            pages += 1
            url, params = response.links.get("next", {}).get("url"), None
            if url:
                assert url.startswith(emu.url + "/DeyelWeb/api/forms/CRM_ACCOUNT/instances")
        assert seen == list(range(1, 24)) and pages == 5
        bad = requests.get(instances_url(emu), params={"cursor": "%%%"}, headers=bearer(token), timeout=10)
        assert bad.status_code == 400


def test_no_paging_returns_everything() -> None:
    with run_emulator(records=1500, paging="none") as emu:
        response = api(emu, "GET", token=get_token(emu), params={"page": 2, "pageSize": 3})
        assert ids_of(response) == list(range(1, 1501))
        assert "X-Total-Count" not in response.headers


# -- switches ------------------------------------------------------------------------------------------------


def test_version_8_0_encodes_everything_as_strings() -> None:
    with run_emulator(records=40, version="8.0") as emu:
        token = get_token(emu)
        items = api(emu, "GET", token=token).json()
        for item in items:
            for key, value in item.items():
                if key not in ("lsAddress", "links"):
                    assert value is None or isinstance(value, str), (key, value)
        assert {item["cbIsPartner"] for item in items} == {"true", "false"}
        rows = [row for item in items for row in item["lsAddress"]]
        assert rows and all(set(row) == {"dsAddress", "dsCity"} for row in rows)
        assert (
            api(emu, "GET", token=token, params={"search": "qtEmployee=gt:0"}).headers["X-Total-Count"]
            == "40"
        )


def test_api_prefix_and_token_path() -> None:
    with run_emulator(records=3, api_prefix="/DeyelWeb/api", token_path="/DeyelWeb/oauth/token") as emu:
        token = get_token(emu)
        assert requests.post(emu.url + "/oauth/token", timeout=10).status_code == 404
        response = requests.get(
            emu.url + "/DeyelWeb/api/forms/CRM_ACCOUNT/instances/2", headers=bearer(token), timeout=10
        )
        assert response.status_code == 200
        assert response.json()["links"][0]["href"] == emu.url + "/DeyelWeb/api/forms/CRM_ACCOUNT/instances/2"
        assert (
            requests.get(
                emu.url + "/forms/CRM_ACCOUNT/instances", headers=bearer(token), timeout=10
            ).status_code
            == 404
        )


@pytest.mark.parametrize("status", [403, 429])
def test_rate_limit(status: int) -> None:
    with run_emulator(records=3, rate_limit=2, rate_window=30, rate_limit_status=status) as emu:
        token = get_token(emu)
        assert [api(emu, "GET", "/1", token=token).status_code for _ in range(2)] == [200, 200]
        limited = api(emu, "GET", "/1", token=token)
        assert limited.status_code == status
        assert limited.json()["errors"][0]["message"] == "REQUEST_LIMIT_EXCEEDED"
        assert limited.json()["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
        assert ("Retry-After" in limited.headers) == (status == 429)
        # Token requests are not rate limited.
        assert token_post(emu, {"grant_type": "client_credentials"}).status_code == 200


def test_latency_is_served_concurrently() -> None:
    with run_emulator(records=3, latency_ms=400) as emu:
        token = get_token(emu)
        statuses: list[int] = []

        def call() -> None:
            statuses.append(api(emu, "GET", "/1", token=token).status_code)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 4
        # Each request waits 400 ms inside the server: four clients overlap there if it serves them at once.
        assert emu.stats()["api_in_flight_peak"] == 4


# -- counters ------------------------------------------------------------------------------------------------


def test_stats_count_exactly() -> None:
    with run_emulator(records=3) as emu:
        token = get_token(emu)
        token_post(emu, {"grant_type": "client_credentials"}, ("x", "y"))
        api(emu, "GET", "/1", token=token)
        api(emu, "GET", "/1")
        api(emu, "GET", "/99", token=token)
        requests.get(emu.url + "/_emulator/tokens", timeout=10)
        stats = requests.get(emu.url + "/_emulator/stats", timeout=10).json()
        assert stats == {
            "token_requests": 2,
            "tokens_issued": 1,
            "token_failures": 1,
            "api_requests": 3,
            "api_unauthorized": 1,
            "faults_injected": 0,
            "rate_limited": 0,
            "api_in_flight_peak": 1,
            "api_in_flight": 0,
            "status_counts": {"200": 1, "401": 1, "404": 1},
            "active_tokens": 1,
        }
        assert emu.stats() == stats
        issued = requests.get(emu.url + "/_emulator/tokens", timeout=10).json()
        assert issued == {"tokens": [token], "refresh_tokens": []} == emu.issued_tokens()
        assert requests.post(emu.url + "/_emulator/reset", timeout=10).status_code == 200
        after = emu.stats()
        assert after["api_requests"] == after["token_requests"] == 0 and after["status_counts"] == {}
        assert api(emu, "GET", "/1", token=token).status_code == 200
        emu.reset()
        assert emu.stats()["api_requests"] == 0


# -- faults --------------------------------------------------------------------------------------------------


@pytest.fixture
def faulty() -> Iterator[tuple[RunningEmulator, str]]:
    with run_emulator(records=20) as emu:
        yield emu, get_token(emu)


def set_faults(emu: RunningEmulator, *rules: dict[str, Any]) -> None:
    response = requests.post(emu.url + "/_emulator/faults", json={"rules": list(rules)}, timeout=10)
    assert response.status_code == 200, response.text


def test_fault_status_after_count_and_retry_after(faulty: tuple[RunningEmulator, str]) -> None:
    emu, token = faulty
    set_faults(
        emu, {"route": "data", "action": "status", "status": 503, "retry_after": 2, "after": 1, "count": 1}
    )
    first, second, third = (api(emu, "GET", "/1", token=token) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (200, 503, 200)
    assert second.headers["Retry-After"] == "2"
    assert second.json() == errors("Service Unavailable")
    assert emu.stats()["faults_injected"] == 1
    assert emu.stats()["status_counts"] == {"200": 2, "503": 1}


def test_fault_403_defaults_to_request_limit_body(faulty: tuple[RunningEmulator, str]) -> None:
    emu, token = faulty
    emu.set_faults([{"action": "status", "status": 403, "method": "GET", "path_contains": "/instances/2"}])
    assert api(emu, "GET", "/1", token=token).status_code == 200
    response = api(emu, "GET", "/2", token=token)
    assert response.status_code == 403
    assert response.json()["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_fault_on_the_token_route(faulty: tuple[RunningEmulator, str]) -> None:
    emu, _ = faulty
    set_faults(emu, {"route": "token", "action": "status", "status": 500, "body": {"oops": True}, "count": 1})
    response = token_post(emu, {"grant_type": "client_credentials"})
    assert (response.status_code, response.json()) == (500, {"oops": True})
    assert token_post(emu, {"grant_type": "client_credentials"}).status_code == 200
    stats = emu.stats()
    assert (stats["token_requests"], stats["tokens_issued"], stats["faults_injected"]) == (3, 2, 1)


def test_fault_delay(faulty: tuple[RunningEmulator, str]) -> None:
    emu, token = faulty
    set_faults(emu, {"action": "delay", "delay_ms": 1500, "count": 1})
    # The delayed answer outlasts a client's 0.2 s read timeout; the next request is answered normally.
    url = instances_url(emu) + "/1"
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, headers=bearer(token), timeout=0.2)
    assert requests.get(url, headers=bearer(token), timeout=10).status_code == 200
    assert emu.stats()["faults_injected"] == 1


def test_fault_drop_breaks_the_connection(faulty: tuple[RunningEmulator, str]) -> None:
    emu, token = faulty
    set_faults(emu, {"route": "data", "action": "drop", "count": 1})
    with pytest.raises(requests.exceptions.RequestException) as caught:
        api(emu, "GET", token=token)
    assert isinstance(caught.value, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError))
    assert api(emu, "GET", token=token).status_code == 200
    assert emu.stats()["status_counts"] == {"200": 1}


def test_fault_truncate(faulty: tuple[RunningEmulator, str]) -> None:
    emu, token = faulty
    whole = api(emu, "GET", token=token).content
    set_faults(emu, {"action": "truncate"})
    response = api(emu, "GET", token=token)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert response.content == whole[: len(whole) // 2]
    with pytest.raises(ValueError):
        response.json()


@pytest.mark.parametrize("action", ["apply_status", "apply_drop"])
def test_fault_applies_the_write_then_loses_the_answer(
    faulty: tuple[RunningEmulator, str], action: str
) -> None:
    emu, token = faulty
    stamp = api(emu, "GET", "/4", token=token).json()["dtLastUpdate"]
    set_faults(emu, {"route": "data", "method": "PUT", "action": action, "count": 1})
    body = {"dsCompany": "Applied SA", "dtLastUpdate": stamp}
    if action == "apply_status":
        lost = api(emu, "PUT", "/4", token=token, json=body)
        assert (lost.status_code, lost.json()) == (504, errors("Gateway Timeout"))
    else:
        with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            api(emu, "PUT", "/4", token=token, json=body)
    # The answer was lost, the write was not: the instance holds the new values and a new stamp.
    after = api(emu, "GET", "/4", token=token).json()
    assert after["dsCompany"] == "Applied SA" and after["dtLastUpdate"] != stamp
    assert api(emu, "PUT", "/4", token=token, json=body).status_code == 409
    assert emu.stats()["faults_injected"] == 1


def test_fault_html_and_malformed(faulty: tuple[RunningEmulator, str]) -> None:
    emu, token = faulty
    set_faults(emu, {"action": "html", "status": 502, "count": 1}, {"action": "malformed"})
    html = api(emu, "GET", token=token)
    assert html.status_code == 502 and html.headers["Content-Type"].startswith("text/html")
    assert "<html>" in html.text
    malformed = api(emu, "GET", token=token)
    assert malformed.status_code == 200 and malformed.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        malformed.json()
    assert requests.delete(emu.url + "/_emulator/faults", timeout=10).status_code == 200
    assert api(emu, "GET", token=token).status_code == 200


@pytest.mark.parametrize("action", ["revoke", "expire"])
def test_fault_revoke_and_expire(faulty: tuple[RunningEmulator, str], action: str) -> None:
    emu, token = faulty
    emu.set_faults([{"action": action, "count": 1}])
    assert api(emu, "GET", "/1", token=token).json() == errors("Unauthorized")
    assert api(emu, "GET", "/1", token=token).status_code == 401
    assert api(emu, "GET", "/1", token=get_token(emu)).status_code == 200
    assert emu.stats()["api_unauthorized"] == 2


def test_probabilistic_faults_are_deterministic() -> None:
    def pattern() -> list[int]:
        with run_emulator(records=2) as emu:
            token = get_token(emu)
            emu.set_faults([{"action": "status", "status": 503, "probability": 0.5, "seed": 3}])
            return [api(emu, "GET", "/1", token=token).status_code for _ in range(20)]

    first = pattern()
    assert set(first) == {200, 503}
    assert pattern() == first


def test_invalid_fault_rules_are_refused(emu: RunningEmulator) -> None:
    for rules in ([{"action": "explode"}], [{"action": "status", "route": "x"}], "nope", [{"bogus": 1}]):
        response = requests.post(emu.url + "/_emulator/faults", json={"rules": rules}, timeout=10)
        assert response.status_code == 400, rules


# -- scale ---------------------------------------------------------------------------------------------------


def test_a_million_records_page_1000() -> None:
    before = rss_bytes()
    with run_emulator(records=1_000_000) as emu:
        token = get_token(emu)
        with requests.Session() as session:
            response = session.get(
                instances_url(emu), params={"page": 1000, "pageSize": 1000}, headers=bearer(token), timeout=30
            )
            assert response.status_code == 200
            assert response.headers["X-Total-Count"] == "1000000"
            assert ids_of(response) == list(range(999_001, 1_000_001))
            start = emu.settings.updated_start_ms
            ranged = session.get(
                instances_url(emu),
                params={
                    "search": f"dtLastUpdate=gte:{start + 500_000 * 60_000}",
                    "pageSize": 1000,
                    "page": 2,
                },
                headers=bearer(token),
                timeout=30,
            )
            # Shuffled update times: about half of the form, listed by id.
            assert abs(int(ranged.headers["X-Total-Count"]) - 500_000) < 5_000
            page = ids_of(ranged)
            assert len(page) == 1000 and page == sorted(page)
            narrow = session.get(
                instances_url(emu),
                params={"search": f"dtLastUpdate=gte:{start},dtLastUpdate=lt:{start + 60_000 * 1000}"},
                headers=bearer(token),
                timeout=30,
            )
            assert abs(int(narrow.headers["X-Total-Count"]) - 1000) < 150
        assert rss_bytes() - before < 150 * 1024 * 1024


# -- API surface and CLI -------------------------------------------------------------------------------------


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        EmulatorSettings(paging="cursor")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EmulatorSettings(api_prefix="DeyelWeb/")
    assert create_app(EmulatorSettings(records=1)).state.emulator.settings.records == 1


def test_cli_prints_the_url_then_stops_cleanly_on_sigterm() -> None:
    command = [sys.executable, "-m", "deyel_provider.emulator", "--port", "0", "--records", "10"]
    command += ["--paging", "offset", "--user", "Ana:secret", "--client-id", "ME", "--client-secret", "S"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert requests.get(url + "/_emulator/stats", timeout=10).json()["api_requests"] == 0
            settings = requests.get(url + "/_emulator/settings", timeout=10).json()
            assert (settings["paging"], settings["users"], settings["client_id"]) == (
                "offset",
                {"Ana": "secret"},
                "ME",
            )
            auth = "Basic " + base64.b64encode(b"ME:S").decode()
            response = requests.post(
                url + "/oauth/token",
                data={"grant_type": "password", "username": "Ana", "password": "secret"},
                headers={"Authorization": auth},
                timeout=10,
            )
            assert response.status_code == 200
        finally:
            process.terminate()
            stdout, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert stdout == ""


def test_pages_shortened_after_paging_and_a_count_of_the_page_under_a_cap() -> None:
    """Issue 20's switches: drop_after_paging removes the same instances from every page that holds them,
    after paging (a page is short while more follow; the header counts before the removal); with
    total_counts_page and a cap, the header says what the capped page holds."""
    from deyel_provider.emulator.paging import hidden_after_paging

    with run_emulator(records=100, drop_after_paging=0.3) as emu:
        token = get_token(emu)
        hidden = [i for i in range(1, 101) if hidden_after_paging(emu.settings, i)]
        assert 15 < len(hidden) < 45
        first = api(emu, "GET", token=token, params={"page": 1, "pageSize": 20})
        assert ids_of(first) == [i for i in range(1, 21) if i not in hidden]
        assert first.headers["X-Total-Count"] == "100"
        seen = [i for page in range(1, 6) for i in ids_of(
            api(emu, "GET", token=token, params={"page": page, "pageSize": 20}))]  # fmt: skip
        assert seen == [i for i in range(1, 101) if i not in hidden]
    with run_emulator(records=100, page_size_max=30, total_counts_page=True) as emu:
        capped = api(emu, "GET", token=get_token(emu), params={"pageSize": 100})
        assert (len(capped.json()), capped.headers["X-Total-Count"]) == (30, "30")
    from deyel_provider.emulator.__main__ import build_parser, settings_from_args

    parsed = settings_from_args(build_parser().parse_args(["--drop-after-paging", "0.25"]))
    assert parsed.drop_after_paging == 0.25
    with pytest.raises(ValueError, match="drop_after_paging"):
        EmulatorSettings(drop_after_paging=1.0)


def test_stopping_releases_a_request_held_by_a_delay_rule(caplog: pytest.LogCaptureFixture) -> None:
    """A request held by a delay fault kept the emulator's stop waiting for uvicorn's grace period, which
    then cancelled it with an "Exception in ASGI application" traceback in the log: released, it is
    answered 503."""
    answers: list[Any] = []
    with run_emulator(records=5) as emu:
        token = token_post(emu, {"grant_type": "client_credentials"}).json()["access_token"]
        set_faults(emu, {"route": "data", "action": "delay", "delay_ms": 600_000, "count": 1})

        def held() -> None:
            try:
                response = requests.get(instances_url(emu), headers=bearer(token), timeout=60)
                answers.append(response.status_code)
            except requests.RequestException as error:
                answers.append(error)

        client = threading.Thread(target=held)
        client.start()
        guard = time.monotonic() + 60  # only stops a hang: nothing here depends on the time
        while emu.stats()["faults_injected"] != 1:
            assert time.monotonic() < guard, "the request was never held"
            time.sleep(0.01)
        with caplog.at_level(logging.INFO, logger="uvicorn.error"):
            emu.stop()
        client.join(60)
    assert answers == [503]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
