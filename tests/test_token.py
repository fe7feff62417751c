"""The token POST, token reuse and renewal, over real HTTP against the emulator."""

from __future__ import annotations

import base64
import threading
import time

import jwt
import pytest
import requests
import time_machine

from deyel_provider.auth.provider import JITTER_SPREAD, process_jitter
from deyel_provider.exceptions import (
    DeyelAuthError,
    DeyelBadResponseError,
    DeyelConnectionError,
    DeyelServerError,
)
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.helpers import CLIENT_ID, CLIENT_SECRET
from tests.support.warm import run_python


def token_requests(emulator) -> int:
    return emulator.stats()["token_requests"]


def test_get_token_uses_the_documented_post(emulator, deyel_conn):
    token = DeyelHook().get_token()

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "Deyel"
    assert claims["sub"] == CLIENT_ID
    assert claims["exp"] - claims["iat"] == 86400
    assert token_requests(emulator) == 1


def test_token_request_is_basic_auth_and_form_encoded(emulator, deyel_conn):
    """The emulator accepts the documented request; the same request with the secret wrong is refused."""
    DeyelHook().get_token()
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    raw = requests.post(
        emulator.url + "/oauth/token",
        data="grant_type=client_credentials",
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert raw.status_code == 200
    assert set(raw.json()) == {"access_token", "token_type", "expires_in"}


def test_token_is_reused_across_calls_and_hooks(emulator, deyel_conn):
    hook = DeyelHook()
    tokens = {hook.get_token() for _ in range(5)}
    for _ in range(5):
        hook.request("GET", "/forms/CRM_ACCOUNT/instances", params={"pageSize": 1})
    tokens.add(DeyelHook().get_token())

    assert len(tokens) == 1
    assert token_requests(emulator) == 1
    assert emulator.stats()["api_requests"] == 5


def test_ten_threads_cold_start_cause_one_token_request(emulator, deyel_conn):
    hook = DeyelHook()
    barrier = threading.Barrier(10)
    results: list[str] = []

    def work() -> None:
        barrier.wait()
        results.append(hook.get_token())

    threads = [threading.Thread(target=work) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 10
    assert len(set(results)) == 1
    assert token_requests(emulator) == 1


@pytest.fixture
def clock():
    """The wall clock of the process, frozen and moved by the test (the emulator's thread reads it too).

    Only ``time.time`` and friends move: asyncio, locks and socket timeouts run on the monotonic clock.
    """
    with time_machine.travel(time.time(), tick=False) as traveller:
        yield traveller


def test_token_is_renewed_shortly_before_expiry(deyel_conn, clock):
    from deyel_provider.emulator import run_emulator

    with run_emulator(records=5, token_ttl=600) as short_lived:
        deyel_conn(url=short_lived.url)
        hook = DeyelHook()
        first = hook.get_token()
        # The margin (300 s by default, plus jitter) is capped at half the 600 s lifetime: renewal at 300 s.
        clock.shift(299)
        assert hook.get_token() == first
        clock.shift(2)
        second = hook.get_token()
        hook.request("GET", "/forms/CRM_ACCOUNT/instances")

        assert second != first
        assert short_lived.stats()["token_requests"] == 2
        assert short_lived.stats()["api_unauthorized"] == 0


def test_renewal_is_jittered_per_process_and_fixed_within_one(emulator, deyel_conn, clock):
    """Each process renews ``refresh_margin * (1 + 0.5 u)`` before expiry, u drawn once per process."""
    deyel_conn(extra={"refresh_margin": 1000, "cache": "memory"})
    hook = DeyelHook()
    first = hook.token_provider.token()
    assert first.lifetime == 86400  # long enough that the margin is not capped at half of it
    margin = 1000 * (1 + JITTER_SPREAD * process_jitter())
    clock.move_to(first.expires_at - margin - 1)
    assert hook.get_token() == first.access_token and DeyelHook().get_token() == first.access_token
    clock.shift(2)
    assert hook.get_token() != first.access_token
    assert emulator.stats()["token_requests"] == 2

    code = "from deyel_provider.auth.provider import process_jitter; print(process_jitter())"
    draws = {float(run_python(code, check=True).stdout) for _ in range(3)}
    assert len(draws) == 3 and all(0 <= u < 1 for u in draws)  # other processes, other renewal points


def test_the_current_token_is_served_while_its_renewal_fails(deyel_conn, clock, caplog):
    from deyel_provider.emulator import run_emulator

    with run_emulator(records=5, token_ttl=600) as emulator:
        deyel_conn(url=emulator.url, extra={"retry_attempts": 2})
        hook = DeyelHook()
        first = hook.get_token()
        emulator.set_faults([{"route": "token", "action": "status", "status": 503}])
        clock.shift(301)  # past the renewal point, 299 s before expiry
        assert hook.get_token() == first
        assert hook.request("GET", "/forms/CRM_ACCOUNT/instances/1").ok
        assert emulator.stats()["token_requests"] == 3  # the first POST, then one renewal of 2 attempts
        assert "Could not renew the Deyel token (DeyelServerError)" in caplog.text
        clock.shift(9)  # renewal is tried again 10 s after a failure, not on every call
        assert hook.get_token() == first
        assert emulator.stats()["token_requests"] == 3
        clock.shift(2)
        assert hook.get_token() == first
        assert emulator.stats()["token_requests"] == 5
        clock.shift(300)  # expired: nothing valid to serve, the failure is raised
        with pytest.raises(DeyelServerError):
            hook.get_token()
        emulator.clear_faults()
        assert hook.get_token() != first


def test_expiry_falls_back_to_the_jwt_exp_claim(emulator, deyel_conn):
    exp = int(time.time()) + 1000
    unsigned = jwt.encode({"sub": CLIENT_ID, "exp": exp}, "k" * 32, algorithm="HS256")
    emulator.set_faults(
        [
            {
                "route": "token",
                "action": "status",
                "status": 200,
                "body": {"access_token": unsigned, "token_type": "Bearer"},
            }
        ]
    )
    token = DeyelHook().token_provider.token()
    assert token.expires_at == pytest.approx(exp, abs=1)


def test_wrong_secret_is_refused_with_the_servers_message(emulator, deyel_conn):
    deyel_conn(password="not-the-secret")
    with pytest.raises(DeyelAuthError) as caught:
        DeyelHook().get_token()
    message = str(caught.value)
    assert "Invalid_request" in message
    assert "Invalid client_id" in message
    assert "HTTP 401" in message
    assert "deyel_default" in message
    assert "not-the-secret" not in message
    assert caught.value.status == 401


def test_errors_shape_from_the_token_endpoint(emulator, deyel_conn):
    body = {
        "errors": [
            {"message": "Unauthorized", "attribute-name": ""},
            {"message": "Invalid refresh token.", "attribute-name": "refresh_token"},
        ]
    }
    emulator.set_faults([{"route": "token", "action": "status", "status": 401, "body": body}])
    with pytest.raises(DeyelAuthError) as caught:
        DeyelHook().get_token()
    assert "Unauthorized; Invalid refresh token. [refresh_token]" in str(caught.value)
    assert caught.value.errors == body["errors"]


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ({"action": "html", "status": 502}, DeyelServerError, "HTTP 502"),
        ({"action": "html", "status": 200}, DeyelBadResponseError, "not JSON"),
        ({"action": "malformed"}, DeyelBadResponseError, "not JSON"),
        ({"action": "truncate"}, DeyelBadResponseError, "not JSON"),
        ({"action": "status", "status": 503, "body": ""}, DeyelServerError, "HTTP 503"),
        (
            {"action": "status", "status": 200, "body": {"token_type": "Bearer"}},
            DeyelBadResponseError,
            "access_token",
        ),
    ],
)
def test_unreadable_token_responses_give_clear_errors(emulator, deyel_conn, fault, error, words):
    emulator.set_faults([{"route": "token", **fault}])
    with pytest.raises(error) as caught:
        DeyelHook().get_token()
    assert words in str(caught.value)


def test_unreachable_server_is_a_connection_error(deyel_conn):
    deyel_conn(url="http://127.0.0.1:9")  # discard port: nothing listens there
    with pytest.raises(DeyelConnectionError, match="could not connect; check the Host"):
        DeyelHook().get_token()


def test_slow_token_endpoint_times_out(emulator, deyel_conn):
    deyel_conn(extra={"timeout": 0.3})
    emulator.set_faults([{"route": "token", "action": "delay", "delay_ms": 1500}])
    with pytest.raises(DeyelConnectionError, match=r"no answer within 0.3 s"):
        DeyelHook().get_token()
