"""What the provider registers with Airflow's secrets masker stays bounded in a process that renews its token
again and again (a triggerer lives for weeks), and every token stays masked in log lines while valid."""

from __future__ import annotations

import re
import secrets
import time

from deyel_provider.auth import masking
from deyel_provider.auth.cache import MemoryTokenCache
from deyel_provider.auth.provider import TokenProvider, mask_token
from deyel_provider.auth.token import DeyelToken
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.helpers import airflow_secrets_masker, as_airflow_logs_it

#: Six times the bound (masking.MAX_PER_CREDENTIAL, 16): 84 tokens pushed out, every count asserted exactly. A
#: thousand asserted nothing more and made the renewal test the suite's slowest (two minutes: each renewal
#: recompiles Airflow's masker regex twice, once to add the new token and once to drop the oldest).
RENEWALS = 100


def opaque() -> str:
    """A random opaque token without ``eyJ`` inside (Airflow's JWT redaction cuts such a token before its
    masker runs: test_a_secret_with_eyJ_inside_prints_no_piece_of_it; here, one pattern per token is
    counted)."""
    return secrets.token_urlsafe(24).replace("eyJ", "eyj")


def registered_patterns() -> int:
    return len(airflow_secrets_masker().patterns)


def test_a_hundred_renewals_leave_the_masker_as_it_was(emulator, deyel_conn):
    # cache "none": every get_token() is a renewal, a token POST and a new JWT.
    deyel_conn(extra={"cache": "none"})
    hook = DeyelHook()
    first = hook.get_token()
    baseline = registered_patterns()
    assert baseline > 0  # the client secret and its Basic value are registered
    tokens = [hook.get_token() for _ in range(RENEWALS)]
    assert emulator.stats()["token_requests"] == RENEWALS + 1
    assert len({first, *tokens}) == RENEWALS + 1
    # Every token is valid for a day: the credential's bound applies. The baseline held the first token; it
    # was pushed out with the others, the first to expire first.
    assert registered_patterns() == baseline - 1 + masking.MAX_PER_CREDENTIAL
    assert masking.registered_count() == masking.MAX_PER_CREDENTIAL
    # The newest are masked in a log line, and inside a logged exception, where Airflow's JWT pattern does
    # not reach: they are registered.
    for token in tokens[-masking.MAX_PER_CREDENTIAL :]:
        logged = as_airflow_logs_it(f"sent Bearer {token} to Deyel")
        assert token not in logged and logged.endswith("*** to Deyel"), logged
    pattern = airflow_secrets_masker().replacer.pattern  # type: ignore[union-attr]
    assert re.escape(tokens[-1]) in pattern and re.escape(first) not in pattern
    # Registered, a token is masked by the masker itself, wherever it runs (Airflow's JWT pattern only
    # rewrites log messages).
    assert airflow_secrets_masker().redact(f"Deyel refused {tokens[-1]}") == "Deyel refused ***"


def test_opaque_tokens_of_one_credential_past_its_bound_keep_only_the_newest_registered():
    baseline = registered_patterns()
    tokens = [opaque() for _ in range(RENEWALS)]
    now = time.time()
    for token in tokens:
        mask_token(DeyelToken(token, expires_at=now + 86400, issued_at=now))
    assert registered_patterns() == baseline + masking.MAX_PER_CREDENTIAL
    assert masking.registered_count() == masking.MAX_PER_CREDENTIAL
    # The newest are masked; the masker's one regex holds only those.
    for token in tokens[-masking.MAX_PER_CREDENTIAL :]:
        assert as_airflow_logs_it(f"token {token} sent") == "token *** sent"
    replacer = airflow_secrets_masker().replacer
    assert replacer is not None
    assert tokens[0] not in replacer.pattern
    assert tokens[-masking.MAX_PER_CREDENTIAL - 1] not in replacer.pattern


