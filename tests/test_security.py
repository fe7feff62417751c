"""Secrets and tokens never reach logs, exception messages or reprs, and are registered for masking."""

from __future__ import annotations

import logging

import pytest
from airflow.sdk.log import mask_secret  # noqa: F401  (the masker the provider feeds)

from deyel_provider.auth.client import TokenClient
from deyel_provider.exceptions import DeyelError
from deyel_provider.hooks.deyel import DeyelHook
from tests.helpers import CLIENT_SECRET


def _redact(value: str) -> object:
    from airflow.sdk.log import _secrets_masker  # the process-wide masker that mask_secret fills

    return _secrets_masker().redact(value)


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
    assert _redact(f"Bearer {token}") == "Bearer ***"


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


def all_issued(emulator) -> list[str]:
    """Every access and refresh token the emulator handed out."""
    return [token for tokens in emulator.issued_tokens().values() for token in tokens]


def test_no_secret_or_token_leaks_from_tokens_retries_errors_or_operators(
    emulator, deyel_conn, caplog, capsys
):
    """Scan every log record, exception message and repr, rendered template field and XCom value."""
    import pendulum
    from airflow.sdk import DAG

    from deyel_provider.operators.deyel import DeyelOperator

    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def keep(*objects: object) -> None:
        seen.extend(f"{obj}\n{obj!r}" for obj in objects)

    def failing(call) -> None:
        try:
            call()
        except DeyelError as error:
            keep(error, error.args, error.errors, vars(error))
        else:
            raise AssertionError("expected a DeyelError")

    # Tokens: obtained, retried at the token endpoint, revoked and renewed, expired mid-run.
    emulator.set_faults([{"route": "token", "action": "status", "status": 503, "count": 1}])
    hook = DeyelHook()
    token = hook.token_provider.token()
    keep(hook, hook.config, hook.token_client, hook.token_provider, token, hook.get_conn().auth)
    steps = [
        {"action": "revoke"},
        {"action": "status", "status": 503, "retry_after": 0, "count": 2},
        {"action": "status", "status": 429, "retry_after": 1},
        {"action": "drop"},
        {"action": "expire"},
    ]
    for n, step in enumerate(steps, start=1):
        emulator.set_faults([{"route": "data", "count": 1, **step}])
        keep(hook.request("GET", f"/forms/CRM_ACCOUNT/instances/{n}").json())
    assert emulator.stats()["api_unauthorized"] == 2  # the revoked and the expired token were renewed

    # Errors: every status the provider maps, on data calls and at the token endpoint.
    for status in (400, 401, 403, 404, 405, 409, 415, 429, 500, 502, 503):
        emulator.set_faults([{"route": "data", "action": "status", "status": status}])
        failing(lambda: hook.request("GET", "/forms/CRM_ACCOUNT/instances", params={"search": "x=eq:1"}))
    for fault in (
        {"action": "html", "status": 200},
        {"action": "malformed"},
        {"action": "status", "status": 500},
    ):
        emulator.set_faults([{"route": "token", **fault}])
        failing(lambda: DeyelHook().token_client.client_credentials())
    emulator.clear_faults()

    # Refused credentials, then remembered.
    deyel_conn("deyel_wrong", password="a-wrong-secret")
    for _ in range(2):
        failing(lambda: DeyelHook("deyel_wrong").get_token())
    keep(DeyelHook("deyel_wrong").test_connection())

    # An operator: rendered template fields and the XCom value it returns.
    with DAG("leak", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        operator = DeyelOperator(
            task_id="op",
            endpoint="/forms/{{ params.form }}/instances",
            query_params={"pageSize": "{{ 1 + 1 }}"},
            headers={"X-Trace": "{{ params.form }}"},
        )
    emulator.set_faults([{"route": "data", "action": "status", "status": 502, "count": 1}])
    context = {"params": {"form": "CRM_ACCOUNT"}}
    operator.render_template_fields(context)
    xcom = operator.execute(context)
    keep(xcom, operator.hook, *(getattr(operator, f) for f in operator.template_fields))

    captured = capsys.readouterr()
    records = [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
    haystack = "\n".join(seen + records + [captured.out, captured.err])
    retries = [r.getMessage() for r in caplog.records if r.name == "deyel_provider.retry"]
    assert len(retries) >= 6, retries  # the retry scenarios ran and were logged
    assert any("HTTP 503" in line for line in retries) and any("HTTP 429" in line for line in retries)
    issued = all_issued(emulator)
    assert len(issued) == 4  # the first, after the revocation, after the expiry, after the 401 fault
    for secret in [CLIENT_SECRET, "a-wrong-secret", *issued]:
        assert secret not in haystack
