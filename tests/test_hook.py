"""DeyelHook's authenticated calls, 401 renewal and typed errors, over real HTTP against the emulator."""

from __future__ import annotations

import io
import json

import pytest
import requests

from deyel_provider.exceptions import (
    DeyelAuthError,
    DeyelBadResponseError,
    DeyelConfigError,
    DeyelConflictError,
    DeyelError,
    DeyelNotFoundError,
    DeyelRequestError,
    DeyelServerError,
)
from deyel_provider.hooks.deyel import DeyelHook

INSTANCES = "/forms/CRM_ACCOUNT/instances"


def test_request_returns_the_response(emulator, deyel_conn):
    response = DeyelHook().request("GET", INSTANCES, params={"page": 1, "pageSize": 10})
    assert response.status_code == 200
    assert len(response.json()) == 10
    assert response.headers["X-Total-Count"] == "50"


def test_endpoint_is_relative_to_the_api_prefix(deyel_conn):
    from deyel_provider.emulator import run_emulator

    with run_emulator(records=3, api_prefix="/DeyelWeb/api") as prefixed:
        deyel_conn(url=prefixed.url, extra={"api_prefix": "/DeyelWeb/api/"})
        ids = [i["idObjectValue"] for i in DeyelHook().request("GET", INSTANCES).json()]
    assert ids == ["1", "2", "3"]


def test_get_conn_is_one_pooled_authenticated_session(emulator, deyel_conn):
    hook = DeyelHook()
    session = hook.get_conn()
    assert session is hook.get_conn()
    response = session.get(emulator.url + INSTANCES)
    assert response.status_code == 200
    assert response.request.headers["Authorization"] == f"Bearer {hook.get_token()}"


def test_revoked_token_is_renewed_once_and_the_call_replayed(emulator, deyel_conn):
    hook = DeyelHook()
    first = hook.get_token()
    emulator.revoke()

    response = hook.request("GET", INSTANCES + "/7")

    assert response.json()["idObjectValue"] == "7"
    assert hook.get_token() != first
    stats = emulator.stats()
    assert stats["token_requests"] == 2
    assert stats["api_unauthorized"] == 1


def test_revoked_token_replays_a_post_with_its_body(emulator, deyel_conn):
    hook = DeyelHook()
    hook.get_token()
    emulator.revoke()
    created = hook.request("POST", INSTANCES, json={"dsCompany": "Replayed SA"}).json()
    instance = hook.request("GET", f"{INSTANCES}/{created['idObjectValue']}").json()
    assert instance["dsCompany"] == "Replayed SA"


def test_a_second_401_raises(emulator, deyel_conn):
    emulator.set_faults([{"route": "data", "action": "status", "status": 401}])
    with pytest.raises(DeyelAuthError) as caught:
        DeyelHook().request("GET", INSTANCES)
    assert caught.value.status == 401
    assert emulator.stats()["token_requests"] == 2


def test_errors_are_typed_and_carry_the_deyel_errors(emulator, deyel_conn):
    hook = DeyelHook()
    with pytest.raises(DeyelNotFoundError) as missing:
        hook.request("GET", INSTANCES + "/999999", params={"search": "x"})
    error = missing.value
    assert (error.status, error.method, error.path) == (404, "GET", INSTANCES + "/999999")
    assert error.errors and "message" in error.errors[0]
    assert "search" not in str(error)  # no query string in messages

    with pytest.raises(DeyelRequestError) as bad:
        hook.request("GET", INSTANCES, params={"search": "dsCompany=nope:x"})
    assert bad.value.status == 400


def test_stale_dtlastupdate_is_a_conflict(emulator, deyel_conn):
    hook = DeyelHook()
    instance = hook.request("GET", INSTANCES + "/3").json()
    update = {"dsCompany": "Updated", "dtLastUpdate": instance["dtLastUpdate"]}
    assert hook.request("PATCH", INSTANCES + "/3", json=update).status_code == 202
    with pytest.raises(DeyelConflictError) as stale:
        hook.request("PATCH", INSTANCES + "/3", json=update)
    assert stale.value.status == 409
    assert isinstance(stale.value, DeyelError)