def test_a_renewal_past_the_bound_recompiles_the_masker_once(monkeypatch):
    """Airflow's masker recompiles one regex of every pattern at each change (tens of milliseconds for a few
    dozen JWTs): a renewal that pushes the oldest token out, or finds expired ones, rebuilds it once. The old
    code rebuilt it once for the newcomer and once more for each token that left (here 5 times)."""
    now = time.time()
    own = [opaque() for _ in range(masking.MAX_PER_CREDENTIAL)]
    for n, token in enumerate(own):  # the first is the closest to expiry: it leaves
        mask_token(DeyelToken(token, expires_at=now + 86400 + n, issued_at=now), now=now)
    for n in range(3):  # three that expire before the next renewal
        mask_token(DeyelToken(opaque(), expires_at=now + 10 + n, issued_at=now), credential="b")
    assert masking.registered_count() == masking.MAX_PER_CREDENTIAL + 3
    compiles: list[str] = []
    real = re.compile
    # Airflow's masker and the provider both call re.compile (the one module): every rebuild is counted.
    monkeypatch.setattr(re, "compile", lambda pattern, *a: compiles.append(pattern) or real(pattern, *a))
    newest = opaque()
    mask_token(DeyelToken(newest, expires_at=now + 86400, issued_at=now), now=now + 60)
    assert masking.registered_count() == masking.MAX_PER_CREDENTIAL
    assert len([p for p in compiles if "|" in p]) == 1, len(compiles)
    pattern = airflow_secrets_masker().replacer.pattern
    assert re.escape(newest) in pattern and re.escape(own[0]) not in pattern
    monkeypatch.setattr(re, "compile", real)
    assert as_airflow_logs_it(f"token {newest} sent") == "token *** sent"


def test_a_refresh_token_never_pushes_out_the_access_token_it_came_with():
    """A password grant forced to renew at every request (``cache: none``, or a 401 each time) gets a new
    refresh token with each access token. Past the bound, the refresh token (registered right after its
    access token, and expiring a lifetime later) pushed out the access token in use, which then printed in
    clear (review of issue 24; the old code did it from the 15th renewal on). Nor does a newcomer with the
    earliest expiry push itself out."""
    start, lifetime = time.time(), 3600.0
    for n in range(3 * masking.MAX_PER_CREDENTIAL):
        now = start + n  # renewals far more often than tokens expire: the bound decides
        access, refresh = opaque(), opaque()
        mask_token(
            DeyelToken(access, expires_at=now + lifetime, issued_at=now, refresh_token=refresh), now=now
        )
        assert as_airflow_logs_it(f"Bearer {access} {refresh}") == "Bearer *** ***", n
        assert masking.registered_count() <= masking.MAX_PER_CREDENTIAL
    early = opaque()
    mask_token(DeyelToken(early, expires_at=start + 60, issued_at=start), now=start + 50)
    assert as_airflow_logs_it(f"token {early}") == "token ***"


def test_expired_tokens_leave_the_regex_even_when_the_registration_rebuilds_nothing():
    """Dropped tokens leave the pattern set first and Airflow's own rebuild takes them in; where the
    registration makes none (a value seen again, or one too short for Airflow's masker), the provider
    rebuilds the regex itself (review of issue 24: no test covered those paths)."""
    now = time.time()
    kept = opaque()
    mask_token(DeyelToken(kept, expires_at=now + 3600, issued_at=now), now=now)
    for later, newcomer in ((60, kept), (120, "abc")):  # seen again; shorter than Airflow masks
        gone = opaque()
        mask_token(DeyelToken(gone, expires_at=now + later - 1, issued_at=now), now=now + later - 30)
        assert re.escape(gone) in airflow_secrets_masker().replacer.pattern
        mask_token(DeyelToken(newcomer, expires_at=now + 3600, issued_at=now), now=now + later)
        assert re.escape(gone) not in airflow_secrets_masker().replacer.pattern, newcomer
        assert as_airflow_logs_it(f"{gone} {kept}") == f"{gone} ***"


