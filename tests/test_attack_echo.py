"""A server (or a proxy in front of it) whose error page prints the request back: the Basic value, the client
secret, the user password and the tokens come back in the answer. The provider's own texts (exceptions, the
Test message, the refusal file) show ``***`` instead, with no help from Airflow's masker."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from deyel_provider.exceptions import DeyelAuthError, DeyelError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.error_bodies import parse_errors
from deyel_provider.http.redact import Redactor, basic_value
from tests.support.helpers import CLIENT_ID, CLIENT_SECRET

BASIC = basic_value(CLIENT_ID, CLIENT_SECRET)
USER_PASSWORD = "JPerez-pass1"  # what the emulator accepts for JPerez
ODD_PASSWORD = "p@ss w/rd!#&="  # only ever sent to an echo: every encoding of it must be caught


def _texts(error: DeyelError) -> str:
    return "\n".join([str(error), repr(error), json.dumps(error.errors), repr(vars(error))])


def _refusal_files() -> str:
    folder = Path(os.environ["DEYEL_PROVIDER_STATE_DIR"])
    return "\n".join(p.read_text() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("shape", ["html", "json"])
def test_an_echoed_token_request_leaks_no_credential(emulator, deyel_conn, shape):
    echo = {"route": "token", "action": "echo", "status": 401, "body": shape if shape == "json" else None}
    emulator.set_faults([echo])
    with pytest.raises(DeyelAuthError) as caught:
        DeyelHook().get_token()
    texts = _texts(caught.value)
    assert "***" in texts  # the echo was there, and redacted
    # Remembered, and raised again from the refusal file without a request.
    with pytest.raises(DeyelAuthError) as again:
        DeyelHook().get_token()
    ok, message = DeyelHook().test_connection()
    assert not ok and "***" in message
    haystack = "\n".join([texts, _texts(again.value), message, _refusal_files()])
    assert "refused" in _refusal_files() or _refusal_files()  # the refusal file was written
    for secret in (CLIENT_SECRET, BASIC, quote_plus(CLIENT_SECRET)):
        assert secret not in haystack


def test_echoed_bearer_tokens_and_user_password_are_redacted(emulator, deyel_conn):
    deyel_conn(extra={"grant_type": "password", "username": "JPerez", "password": USER_PASSWORD})
    hook = DeyelHook()
    token = hook.token_provider.token()
    emulator.set_faults([{"route": "data", "action": "echo", "status": 500, "count": 10}])
    with pytest.raises(DeyelError) as data_error:
        hook.request("GET", "/forms/CRM_ACCOUNT/instances")
    deyel_conn("deyel_odd", extra={"grant_type": "password", "username": "JPerez", "password": ODD_PASSWORD})
    emulator.set_faults([{"route": "token", "action": "echo", "status": 400, "body": "json"}])
    with pytest.raises(DeyelAuthError) as token_error:
        DeyelHook("deyel_odd").token_client.grant()
    haystack = _texts(data_error.value) + _texts(token_error.value) + _refusal_files()
    assert haystack.count("***") >= 3
    secrets = (
        token.access_token,
        USER_PASSWORD,
        ODD_PASSWORD,
        quote_plus(ODD_PASSWORD),
        CLIENT_SECRET,
        BASIC,
    )
    for secret in secrets:
        assert secret not in haystack


def test_a_secret_cut_by_the_scan_limit_is_replaced_whole():
    secret = "s3cr3t-VALUE-long-enough"
    redact = Redactor([secret])
    # The secret starts just before the end of the part looked at.
    text = "x" * (64 * 1024 - 5) + secret + "y" * 100
    errors, detail = parse_errors("<p>" + text, redact)
    assert errors == []
    cleaned = redact(text, 64 * 1024)
    assert cleaned.endswith("***") and "s3cr" not in cleaned
    assert detail is not None and "s3cr" not in detail
