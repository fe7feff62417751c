"""What the provider registers with Airflow's secrets masker stays bounded in a process that renews its token
a thousand times (a triggerer lives for weeks), and every token stays masked in log lines."""

from __future__ import annotations

import re
import secrets
import time

from airflow.sdk.log import _secrets_masker

from deyel_provider.auth import masking
from deyel_provider.auth.provider import mask_token
from deyel_provider.auth.token import DeyelToken
from deyel_provider.hooks.deyel import DeyelHook
from tests.helpers import as_airflow_logs_it

RENEWALS = 1000


def registered_patterns() -> int:
    return len(_secrets_masker().patterns)


def test_a_thousand_renewals_leave_the_masker_as_it_was(emulator, deyel_conn):
    # cache "none": every get_token() is a renewal, a token POST and a new JWT.
    deyel_conn(extra={"cache": "none"})
    hook = DeyelHook()
    first = hook.get_token()
    baseline = registered_patterns()
    assert baseline > 0  # the client secret and its Basic value are registered
    tokens = [hook.get_token() for _ in range(RENEWALS)]
    assert emulator.stats()["token_requests"] == RENEWALS + 1
    assert len({first, *tokens}) == RENEWALS + 1
    assert registered_patterns() == baseline
    assert masking.registered_count() == 0
    # None of them is in clear in a log line: Airflow's own JWT pattern masks each.
    for token in (first, tokens[-1]):
        assert masking.is_jwt(token)
        assert as_airflow_logs_it(f"sent Bearer {token} to Deyel") == "sent Bearer eyJ*** to Deyel"


def test_opaque_tokens_stay_registered_only_the_newest_few():
    baseline = registered_patterns()
    tokens = [secrets.token_urlsafe(24) for _ in range(RENEWALS)]
    now = time.time()
    for token in tokens:
        mask_token(DeyelToken(token, expires_at=now + 86400, issued_at=now))
    assert registered_patterns() == baseline + masking.MAX_REGISTERED
    assert masking.registered_count() == masking.MAX_REGISTERED
    # The newest are masked; the masker's one regex holds only those.
    for token in tokens[-masking.MAX_REGISTERED :]:
        assert as_airflow_logs_it(f"token {token} sent") == "token *** sent"
    replacer = _secrets_masker().replacer
    assert replacer is not None
    assert tokens[0] not in replacer.pattern
    assert tokens[-masking.MAX_REGISTERED - 1] not in replacer.pattern


def test_a_token_seen_again_is_not_registered_twice():
    token, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    now = time.time()
    for _ in range(3):
        mask_token(DeyelToken(token, expires_at=now + 60, issued_at=now, refresh_token=refresh))
    assert masking.registered_count() == 2
    assert as_airflow_logs_it(f"{token} and {refresh}") == "*** and ***"


def test_jwts_are_only_left_to_an_airflow_that_masks_them_inside_a_line():
    assert masking.airflow_masks_jwts()  # Airflow 3.3's redact_jwt

    def early_airflow_3(logger, method, event_dict):
        # Early Airflow 3: only a value that starts with "eyJ" was replaced.
        return {k: "eyJ***" if str(v).startswith("eyJ") else v for k, v in event_dict.items()}

    def stops_at_a_dash(logger, method, event_dict):
        return {k: re.sub(r"eyJ[A-Za-z0-9_.]*", "eyJ***", v) for k, v in event_dict.items()}

    assert not masking.masks_embedded_jwts(early_airflow_3)
    assert not masking.masks_embedded_jwts(stops_at_a_dash)
    assert not masking.masks_embedded_jwts(lambda *args: None)


def test_only_whole_jwts_count_as_jwts():
    assert masking.is_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_")
    assert not masking.is_jwt("eyJhbGciOiJSUzI1NiJ9")  # no payload: not what Airflow's pattern is for
    assert not masking.is_jwt("opaque-token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
