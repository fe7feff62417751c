"""The retry policy over real HTTP: what is retried, what fails fast, Retry-After, and no duplicated POST."""

from __future__ import annotations

import email.utils
import os
import subprocess
import sys
import time

import pytest

from deyel_provider.exceptions import (
    DeyelAuthError,
    DeyelConflictError,
    DeyelConnectionError,
    DeyelError,
    DeyelForbiddenError,
    DeyelNotFoundError,
    DeyelRateLimitError,
    DeyelRequestError,
    DeyelServerError,
)
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.retry import RetryPolicy
from tests.support.helpers import FAST_RETRY

INSTANCES = "/forms/CRM_ACCOUNT/instances"
REQUEST_LIMIT = {"errors": [{"message": "REQUEST_LIMIT_EXCEEDED", "attribute-name": ""}]}


def retry_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "deyel_provider.http.retry"]


def count_instances(hook: DeyelHook) -> int:
    return int(hook.request("GET", INSTANCES, params={"pageSize": 1}).headers["X-Total-Count"])


@pytest.mark.parametrize(
    "fault",
    [
        {"action": "status", "status": 503},
        {"action": "status", "status": 502},
        {"action": "status", "status": 504},
        {"action": "status", "status": 500},
        {"action": "status", "status": 429, "retry_after": 1},
        {"action": "status", "status": 403, "body": REQUEST_LIMIT},
        {"action": "html", "status": 503},
        {"action": "drop"},
    ],
    ids=["503", "502", "504", "500", "429", "403-limit", "html-503", "dropped"],
)
def test_transient_failures_of_a_get_are_retried(emulator, deyel_conn, caplog, fault):
    emulator.set_faults([{"route": "data", "count": 2, **fault}])
    response = DeyelHook().request("GET", INSTANCES + "/4")
    assert response.json()["idObjectValue"] == "4"
    assert emulator.stats()["api_requests"] == 3
    lines = retry_lines(caplog)
    assert len(lines) == 2
    assert "Deyel GET /forms/CRM_ACCOUNT/instances/4 failed" in lines[0]
    assert "retry 1 of 4" in lines[0]
    assert "retry 2 of 4" in lines[1]
    assert ("DeyelConnectionError" if fault["action"] == "drop" else f"HTTP {fault['status']}") in lines[0]


def test_a_timeout_is_retried(emulator, deyel_conn):
    deyel_conn(extra={"timeout": 0.3})
    emulator.set_faults([{"route": "data", "action": "delay", "delay_ms": 1500, "count": 1}])
    assert DeyelHook().request("GET", INSTANCES + "/2").json()["idObjectValue"] == "2"
    assert emulator.stats()["api_requests"] == 2


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, None, DeyelRequestError),
        (403, {"errors": [{"message": "Forbidden", "attribute-name": ""}]}, DeyelForbiddenError),
        (404, None, DeyelNotFoundError),
        (405, None, DeyelRequestError),
        (409, None, DeyelConflictError),
        (415, None, DeyelRequestError),
        (501, None, DeyelServerError),
    ],
)
def test_permanent_failures_fail_fast(emulator, deyel_conn, caplog, status, body, error):
    emulator.set_faults([{"route": "data", "action": "status", "status": status, "body": body}])
    with pytest.raises(error) as caught:
        DeyelHook().request("GET", INSTANCES)
    assert caught.value.status == status
    assert (caught.value.method, caught.value.path) == ("GET", INSTANCES)
    assert emulator.stats()["api_requests"] == 1
    assert retry_lines(caplog) == []


def test_attempts_run_out_with_the_last_typed_error(emulator, deyel_conn, caplog):
    deyel_conn(extra={**FAST_RETRY, "retry_attempts": 3})
    emulator.set_faults([{"route": "data", "action": "status", "status": 503, "retry_after": 0}])
    with pytest.raises(DeyelServerError) as caught:
        DeyelHook().request("GET", INSTANCES, params={"search": "dsCompany=eq:secretive"})
    assert caught.value.status == 503
    assert caught.value.retries_exhausted
    assert "secretive" not in str(caught.value)
    assert emulator.stats()["api_requests"] == 3
    assert [line.endswith("in 0.00 s") for line in retry_lines(caplog)] == [True, True]


def test_a_post_is_not_replayed_once_it_may_have_reached_the_server(emulator, deyel_conn):
    hook = DeyelHook()
    before = count_instances(hook)
    for fault in (
        {"action": "status", "status": 503},
        {"action": "status", "status": 500},
        {"action": "drop"},
    ):
        emulator.set_faults([{"route": "data", "method": "POST", "count": 1, **fault}])
        sent = emulator.stats()["api_requests"]
        with pytest.raises((DeyelServerError, DeyelConnectionError)) as caught:
            hook.request("POST", INSTANCES, json={"dsCompany": "Once SA"})
        assert caught.value.method == "POST"
        assert emulator.stats()["api_requests"] == sent + 1
    emulator.clear_faults()
    assert count_instances(hook) == before