def test_a_token_seen_again_is_not_registered_twice():
    token, refresh = opaque(), opaque()
    now = time.time()
    for _ in range(3):
        mask_token(DeyelToken(token, expires_at=now + 60, issued_at=now, refresh_token=refresh))
    assert masking.registered_count() == 2
    assert as_airflow_logs_it(f"{token} and {refresh}") == "*** and ***"


def test_a_valid_token_stays_masked_however_many_newer_ones_came(emulator, deyel_conn):
    """Finding 7 of issue 22: a still-valid token not used since 8 newer ones were registered printed in clear
    (``airflow dags test``, the Test button's process) until its next use."""
    deyel_conn(extra={"cache": "none"})
    hook = DeyelHook()
    tokens = [hook.get_token() for _ in range(12)]
    assert emulator.stats()["token_requests"] == 12 and len(set(tokens)) == 12
    assert masking.registered_count() == 12  # every one valid for a day, none dropped
    # Masked by the masker itself (as in a logged exception, which Airflow's eyJ*** pattern does not reach),
    # the first above all.
    pattern = airflow_secrets_masker().replacer.pattern
    for token in tokens:
        assert re.escape(token) in pattern
        assert airflow_secrets_masker().redact(f"Deyel refused {token}") == "Deyel refused ***"


def test_expired_tokens_leave_the_masker_so_it_stays_bounded_over_a_long_run():
    """A process renewing every 100 s tokens that live 250 s: three are valid at once, and three stay
    registered (plus the refresh token, which Deyel answers the same at each renewal)."""
    baseline = registered_patterns()
    refresh = opaque()
    start, lifetime = time.time(), 250.0
    tokens, counts = [], []
    for n in range(RENEWALS):
        now = start + 100 * n
        token = opaque()
        mask_token(
            DeyelToken(token, expires_at=now + lifetime, issued_at=now, refresh_token=refresh), now=now
        )
        tokens.append(token)
        counts.append(masking.registered_count())
    assert counts[:3] == [2, 3, 4] and set(counts[3:]) == {4}
    assert registered_patterns() == baseline + 4
    replacer = airflow_secrets_masker().replacer
    assert replacer is not None
    assert re.escape(tokens[0]) not in replacer.pattern  # expired long ago
    assert re.escape(tokens[-4]) not in replacer.pattern  # expired 50 s before the last renewal
    for token in (*tokens[-3:], refresh):
        assert as_airflow_logs_it(f"token {token} sent") == "token *** sent"


def test_past_its_bound_the_credential_token_closest_to_expiry_is_unregistered_first():
    now = time.time()
    soon, later = opaque(), opaque()
    mask_token(DeyelToken(later, expires_at=now + 7200, issued_at=now), now=now)
    mask_token(DeyelToken(soon, expires_at=now + 60, issued_at=now), now=now)
    for _ in range(masking.MAX_PER_CREDENTIAL - 1):
        mask_token(DeyelToken(opaque(), expires_at=now + 3600, issued_at=now), now=now)
    assert masking.registered_count() == masking.MAX_PER_CREDENTIAL
    assert as_airflow_logs_it(f"{soon} {later}") == f"{soon} ***"


def test_every_valid_token_stays_masked_whatever_the_number_of_credentials():
    """Issue 22: a process-wide cap of 16 printed in clear, with 9 connections (an access and a refresh token
    each, valid for an hour: 18 valid tokens), the one closest to expiry. The bound is per credential."""
    now = time.time()
    cache = MemoryTokenCache()
    pairs = []
    for n in range(40):  # forty connections (distinct credentials), each with its current pair
        pair = opaque(), opaque()
        token = DeyelToken(pair[0], expires_at=now + 3600 + n, issued_at=now, refresh_token=pair[1])
        provider = TokenProvider(lambda *, deadline=None, t=token: t, cache, key=f"credential-{n}", margin=60)
        assert provider.token() is token
        pairs.append(pair)
    assert masking.registered_count() == 80
    for access, refresh in pairs:
        assert as_airflow_logs_it(f"Bearer {access} / {refresh}") == "Bearer *** / ***"


