"""Secrets and tokens never reach logs, exception messages or reprs, and are registered for masking."""

from __future__ import annotations

import logging

import pytest
from airflow.sdk.log import mask_secret  # noqa: F401  (the masker the provider feeds)

from deyel_provider.auth.client import TokenClient
from deyel_provider.exceptions import DeyelError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.redact import basic_value
from tests.support.helpers import CLIENT_ID, CLIENT_SECRET, FAST_RETRY, as_airflow_logs_it
from tests.support.leaks import LeakScanner, all_issued

#: The Basic header value: as good as the secret, so scanned for everywhere the secret is.
BASIC = basic_value(CLIENT_ID, CLIENT_SECRET)


def _redact(value: str) -> object:
    from tests.support.helpers import airflow_secrets_masker

    return airflow_secrets_masker().redact(value)


def test_reprs_show_no_secret_or_token(emulator, deyel_conn):
    hook = DeyelHook()
    token = hook.token_provider.token()
    session = hook.get_conn()
    objects = [hook, hook.config, hook.token_client, hook.token_provider, token, session.auth]
    for obj in objects:
        text = repr(obj)
        assert CLIENT_SECRET not in text, text
        assert token.access_token not in text, text
    assert isinstance(hook.token_client, TokenClient)


def test_secret_and_token_are_registered_for_masking(emulator, deyel_conn):
    token = DeyelHook().get_token()
    assert _redact(f"secret={CLIENT_SECRET}") == "secret=***"
    assert _redact(f"Authorization: Basic {BASIC}") == "Authorization: Basic ***"
    # Deyel's tokens are JWTs: Airflow's log pipeline masks every one by its own pattern, so the provider
    # does not register them (deyel_provider.auth.masking); either way, no log line shows one.
    assert as_airflow_logs_it(f"Bearer {token}") == "Bearer eyJ***"


def test_logs_and_errors_never_carry_secrets(emulator, deyel_conn, caplog):
    caplog.set_level(logging.DEBUG)
    hook = DeyelHook()
    hook.request("GET", "/forms/CRM_ACCOUNT/instances")
    emulator.revoke()
    hook.request("GET", "/forms/CRM_ACCOUNT/instances/1")
    messages: list[str] = []
    for status in (401, 403, 404, 409, 500):
        emulator.set_faults([{"route": "data", "action": "status", "status": status}])
        with pytest.raises(DeyelError) as caught:
            hook.request("GET", "/forms/CRM_ACCOUNT/instances")
        messages.append(str(caught.value))
    emulator.set_faults([])
    deyel_conn(password="a-wrong-secret")
    with pytest.raises(DeyelError) as refused:
        DeyelHook().get_token()
    messages.append(str(refused.value))
    messages.append(DeyelHook().test_connection()[1])

    issued = all_issued(emulator)
    assert len(issued) >= 2
    haystack = "\n".join(messages + [r.getMessage() for r in caplog.records])
    assert "Obtained a new Deyel access token" in haystack  # the logs were captured
    for secret in [CLIENT_SECRET, "a-wrong-secret", *issued]:
        assert secret not in haystack


