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

    issued = emulator.issued_tokens()
    assert len(issued) >= 2
    haystack = "\n".join(messages + [r.getMessage() for r in caplog.records])
    assert "Obtained a new Deyel access token" in haystack  # the logs were captured
    for secret in [CLIENT_SECRET, "a-wrong-secret", *issued]:
        assert secret not in haystack