def test_the_tokens_of_one_credential_never_push_out_those_of_another():
    now = time.time()
    other = opaque()
    mask_token(DeyelToken(other, expires_at=now + 60, issued_at=now), credential="quiet", now=now)
    for _ in range(masking.MAX_PER_CREDENTIAL * 3):
        token = DeyelToken(opaque(), expires_at=now + 3600, issued_at=now)
        mask_token(token, credential="busy", now=now)
    assert masking.registered_count() == masking.MAX_PER_CREDENTIAL + 1
    assert as_airflow_logs_it(f"token {other} sent") == "token *** sent"


def test_past_the_process_safety_cap_the_token_closest_to_expiry_is_unregistered(monkeypatch):
    monkeypatch.setattr(masking, "MAX_REGISTERED", 4)
    now = time.time()
    tokens = [opaque() for _ in range(5)]
    for n, token in enumerate(tokens):  # the first expires last, the second first
        expires_at = now + (7200 if n == 0 else 60 * n)
        mask_token(DeyelToken(token, expires_at=expires_at, issued_at=now), credential=f"c{n}", now=now)
    assert masking.registered_count() == 4
    assert as_airflow_logs_it(" ".join(tokens)) == " ".join(["***", tokens[1], "***", "***", "***"])


def test_the_pinned_airflow_keeps_the_masker_internals_the_provider_relies_on():
    """Fails loudly when a new Airflow minor (pinned in constraints.txt) moves or changes the private masker
    internals auth/masking.py uses to unregister expired tokens: the provider would still mask tokens (through
    the public mask_secret) but never remove one, so a long-lived triggerer's masker would grow again."""
    from deyel_provider.compat import AIRFLOW_VERSION, mask_secret

    fix = (
        f"Airflow {AIRFLOW_VERSION} changed its secrets masker's private internals; update _MASKER_ACCESSORS "
        "and _inspect_masker in provider/deyel_provider/auth/masking.py for this minor"
    )
    problem = masking.masker_internals_problem()
    assert problem is None, f"{fix}: {problem}"
    # What the unregistering assumes: a value given to the public mask_secret lands in `patterns` escaped, and
    # rebuilding `replacer` from `patterns` stops masking it.
    secret = opaque()
    mask_secret(secret)
    assert masking._masked_already(secret), f"{fix}: mask_secret stores no re.escape(value) in patterns"
    assert masking._drop_patterns(secret)
    masking._recompile()
    unmasked = airflow_secrets_masker().redact(f"x {secret}")
    assert unmasked == f"x {secret}", f"{fix}: unregistering no longer works"


def test_without_the_private_masker_internals_tokens_stay_masked_through_mask_secret(monkeypatch, caplog):
    masker = airflow_secrets_masker()  # Airflow's own, which the public mask_secret fills
    # As if a new minor moved the accessor, then as if it kept it but dropped the patterns set.
    for accessors in ((("airflow.sdk._gone", "_secrets_masker"),), (("types", "SimpleNamespace"),)):
        monkeypatch.setattr(masking, "_MASKER_ACCESSORS", accessors)
        masking.forget_all()
        problem = masking.masker_internals_problem()
        assert problem is not None and ("no masker accessor" in problem or "patterns" in problem)
        now = time.time()
        tokens = [opaque() for _ in range(masking.MAX_PER_CREDENTIAL + 2)]
        with caplog.at_level("WARNING", logger=masking.__name__):
            for token in tokens:
                mask_token(DeyelToken(token, expires_at=now + 3600, issued_at=now), now=now)
        # Every token is masked (the bound can no longer unregister any: nothing is removed, nothing fails),
        # and the degradation is said once.
        assert masker.redact(" ".join(tokens)) == " ".join(["***"] * len(tokens))
        assert masking.registered_count() == masking.MAX_PER_CREDENTIAL
        said = [r.getMessage() for r in caplog.records if "not what the Deyel provider" in r.getMessage()]
        assert len(said) == 1 and problem in said[0], said
        caplog.clear()


