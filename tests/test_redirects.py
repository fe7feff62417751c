"""Redirects never change what a call does: only GET and HEAD follow them, only on the connection's host.

requests turns a POST answered 301, 302 or 303 into a GET: a create "succeeded" with the list it was
redirected to and created nothing. Each test here failed on the code that followed every redirect.
"""

from __future__ import annotations

import pytest

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelRequestError
from deyel_provider.hooks.deyel import DeyelHook

FORM = "CRM_ACCOUNT"
INSTANCES = f"/forms/{FORM}/instances"


def redirect(emulator, status: int, location: str, *, method: str | None = None) -> None:
    rule = {"route": "data", "action": "status", "status": status, "headers": {"Location": location}}
    if method:
        rule["method"] = method
    emulator.set_faults([rule])


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_write_answered_with_a_redirect_is_an_error_and_nothing_else_is_sent(
    emulator, deyel_conn, method, status
):
    hook = DeyelHook()
    hook.get_token()
    before = emulator.stats()["api_requests"]
    total = hook.request("GET", INSTANCES, params={"pageSize": 1}).headers.get("X-Total-Count")
    redirect(emulator, status, emulator.url + INSTANCES, method=method)
    endpoint = INSTANCES if method == "POST" else f"{INSTANCES}/1"
    with pytest.raises(DeyelRequestError) as caught:
        hook.request(method, endpoint, json={"dsCompany": "Redirected SA"}, retry_unsafe=True)
    message = str(caught.value)
    assert f"redirected to {emulator.url}{INSTANCES} and not followed" in message
    assert caught.value.status == status and caught.value.method == method
    emulator.set_faults([])
    # Exactly the probe, the write and the count below reached the server: no rewritten GET followed.
    assert hook.request("GET", INSTANCES, params={"pageSize": 1}).headers.get("X-Total-Count") == total
    assert emulator.stats()["api_requests"] == before + 3


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_get_follows_a_redirect_on_its_own_host_and_stays_a_get(emulator, deyel_conn, status):
    hook = DeyelHook()
    emulator.set_faults(
        [
            {
                "route": "data",
                "action": "status",
                "status": status,
                "path_contains": "/instances/1",
                "headers": {"Location": INSTANCES + "/2"},  # relative, as servers send
            }
        ]
    )
    assert hook.request("GET", f"{INSTANCES}/1").json()["idObjectValue"] == "2"


def test_head_follows_a_redirect_on_its_own_host(emulator, deyel_conn):
    hook = DeyelHook()
    emulator.set_faults(
        [
            {
                "route": "data",
                "action": "status",
                "status": 302,
                "path_contains": "/instances/1",
                "headers": {"Location": emulator.url + INSTANCES + "/2"},
            }
        ]
    )
    # The emulator, like many API servers, has no HEAD route: its 405 shows the HEAD reached /2 as a HEAD.
    with pytest.raises(DeyelRequestError) as caught:
        hook.request("HEAD", f"{INSTANCES}/1")
    assert (caught.value.status, caught.value.method, caught.value.path) == (405, "HEAD", f"{INSTANCES}/2")


def test_a_get_redirected_to_another_scheme_of_its_host_is_not_followed(emulator, deyel_conn):
    """https to http on the same host is a downgrade: a different origin."""
    redirect(emulator, 301, emulator.url.replace("http://", "https://") + INSTANCES)
    with pytest.raises(DeyelRequestError, match=r"redirected to https://127\.0\.0\.1"):
        DeyelHook().request("GET", INSTANCES)


def test_the_session_handed_to_users_never_rewrites_a_post(emulator, deyel_conn):
    """``get_conn()`` is the same session: a POST sees the redirect itself instead of a GET's answer."""
    session = DeyelHook().get_conn()
    redirect(emulator, 302, emulator.url + INSTANCES, method="POST")
    response = session.post(emulator.url + INSTANCES, json={"dsCompany": "x"})
    assert response.status_code == 302
    assert response.history == []


@pytest.mark.parametrize("status", [300, 302, 303, 304, 399])
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
def test_a_3xx_without_a_location_is_an_error_not_a_success(emulator, deyel_conn, method, status):
    """A 3xx with no Location is no redirect to follow, and no answer that the call was done either."""
    emulator.set_faults([{"route": "data", "action": "status", "status": status, "raw_body": b"{}"}])
    with pytest.raises(DeyelRequestError) as caught:
        DeyelHook().request(method, f"{INSTANCES}/1", json={"dsCompany": "x"}, retry_unsafe=True)
    assert caught.value.status == status


@pytest.mark.parametrize("template", ["https://elsewhere.example/{0}/x?{0}", "https://{0}.example/{0}/x"])
def test_the_location_named_in_the_error_never_shows_the_secret(deyel_conn, template):
    """The parser percent-encodes and lower-cases: the Location is redacted before it is parsed."""
    secret = "Pässwörd-Secret-12345"  # a resource owner's password: redacted like the client secret
    with run_emulator(records=5, users={"JPerez": secret}) as emulator:
        deyel_conn(
            url=emulator.url, extra={"grant_type": "password", "username": "JPerez", "password": secret}
        )
        _redirected_with_the_secret(emulator, secret, template.format(secret))


def _redirected_with_the_secret(emulator, secret: str, location: str) -> None:
    hook = DeyelHook()
    hook.get_token()
    location = location.encode().decode("latin-1")  # sent as UTF-8 bytes, as servers do
    emulator.set_faults(
        [{"route": "data", "action": "status", "status": 302, "headers": {"Location": location}}]
    )
    with pytest.raises(DeyelRequestError) as caught:
        hook.request("GET", INSTANCES)
    message = str(caught.value).lower()
    for shown in (secret, secret.lower(), "p%c3%a4ssw", "ssw%c3%b6rd", "secret-12345"):
        assert shown.lower() not in message, message