def test_absolute_url_to_another_host_is_refused(emulator, deyel_conn):
    with pytest.raises(DeyelConfigError, match="not the connection's host"):
        DeyelHook().request("GET", "http://127.0.0.2:1/forms/CRM_ACCOUNT/instances")
    assert emulator.stats()["token_requests"] == 0


def test_session_never_sends_the_token_to_another_host(emulator, deyel_conn):
    session = DeyelHook().get_conn()
    with pytest.raises(requests.RequestException) as caught:
        session.get("http://127.0.0.2:9/elsewhere", timeout=2)
    sent = caught.value.request
    assert sent is not None
    assert "Authorization" not in sent.headers


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"host": "tenant.deyel.com"}, "write it with its scheme"),
        ({"host": ""}, "has no Host"),
        ({"login": ""}, "Client ID"),
        ({"password": ""}, "Client Secret"),
        ({"extra": {"timeout": "soon"}}, "'timeout' must be a number"),
        ({"extra": {"verify": "maybe"}}, "'verify' must be true or false"),
    ],
)
def test_bad_connection_fields_say_what_to_fix(deyel_conn, fields, words):
    deyel_conn(**fields)
    with pytest.raises(DeyelConfigError, match=words):
        DeyelHook().get_token()


def test_connection_test_succeeds(emulator, deyel_conn):
    ok, message = DeyelHook().test_connection()
    assert ok, message
    assert message.startswith(f"Connected to {emulator.url}")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"password": "wrong-secret"}, "refused the credentials: Invalid_request; Invalid client_id"),
        ({"url": "http://127.0.0.1:9"}, "could not connect"),
        ({"url": "https://127.0.0.1:9"}, "could not connect"),
        ({"extra": {"oauth_path": "/nowhere"}}, "not found"),
    ],
)
def test_connection_test_says_what_went_wrong(emulator, deyel_conn, fields, words):
    deyel_conn(**fields)
    ok, message = DeyelHook().test_connection()
    assert not ok
    assert words in message
    assert "wrong-secret" not in message


def test_stream_true_leaves_a_successful_body_to_the_caller(emulator, deyel_conn):
    # A cap smaller than the page: read by the hook it is refused; streamed, the caller reads it all.
    deyel_conn(extra={"max_response_bytes": 1024})
    hook = DeyelHook()
    with pytest.raises(DeyelBadResponseError, match="max_response_bytes"):
        hook.request("GET", INSTANCES, params={"pageSize": 50})
    response = hook.request("GET", INSTANCES, params={"pageSize": 50}, stream=True)
    body = b"".join(response.iter_content(4096))
    assert len(body) > 1024 and len(json.loads(body)) == 50
    # An error is still typed, its body read (under the cap) for the message.
    with pytest.raises(DeyelNotFoundError, match="not found"):
        hook.request("GET", INSTANCES + "/999999", stream=True)
    assert emulator.stats()["api_requests"] == 3


@pytest.mark.parametrize(
    "body",
    [lambda: io.BytesIO(b'{"dsCompany": "x"}'), lambda: iter([b'{"dsCompany": ', b'"x"}'])],
    ids=["file", "generator"],
)
def test_a_stream_or_file_body_is_not_replayed(emulator, deyel_conn, body):
    emulator.set_faults([{"route": "data", "method": "PUT", "action": "status", "status": 503, "count": 1}])
    headers = {"Content-Type": "application/json"}
    with pytest.raises(DeyelServerError):
        DeyelHook().request("PUT", INSTANCES + "/3", data=body(), headers=headers)
    assert emulator.stats()["api_requests"] == 1  # the body was consumed by the first attempt
    emulator.set_faults([{"route": "data", "method": "PUT", "action": "status", "status": 503, "count": 1}])
    with pytest.raises(DeyelRequestError, match="dtLastUpdate is required"):  # bytes: replayed, then read
        DeyelHook().request("PUT", INSTANCES + "/3", data=b'{"dsCompany": "x"}', headers=headers)
    assert emulator.stats()["api_requests"] == 3