def test_our_copy_of_airflows_jwt_pattern_is_airflows():
    try:
        from airflow.sdk._shared.logging.structlog import JWT_PATTERN  # 3.1+
    except ImportError:
        from airflow.sdk.log import JWT_PATTERN  # 3.0
    assert masking.JWT_LIKE.pattern == JWT_PATTERN.pattern


def test_a_secret_with_eyJ_inside_prints_no_piece_of_it(deyel_conn):
    """Airflow's log pipeline replaces ``eyJ`` and what follows it with ``eyJ***`` (its JWT redaction) before
    its masker runs: a token or a client secret with ``eyJ`` inside reached the masker rewritten, was no
    longer found, and its part before ``eyJ`` printed in clear (a random token of
    test_a_refresh_token_never_pushes_out_the_access_token_it_came_with once held ``eyJ``). Whatever holds
    ``eyJ``, no five characters of the secret are left in the line, through the whole pipeline or the masker
    alone (a traceback: no redaction runs), whatever order the masker's patterns come in."""
    now = time.time()
    head, tail = "OPAQUEhead" + opaque()[:12], "~tail-" + opaque()[:10]
    # (No secret begins with another's text: Airflow's masker, which tries its values in no set order, can cut
    # such a pair whatever the provider registers.)
    other = "~other-" + opaque()[:10]
    tokens = [head + "eyJ" + tail, "eyJ" + opaque() + tail, opaque() + "eyJ", other + "eyJab~eyJcd.e" + head]
    for token in tokens:
        mask_token(DeyelToken(token, expires_at=now + 60, issued_at=now), now=now)
    client_secret = "client-" + opaque()[:8] + "eyJ" + opaque()[:8]
    deyel_conn(password=client_secret)
    assert DeyelHook().config.client_secret == client_secret  # loading the connection registers it
    masker = airflow_secrets_masker()
    for patterns in (sorted(masker.patterns), sorted(masker.patterns, reverse=True)):  # both orders
        masker.replacer = re.compile("|".join(patterns))
        for secret in [*tokens, client_secret]:
            for logged in (
                as_airflow_logs_it(f"Bearer {secret} sent"),
                masker.redact(f"Bearer {secret} sent"),
            ):
                assert _visible_pieces(logged, secret) == [], logged


def test_a_token_with_eyJ_after_the_client_secret_never_unmasks_it_when_it_expires(deyel_conn):
    """A server that knows the client secret answers it as a token with ``eyJ...`` after it: the token's
    redacted form is the secret plus ``eyJ***``, a value of its own; when the token expires, the client secret
    (and its own form) stay masked. Two tokens of one form: the form stays until the last of them expires."""
    client_secret = "client-" + opaque()[:12]
    deyel_conn(password=client_secret)
    assert DeyelHook().config.client_secret == client_secret  # loading the connection registers it
    now = time.time()
    mask_token(DeyelToken(client_secret + "eyJx", expires_at=now + 1, issued_at=now), now=now)
    first, second = "shared-prefix-eyJ" + opaque(), "shared-prefix-eyJ" + opaque()
    mask_token(DeyelToken(first, expires_at=now + 30, issued_at=now), now=now)
    mask_token(DeyelToken(second, expires_at=now + 3600, issued_at=now), now=now)
    mask_token(DeyelToken(opaque(), expires_at=now + 7200, issued_at=now), now=now + 60)  # the first two go
    patterns = airflow_secrets_masker().patterns
    assert re.escape(client_secret + "eyJx") not in patterns and re.escape(first) not in patterns
    for secret in (client_secret, second):
        assert _visible_pieces(as_airflow_logs_it(f"x {secret} y"), secret) == []
        assert _visible_pieces(airflow_secrets_masker().redact(f"x {secret} y"), secret) == []
    assert re.escape("shared-prefix-eyJ***") in patterns
    mask_token(DeyelToken(opaque(), expires_at=now + 9000, issued_at=now), now=now + 4000)  # the second goes
    assert re.escape("shared-prefix-eyJ***") not in airflow_secrets_masker().patterns