def test_no_secret_or_token_leaks_from_tokens_retries_errors_or_operators(
    emulator, deyel_conn, caplog, capsys
):
    """Scan every log record, exception message and repr, rendered template field and XCom value."""
    import pendulum
    from airflow.sdk import DAG

    from deyel_provider.operators.deyel import DeyelOperator

    scan = LeakScanner(caplog, capsys)

    # Tokens: obtained, retried at the token endpoint, revoked and renewed, expired mid-run.
    emulator.set_faults([{"route": "token", "action": "status", "status": 503, "count": 1}])
    hook = DeyelHook()
    token = hook.token_provider.token()
    scan.keep(hook, hook.config, hook.token_client, hook.token_provider, token, hook.get_conn().auth)
    steps = [
        {"action": "revoke"},
        {"action": "status", "status": 503, "retry_after": 0, "count": 2},
        {"action": "status", "status": 429, "retry_after": 1},
        {"action": "drop"},
        {"action": "expire"},
    ]
    for n, step in enumerate(steps, start=1):
        emulator.set_faults([{"route": "data", "count": 1, **step}])
        scan.keep(hook.request("GET", f"/forms/CRM_ACCOUNT/instances/{n}").json())
    assert emulator.stats()["api_unauthorized"] == 2  # the revoked and the expired token were renewed

    # Errors: every status the provider maps, on data calls and at the token endpoint.
    for status in (400, 401, 403, 404, 405, 409, 415, 429, 500, 502, 503):
        emulator.set_faults([{"route": "data", "action": "status", "status": status}])
        scan.failing(lambda: hook.request("GET", "/forms/CRM_ACCOUNT/instances", params={"search": "x=eq:1"}))
    for fault in (
        {"action": "html", "status": 200},
        {"action": "malformed"},
        {"action": "status", "status": 500},
    ):
        emulator.set_faults([{"route": "token", **fault}])
        scan.failing(lambda: DeyelHook().token_client.client_credentials())
    emulator.clear_faults()

    # Refused credentials, then remembered.
    deyel_conn("deyel_wrong", password="a-wrong-secret")
    for _ in range(2):
        scan.failing(lambda: DeyelHook("deyel_wrong").get_token())
    scan.keep(DeyelHook("deyel_wrong").test_connection())

    # An operator: rendered template fields and the XCom value it returns.
    with DAG("leak", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        operator = DeyelOperator(
            task_id="op",
            endpoint="/forms/{{ params.form }}/instances",
            query_params={"pageSize": "{{ 1 + 1 }}"},
            headers={"X-Trace": "{{ params.form }}"},
        )
    emulator.set_faults([{"route": "data", "action": "status", "status": 502, "count": 1}])
    scan.keep_task(operator, {"params": {"form": "CRM_ACCOUNT"}})

    issued = all_issued(emulator)
    assert len(issued) == 4  # the first, after the revocation, after the expiry, after the 401 fault
    scan.assert_no_leak([CLIENT_SECRET, BASIC, "a-wrong-secret", *issued])
    retries = scan.lines("deyel_provider.http.retry")
    assert len(retries) >= 6, retries  # the retry scenarios ran and were logged
    assert any("HTTP 503" in line for line in retries) and any("HTTP 429" in line for line in retries)


USER_PASSWORD = "JPerez-pass1"


@pytest.mark.parametrize("cache", ["file", "redis"])
def test_no_secret_or_token_leaks_from_xcom_password_grant_extraction_or_caches(
    emulator, deyel_conn, request, tmp_path, caplog, capsys, cache
):
    """XCom tokens (encrypted, and the clear-text opt-in), the password grant and its refresh tokens, the
    extraction operator under faults, and what the shared token cache holds at rest."""
    from deyel_provider.auth.backends import shared_tier
    from deyel_provider.operators.deyel import DeyelOperator, DeyelTokenOperator
    from deyel_provider.operators.extract import DeyelExtractOperator

    scan = LeakScanner(caplog, capsys)
    cache_dir = tmp_path / "token-cache"
    redis_url = request.getfixturevalue("redis_url") if cache == "redis" else None
    shared = {"cache": cache, "cache_dir": str(cache_dir), "cache_url": redis_url}
    shared = {name: value for name, value in shared.items() if value is not None}
    deyel_conn(extra={**FAST_RETRY, **shared})
    user = {"grant_type": "password", "username": "JPerez", "password": USER_PASSWORD}
    deyel_conn("deyel_user", extra={**FAST_RETRY, **shared, **user})

    # A token handed through XCom, encrypted, to a consumer that renders it from a template.
    producer = DeyelTokenOperator(task_id="get_token")
    handed = scan.keep_task(producer, {})
    consumer = DeyelOperator(task_id="use", endpoint="/forms/CRM_ACCOUNT/instances/1", token="{{ params.t }}")
    scan.keep_task(consumer, {"params": {"t": handed}})
    assert consumer.token == str(handed)  # the rendered field is the ciphertext's dict, nothing else

    # The clear-text opt-in: its XCom value holds the token by design, the process's logs must not.
    clear = DeyelTokenOperator(task_id="get_token_clear", clear_text=True)
    clear_value = scan.keep_task(clear, {}, xcom=False)
    assert clear_value["access_token"] in all_issued(emulator)  # the scan below would see it if logged

    # The password grant: user password and refresh tokens; a revoked access token is renewed with the
    # refresh token, a revoked refresh token falls back to the password grant.
    user_hook = DeyelHook("deyel_user")
    first = user_hook.token_provider.token()
    scan.keep(user_hook, user_hook.config, user_hook.token_provider, first, user_hook.get_conn().auth)
    emulator.revoke(first.access_token)
    scan.keep(user_hook.request("GET", "/forms/CRM_ACCOUNT/instances/2").json())
    emulator.revoke(first.refresh_token)
    emulator.revoke(user_hook.get_token())
    scan.keep(user_hook.request("GET", "/forms/CRM_ACCOUNT/instances/3").json())
    deyel_conn("deyel_user_wrong", extra={**FAST_RETRY, **user, "password": "a-wrong-password"})
    scan.failing(lambda: DeyelHook("deyel_user_wrong").get_token())

    # The extraction operator with the user's connection, templated, under retried faults and a revocation,
    # with progress lines on every page.
    emulator.set_faults(
        [
            {"route": "data", "action": "revoke", "after": 1, "count": 1},
            {"route": "data", "action": "status", "status": 503, "after": 2, "count": 1},
            {"route": "data", "action": "status", "status": 429, "retry_after": 1, "after": 3, "count": 1},
            {"route": "data", "action": "drop", "after": 5, "count": 1},
        ]
    )
    extraction = DeyelExtractOperator(
        task_id="extract",
        form="{{ params.form }}",
        output=str(tmp_path / "out" / "{{ params.form }}.jsonl"),
        search="cdCountry=in:{{ params.countries }}",
        incremental_field=None,
        page_size=3,
        progress_interval=0.000001,
        deyel_conn_id="deyel_user",
    )
    summary = scan.keep_task(extraction, {"params": {"form": "CRM_ACCOUNT", "countries": "AR;UY;BR"}})
    assert summary["requests"] >= 5
    emulator.clear_faults()

    # The shared cache at rest: every file, or every Redis key and value.
    for hook in (DeyelHook(), DeyelHook("deyel_user")):
        scan.keep(shared_tier(hook.config, hook.credential_key))
    if cache == "file":
        entries = sorted(cache_dir.iterdir())
        assert any(entry.name.endswith(".token") for entry in entries)
        scan.keep(*(entry.name + "\n" + entry.read_bytes().decode("latin-1") for entry in entries))
    else:
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = client.keys("*")
        assert keys
        scan.keep(*(key.decode("latin-1") + "\n" + client.dump(key).decode("latin-1") for key in keys))
        client.close()

    issued = emulator.issued_tokens()
    assert len(issued["refresh_tokens"]) >= 2  # the password grant's, then the refresh grant's
    secrets = [CLIENT_SECRET, BASIC, USER_PASSWORD, "a-wrong-password", *all_issued(emulator)]
    haystack = scan.assert_no_leak(secrets)
    # The scenarios really ran and were logged.
    assert "unencrypted" in haystack  # the clear-text warning
    assert "progress:" in haystack and "published" in haystack
    retries = scan.lines("deyel_provider.http.retry")
    assert [("HTTP 503" in line, "HTTP 429" in line, "DeyelConnectionError" in line) for line in retries] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
    ]
