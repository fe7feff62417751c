"""Tokens handed over through XCom, and the password grant renewed with its refresh token."""

from __future__ import annotations

import json
import time

import jwt
import pytest
import time_machine

from deyel_provider.auth.cache import PROCESS_CACHE
from deyel_provider.auth.token import DeyelToken
from deyel_provider.auth.xcom import token_to_xcom
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.deyel import DeyelOperator, DeyelTokenOperator
from tests.support.helpers import CLIENT_SECRET

PASSWORD_GRANT = {"grant_type": "password", "username": "JPerez", "password": "JPerez-pass1"}


def test_xcom_round_trip_carries_the_token_encrypted(emulator, deyel_conn):
    value = DeyelTokenOperator(task_id="get_token").execute({})
    token = DeyelHook().get_token()
    text = json.dumps(value)  # XCom values must be JSON
    assert set(value) == {"deyel_token", "expires_at", "v"}
    assert token not in text and CLIENT_SECRET not in text
    # A consumer that caches nothing proves the token came from XCom: no new POST.
    deyel_conn(extra={"cache": "none"})
    for handed in (value, text, str(value)):  # the dict, JSON, and a template's rendering of the dict
        consumer = DeyelHook(token=handed)
        assert consumer.get_token() == token
        consumer.request("GET", "/forms/CRM_ACCOUNT/instances/1")
    assert emulator.stats()["token_requests"] == 1


def test_operator_uses_the_xcom_token(emulator, deyel_conn):
    value = DeyelTokenOperator(task_id="get_token").execute({})
    deyel_conn(extra={"cache": "none"})
    operator = DeyelOperator(task_id="call", endpoint="/forms/CRM_ACCOUNT/instances/1", token=value)
    assert "token" in operator.template_fields
    assert isinstance(operator.execute({}), dict)
    assert emulator.stats()["token_requests"] == 1


def test_extract_operator_uses_the_xcom_token(emulator, deyel_conn, tmp_path):
    from deyel_provider.operators.extract import DeyelExtractOperator

    value = DeyelTokenOperator(task_id="get_token").execute({})
    deyel_conn(extra={"cache": "none"})
    operator = DeyelExtractOperator(
        task_id="extract",
        form="CRM_ACCOUNT",
        output=str(tmp_path / "out.jsonl"),
        token=value,
        incremental_field=None,
    )
    assert "token" in operator.template_fields
    assert operator.execute({})["records"] == 50
    assert emulator.stats()["token_requests"] == 1


def test_an_expired_or_rejected_xcom_token_falls_back(emulator, deyel_conn):
    hook = DeyelHook()
    token = hook.token_provider.token()
    expired = token_to_xcom(
        DeyelToken(token.access_token, expires_at=time.time() - 1, issued_at=0),
        CLIENT_SECRET,
        hook.credential_key,
    )
    deyel_conn(extra={"cache": "none"})
    assert DeyelHook(token=expired).get_token() != token.access_token
    assert emulator.stats()["token_requests"] == 2
    rejected = DeyelHook(token=token_to_xcom(token, CLIENT_SECRET, hook.credential_key))
    emulator.revoke(token.access_token)
    rejected.request("GET", "/forms/CRM_ACCOUNT/instances/1")  # 401, then the normal path
    assert rejected.get_token() != token.access_token
    assert emulator.stats()["token_requests"] >= 3


def test_an_xcom_token_of_another_secret_is_not_used(emulator, deyel_conn, caplog):
    hook = DeyelHook()
    foreign = token_to_xcom(hook.token_provider.token(), "another-secret", hook.credential_key)
    deyel_conn(extra={"cache": "none"})
    DeyelHook(token=foreign).get_token()
    assert "not sealed for this connection" in caplog.text
    assert emulator.stats()["token_requests"] == 2


def test_a_malformed_token_value_is_a_config_error(emulator, deyel_conn):
    with pytest.raises(DeyelConfigError, match="xcom_pull"):
        DeyelHook(token="not a token value").get_token()


def test_clear_text_xcom_only_on_opt_in(emulator, deyel_conn, capsys):
    value = DeyelTokenOperator(task_id="get_token", clear_text=True).execute({})
    assert value["access_token"] == DeyelHook().get_token()
    output = capsys.readouterr().out  # task loggers write through structlog
    assert "unencrypted" in output
    assert value["access_token"] not in output


def test_password_grant_renews_with_the_refresh_token(deyel_conn, cache_dir):
    from deyel_provider.emulator import run_emulator

    # The clock is moved, not waited on: renewal at half the 600 s lifetime, expiry at 600 s.
    with (
        run_emulator(records=5, token_ttl=600) as emulator,
        time_machine.travel(time.time(), tick=False) as clock,
    ):
        deyel_conn(url=emulator.url, extra={**PASSWORD_GRANT, "cache": "file", "cache_dir": cache_dir})
        hook = DeyelHook()
        first = hook.token_provider.token()
        assert first.refresh_token
        assert jwt.decode(first.access_token, options={"verify_signature": False})["grant_type"] == "password"
        clock.shift(first.lifetime / 2 + 1)  # past the renewal point (half the lifetime for a short token)
        second = hook.token_provider.token()
        claims = jwt.decode(second.access_token, options={"verify_signature": False})
        assert claims["grant_type"] == "refresh_token" and claims["sub"] == "JPerez"
        # A new process finds the refresh token in the shared cache, and after a 401 renews with it too.
        PROCESS_CACHE.discard(hook.credential_key, second.access_token)
        emulator.revoke(second.access_token)
        other = DeyelHook()
        other.request("GET", "/forms/CRM_ACCOUNT/instances/1")
        third = jwt.decode(other.get_token(), options={"verify_signature": False})
        assert third["grant_type"] == "refresh_token"
        assert emulator.stats()["token_requests"] == 3
        # A refused refresh token falls back to the full grant.
        emulator.revoke(first.refresh_token)
        emulator.revoke(other.get_token())
        other.request("GET", "/forms/CRM_ACCOUNT/instances/1")
        assert jwt.decode(other.get_token(), options={"verify_signature": False})["grant_type"] == "password"


def test_password_grant_needs_username_and_password(emulator, deyel_conn):
    deyel_conn(extra={"grant_type": "password", "username": "JPerez"})
    with pytest.raises(DeyelConfigError, match="username"):
        DeyelHook().get_token()


def test_user_password_is_masked_and_not_in_repr(emulator, deyel_conn):
    from tests.support.helpers import airflow_secrets_masker

    deyel_conn(extra=PASSWORD_GRANT)
    hook = DeyelHook()
    hook.get_token()
    assert "JPerez-pass1" not in repr(hook.config)
    assert airflow_secrets_masker().redact("pw=JPerez-pass1") == "pw=***"