def _visible_pieces(logged: str, secret: str, length: int = 5) -> list[str]:
    """The substrings of ``secret`` of ``length`` characters that the log line still shows."""
    pieces = (secret[i : i + length] for i in range(len(secret) - length + 1))
    return [piece for piece in pieces if piece in logged]


def test_a_shorter_form_matched_first_never_leaves_the_rest_of_a_secret_in_clear():
    """Review of the redacted forms (helper-77, M2): an access token ``v1:eyJab...`` has the form
    ``v1:eyJ***``, a prefix of its refresh token's ``v1:eyJ***:Secret...``; Airflow's masker tries its values
    in no set order, so where the shorter came first the line showed ``***:Secret...``. The pieces after each
    mark are registered too: in either order nothing of five characters is left."""
    now = time.time()
    access, refresh = "v1:eyJ" + opaque(), "v1:eyJ" + opaque() + ":Secret" + opaque()[:10]
    for token in (access, refresh):
        mask_token(DeyelToken(token, expires_at=now + 60, issued_at=now), now=now)
    masker = airflow_secrets_masker()
    assert {re.escape("v1:eyJ***"), re.escape(masking.JWT_LIKE.sub("eyJ***", refresh))} <= masker.patterns
    for patterns in (sorted(masker.patterns, key=len), sorted(masker.patterns, key=len, reverse=True)):
        masker.replacer = re.compile("|".join(patterns))
        for secret in (access, refresh):
            line = f"Bearer {secret} sent"
            for logged in (as_airflow_logs_it(line), masker.redact(line)):
                assert _visible_pieces(logged, secret) == [], logged
    # A form that shows nothing of a secret (padding after a JWT) is not registered: it masks nothing secret.
    assert masking.redacted_values("eyJ" + opaque() + "==") == []


def test_a_secret_loaded_after_a_token_of_the_same_value_or_form_stays_masked_when_the_token_expires(
    deyel_conn,
):
    """Review (helper-77, L3): a token registered with the value (or the redacted form) of a connection's
    password before that connection is loaded removed it when the token expired. Loading the connection
    makes them permanent."""
    now = time.time()
    password = "pw!" + opaque()[:10] + "eyJ" + opaque()
    twin = "pw!" + password[3:13] + "eyJ" + opaque()  # another token with the password's redacted form
    mask_token(DeyelToken(password, expires_at=now + 1, issued_at=now), now=now)
    mask_token(DeyelToken(twin, expires_at=now + 1, issued_at=now), now=now)
    deyel_conn(password=password)
    assert DeyelHook().config.client_secret == password  # loading the connection registers it, for good
    mask_token(DeyelToken(opaque(), expires_at=now + 7200, issued_at=now), now=now + 60)  # both tokens go
    patterns = airflow_secrets_masker().patterns
    assert re.escape(password) in patterns and re.escape(twin) not in patterns
    for line in (f"secret {password} sent", f"Bearer {password}"):
        assert _visible_pieces(as_airflow_logs_it(line), password) == []
        assert _visible_pieces(airflow_secrets_masker().redact(line), password) == []


def test_a_token_of_many_marks_registers_a_bounded_number_of_values():
    """Each value registered recompiles Airflow's masker: a hostile token of thousands of ``eyJ`` marks (one
    piece after each) would hold the process for minutes (helper-76, M1). At most the form and
    ``MAX_PIECES`` pieces are registered, whatever the token."""
    token = "".join(f"~{n:05d}eyJ" for n in range(3000))
    values = masking.redacted_values(token)
    assert len(values) == 1 + masking.MAX_PIECES and values[0] == masking.JWT_LIKE.sub("eyJ***", token)
    before = len(airflow_secrets_masker().patterns)
    now = time.time()
    mask_token(DeyelToken(token, expires_at=now + 60, issued_at=now), now=now)
    assert len(airflow_secrets_masker().patterns) <= before + 2 + masking.MAX_PIECES
