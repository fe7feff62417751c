"""Redirects never change what a call does: only GET and HEAD follow them, only on the connection's host.

requests turns a POST answered 301, 302 or 303 into a GET: a create "succeeded" with the list it was
redirected to and created nothing. Each test here failed on the code that followed every redirect.
"""

from __future__ import annotations

import pytest

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
    redirect(emulator, status, emulator.url + INSTANCES + "/2", method="GET")
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
