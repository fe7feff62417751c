"""What the provider registers with Airflow's secrets masker stays bounded in a process that renews its token
a thousand times (a triggerer lives for weeks), and every token stays masked in log lines."""

from __future__ import annotations

import re
import secrets
import time

from deyel_provider.auth import masking
from deyel_provider.auth.provider import mask_token
from deyel_provider.auth.token import DeyelToken
from deyel_provider.hooks.deyel import DeyelHook
from tests.helpers import airflow_secrets_masker, as_airflow_logs_it

RENEWALS = 1000


def registered_patterns() -> int:
    return len(airflow_secrets_masker().patterns)


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
    # The baseline held the first token; it was pushed out with the others by the newest eight.
    assert registered_patterns() == baseline - 1 + masking.MAX_REGISTERED
    assert masking.registered_count() == masking.MAX_REGISTERED
    # The newest are masked in a log line, and inside a logged exception, where Airflow's JWT pattern does
    # not reach: they are registered.
    for token in tokens[-masking.MAX_REGISTERED :]:
        logged = as_airflow_logs_it(f"sent Bearer {token} to Deyel")
        assert token not in logged and logged.endswith("*** to Deyel"), logged
    pattern = airflow_secrets_masker().replacer.pattern  # type: ignore[union-attr]
    assert re.escape(tokens[-1]) in pattern and re.escape(first) not in pattern
    # Registered, a token is masked by the masker itself, wherever it runs (Airflow's JWT pattern only
    # rewrites log messages).
    assert airflow_secrets_masker().redact(f"Deyel refused {tokens[-1]}") == "Deyel refused ***"


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
    replacer = airflow_secrets_masker().replacer
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