def test_a_post_refused_by_the_rate_limit_is_replayed_and_creates_one_record(emulator, deyel_conn):
    hook = DeyelHook()
    before = count_instances(hook)
    emulator.set_faults(
        [{"route": "data", "method": "POST", "action": "status", "status": 429, "retry_after": 1, "count": 2}]
    )
    created = hook.request("POST", INSTANCES, json={"dsCompany": "Exactly Once SA"})
    assert created.status_code == 201
    emulator.clear_faults()
    assert count_instances(hook) == before + 1


def test_a_post_is_replayed_when_the_caller_opts_in(emulator, deyel_conn):
    hook = DeyelHook()
    before = count_instances(hook)
    emulator.set_faults([{"route": "data", "method": "POST", "action": "status", "status": 503, "count": 1}])
    assert hook.request("POST", INSTANCES, json={"dsCompany": "Opt-in SA"}, retry_unsafe=True).ok
    emulator.clear_faults()
    assert count_instances(hook) == before + 1


def test_500_is_retried_for_put_but_not_for_patch(emulator, deyel_conn):
    hook = DeyelHook()
    stamp = hook.request("GET", INSTANCES + "/3").json()["dtLastUpdate"]
    emulator.set_faults([{"route": "data", "action": "status", "status": 500, "count": 1}])
    put = hook.request("PUT", INSTANCES + "/3", json={"dsCompany": "Put Twice SA", "dtLastUpdate": stamp})
    assert put.status_code == 202
    assert emulator.stats()["api_requests"] == 3  # GET, PUT 500, PUT replayed
    assert hook.request("GET", INSTANCES + "/3").json()["dsCompany"] == "Put Twice SA"

    emulator.set_faults([{"route": "data", "action": "status", "status": 500, "count": 1}])
    with pytest.raises(DeyelServerError):
        hook.request("PATCH", INSTANCES + "/3", json={"dsCompany": "x"})
    assert emulator.stats()["api_requests"] == 5  # the PATCH was sent once


@pytest.mark.parametrize(
    "fault",
    [{"action": "status", "status": 503}, {"action": "status", "status": 504}, {"action": "drop"}],
    ids=["503", "504", "dropped"],
)
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_put_and_delete_are_retried_after_a_transient_failure(emulator, deyel_conn, method, fault):
    hook = DeyelHook()
    stamp = hook.request("GET", INSTANCES + "/2").json()["dtLastUpdate"]
    emulator.set_faults([{"route": "data", "method": method, "count": 1, **fault}])
    body = {"dsCompany": "Retried SA", "dtLastUpdate": stamp} if method == "PUT" else None
    assert hook.request(method, INSTANCES + "/2", json=body).status_code == (202 if method == "PUT" else 204)
    assert emulator.stats()["api_requests"] == 3


def test_retry_after_is_honoured_up_to_its_cap(emulator, deyel_conn, caplog):
    deyel_conn(extra={**FAST_RETRY, "retry_after_max": 0.25})
    in_an_hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
    emulator.set_faults(
        [
            {"route": "data", "action": "status", "status": 429, "retry_after": 0, "count": 1},
            {"route": "data", "action": "status", "status": 503, "retry_after": 7, "count": 1},
            {"route": "data", "action": "status", "status": 429, "retry_after": in_an_hour, "count": 1},
        ]
    )
    assert DeyelHook().request("GET", INSTANCES + "/1").ok
    waits = [line.rsplit(" in ", 1)[1] for line in retry_lines(caplog)]
    assert waits == ["0.00 s", "0.25 s", "0.25 s"]


def test_a_401_renewed_by_the_auth_is_not_run_again_by_the_retry_layer(emulator, deyel_conn, caplog):
    emulator.set_faults([{"route": "data", "action": "status", "status": 401}])
    with pytest.raises(DeyelAuthError):
        DeyelHook().request("GET", INSTANCES)
    stats = emulator.stats()
    assert (stats["token_requests"], stats["api_requests"]) == (2, 2)
    assert retry_lines(caplog) == []


def test_a_revoked_token_and_a_503_in_one_call(emulator, deyel_conn):
    hook = DeyelHook()
    hook.get_token()
    emulator.revoke()
    emulator.set_faults([{"route": "data", "action": "status", "status": 503, "count": 1}])
    assert hook.request("GET", INSTANCES + "/9").json()["idObjectValue"] == "9"
    stats = emulator.stats()
    assert (stats["token_requests"], stats["api_requests"]) == (2, 3)


# -- the token endpoint ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"action": "status", "status": 503},
        {"action": "status", "status": 500},
        {"action": "status", "status": 429, "retry_after": 2},
        {"action": "status", "status": 403, "body": REQUEST_LIMIT},
        {"action": "html", "status": 502},
        {"action": "drop"},
    ],
    ids=["503", "500", "429", "403-limit", "html-502", "dropped"],
)
def test_token_endpoint_transient_failures_are_retried(emulator, deyel_conn, fault):
    emulator.set_faults([{"route": "token", "count": 2, **fault}])
    assert DeyelHook().get_token()
    assert emulator.stats()["token_requests"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"error": "invalid_client", "error_description": "Bad client credentials"},
        {"errors": [{"message": "Unauthorized", "attribute-name": ""}]},
    ],
)
@pytest.mark.parametrize("status", [400, 401, 403])
def test_refused_credentials_are_never_retried(emulator, deyel_conn, status, body):
    emulator.set_faults([{"route": "token", "action": "status", "status": status, "body": body}])
    with pytest.raises(DeyelAuthError) as caught:
        DeyelHook().get_token()
    assert "deyel_default" in str(caught.value)
    assert emulator.stats()["token_requests"] == 1


def test_a_failing_token_endpoint_does_not_multiply_the_data_calls_attempts(emulator, deyel_conn):
    deyel_conn(extra={**FAST_RETRY, "retry_attempts": 3})
    emulator.set_faults([{"route": "token", "action": "status", "status": 503}])
    with pytest.raises(DeyelServerError):
        DeyelHook().request("GET", INSTANCES)
    stats = emulator.stats()
    assert (stats["token_requests"], stats["api_requests"]) == (3, 0)


def test_refused_credentials_are_remembered_and_not_sent_again(emulator, deyel_conn):
    deyel_conn(password="a-wrong-secret")
    with pytest.raises(DeyelAuthError) as first:
        DeyelHook().get_token()
    with pytest.raises(DeyelAuthError) as again:
        DeyelHook().get_token()  # another hook, as another task would have
    assert emulator.stats()["token_requests"] == 1
    message = str(again.value)
    assert "Invalid client_id" in message
    assert "deyel_default" in message
    assert "fix the connection" in message
    assert "a-wrong-secret" not in message
    assert (
        (again.value.status, again.value.path)
        == (first.value.status, first.value.path)
        == (
            401,
            "/oauth/token",
        )
    )

    # The connection's Test button asks the server again; so does a corrected secret.
    assert not DeyelHook().test_connection()[0]
    assert emulator.stats()["token_requests"] == 2
    deyel_conn()
    assert DeyelHook().get_token()
    assert emulator.stats()["token_requests"] == 3


def test_the_refusal_memory_is_shared_with_other_processes(emulator, deyel_conn):
    deyel_conn(password="a-wrong-secret")
    with pytest.raises(DeyelAuthError):
        DeyelHook().get_token()
    code = (
        "from deyel_provider.hooks.deyel import DeyelHook\n"
        "from deyel_provider.exceptions import DeyelAuthError\n"
        "try:\n    DeyelHook().get_token()\nexcept DeyelAuthError as e:\n    print('REFUSED', e)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=120
    )
    assert "REFUSED" in child.stdout, child.stderr
    assert "refused" in child.stdout and "ago" in child.stdout
    assert emulator.stats()["token_requests"] == 1


def test_the_refusal_memory_can_be_turned_off(emulator, deyel_conn):
    deyel_conn(password="a-wrong-secret", extra={**FAST_RETRY, "auth_failure_ttl": 0})
    for _ in range(2):
        with pytest.raises(DeyelAuthError):
            DeyelHook().get_token()
    assert emulator.stats()["token_requests"] == 2


# -- the policy itself -------------------------------------------------------------------------------------


def test_backoff_is_exponential_with_full_jitter_and_capped():
    policy = RetryPolicy(attempts=10, backoff=0.5, max_backoff=3.0, max_retry_after=60)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        waits = [policy.wait(attempt, None) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # spread over the range, not a fixed delay
    assert policy.wait(1, DeyelRateLimitError("x", retry_after=42.0)) == 42.0
    assert policy.wait(1, DeyelRateLimitError("x", retry_after=600.0)) == 60.0


def test_which_errors_are_retried_for_which_methods():
    policy = RetryPolicy()
    server = {s: DeyelServerError("x", status=s) for s in (500, 502, 503, 504, 501)}
    never_connected = DeyelConnectionError("x", request_sent=False)
    dropped = DeyelConnectionError("x", request_sent=True)
    tls = DeyelConnectionError("x", request_sent=False, transient=False)
    limited = DeyelRateLimitError("x", status=429)
    safe = [
        e
        for e in (*server.values(), never_connected, dropped, tls, limited)
        if policy.should_retry(e, replay_safe=True)
    ]
    unsafe = [
        e
        for e in (*server.values(), never_connected, dropped, tls, limited)
        if policy.should_retry(e, replay_safe=False)
    ]
    assert safe == [server[500], server[502], server[503], server[504], never_connected, dropped, limited]
    assert unsafe == [never_connected, limited]
    assert not policy.should_retry(DeyelError("x"), replay_safe=True)
    assert not policy.should_retry(ValueError("x"), replay_safe=True)
    done = DeyelServerError("x", status=503)
    done.retries_exhausted = True
    assert not policy.should_retry(done, replay_safe=True)
