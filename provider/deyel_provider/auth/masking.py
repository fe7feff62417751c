"""What the provider registers with Airflow's secrets masker, kept bounded in a long-lived process.

Airflow's masker keeps one regex of every value ever registered and recompiles it at each registration; it
runs over every log line. A triggerer or a worker that lives for weeks and registers each renewed token
would make every log line (and so every request) slower with each renewal: measured, 50 renewals made the
50th request cost 300 ms against 25 ms for the first. So every token (access or refresh, JWT or opaque) is
registered, and stays registered until it expires: a token is removed from the masker once its expiry has
passed (checked at each registration), never because newer ones came (issue 22: a still-valid token not used
since 8 newer ones printed in clear). A refresh token has no expiry of its own: it is kept for one lifetime
of its access token past that token's expiry (the window in which it renews it), longer each time it comes
back with a renewal (Deyel answers the same refresh token).

What bounds the set is how many tokens of one credential can be unexpired at once: the current pair and the
previous one (a token is renewed no earlier than half its lifetime), plus one per forced renewal (a 401). A
server that forces a renewal at every request (or the masker benchmark, ``cache=none``) would still grow it,
so each credential (a connection's token cache key) keeps at most :data:`MAX_PER_CREDENTIAL` registered: past
it, that credential's token closest to expiry is removed, with a warning (once per process). The bound is per
credential, never per process, so that the tokens of one connection never push out the valid tokens of
another (issue 22: a process-wide cap of 16 printed in clear a valid token of the 9th connection). Only a
safety cap, :data:`MAX_REGISTERED` (1024, far above what the connections of one process hold), bounds the
process as a whole, with its own warning. JWTs are registered too, although Airflow's log pipeline replaces
``eyJ...`` strings in messages (``redact_jwt``): that processor does not reach a token inside a logged
exception. The same processor runs before the masker, so a secret with ``eyJ`` inside it (an opaque token,
a client secret) reaches the masker rewritten (``abceyJxyz`` as ``abceyJ***``): the masker no longer found
it, and its part before ``eyJ`` printed in clear (found by a test whose random token held ``eyJ``). Such a
secret is registered with that rewritten form too, and the pieces of it after each ``eyJ***``
(:func:`redacted_values`); never with the piece before, which the masker could match before the whole
secret where the redaction does not run (a traceback), leaving the rest in clear. What two tokens share
leaves the masker with the last of them, and what a permanent secret (the client secret) has, never.

The provider's own :class:`~deyel_provider.http.redact.Redactor` still redacts this connection's recent
tokens from
every text built from a server answer, whatever is registered here.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from typing import Any

from deyel_provider.compat import mask_secret

log = logging.getLogger(__name__)

#: Unexpired tokens of one credential kept registered with Airflow's masker at once: the bound for a server
#: that hands out tokens faster than they expire (a credential normally holds 2 to 4: its current and previous
#: access token and their refresh token). python -m bench masker measures the cost.
MAX_PER_CREDENTIAL = 16
#: Safety cap over all credentials of the process (64 credentials at their bound): only a process holding
#: that many connections' tokens at once reaches it.
MAX_REGISTERED = 1024

#: Airflow's ``JWT_PATTERN`` (``redact_jwt`` replaces its matches with ``eyJ***`` before the masker runs),
#: as Airflow writes it; tests/test_masking.py checks it against the installed Airflow's.
JWT_LIKE = re.compile(r"eyJ[\.A-Za-z0-9-_]*")
_JWT_MARK = "eyJ***"
#: The most pieces after a mark registered for one secret (see :func:`redacted_values`).
MAX_PIECES = 4

_registered: dict[str, tuple[float, str]] = {}  # token -> (when it may be unregistered (epoch s), credential)
#: The values registered for tokens besides the tokens themselves (:func:`redacted_values`), and how many
#: registered tokens need each; one registered by anyone else (a permanent secret's: mask_everywhere) is not
#: in here, and never removed.
_extra_needs: dict[str, int] = {}
_guard = threading.Lock()
_warned: set[str] = set()  # which bound warned already (once per process each)


def redacted_values(secret: str) -> list[str]:
    """What to register besides ``secret`` so that Airflow's masker hides all of it after its JWT redaction:
    ``ab!cdeyJxy:Tail12`` arrives as ``ab!cdeyJ***:Tail12``, registered as it is, and each piece after a
    redaction mark (``:Tail12``): where another secret's shorter form matches first (``ab!cdeyJ***``, the
    masker tries its values in no set order), the line is cut there and the piece hides what follows. Never
    the piece before the first mark: in a line where the redaction did not run (a traceback) it could match
    before the whole secret, at the same place, and leave the rest in clear. None when the form shows no
    letter or digit of the secret; no piece under five characters (Airflow's masker skips those)."""
    if "eyJ" not in secret:
        return []
    form = JWT_LIKE.sub(_JWT_MARK, secret)
    if form == secret or not _shows_something(form.replace(_JWT_MARK, "")):
        return []
    tails = [piece for piece in form.split(_JWT_MARK)[1:] if len(piece) >= 5 and _shows_something(piece)]
    # Bounded: each value recompiles Airflow's masker, and a token made of thousands of marks would cost
    # minutes (a hostile server's; none of Deyel's has more than one or two).
    return list(dict.fromkeys([form, *tails[:MAX_PIECES]]))


def _shows_something(text: str) -> bool:
    return any(character.isalnum() for character in text)


def mask_everywhere(secret: str) -> None:
    """Register ``secret`` (a client secret, a password: valid for the process's life) with Airflow's masker,
    with what its JWT redaction leaves of it (:func:`redacted_values`), so that no log line shows any of it.
    A token registered before with the same value, or with the same redacted values, no longer removes them
    when it expires."""
    with _guard:
        _registered.pop(secret, None)
        mask_secret(secret)
        for value in redacted_values(secret):
            _extra_needs.pop(value, None)
            mask_secret(value)


def register_token(secret: str, expires_at: float, *, credential: str = "", now: float | None = None) -> None:
    """Make sure ``secret`` (an access or refresh token of ``credential``, a token cache key) is masked in
    Airflow's logs until ``expires_at`` (epoch seconds), keeping the masker bounded: what expired before
    ``now`` is unregistered.

    Airflow's masker recompiles one regex of every pattern at each change, which for a few dozen JWTs costs
    tens of milliseconds: what leaves (expired tokens, the one past a bound) leaves the pattern set first,
    and the registration's own recompile (or a single one, if it makes none) takes them all in.
    """
    if not secret:
        return
    now = time.time() if now is None else now
    with _guard:
        dropped = False
        try:
            for gone in [t for t, (until, _) in _registered.items() if until <= now and t != secret]:
                del _registered[gone]
                dropped |= _drop_patterns(gone)
            if secret in _registered:
                until, owner = _registered[secret]
                _registered[secret] = (max(until, expires_at), owner)
                return
            if _masked_already(secret):
                # Registered by someone else (the hook registers the client secret and the password): a server
                # answering one of them as a token must not make us unregister it once that "token" expires.
                return
            # Room for the newcomer first: the one closest to expiry among those already registered leaves,
            # never the last one registered (a refresh token comes right after its access token, which expires
            # first: it would push out the token in use). An expired newcomer pushes nothing out.
            own = [token for token, (_, owner) in _registered.items() if owner == credential]
            if expires_at > now and len(own) >= MAX_PER_CREDENTIAL:
                dropped |= _drop_soonest(own[:-1] or own, "per_credential")
            everyone = list(_registered)
            if expires_at > now and len(everyone) >= MAX_REGISTERED:
                dropped |= _drop_soonest(everyone[:-1] or everyone, "process")
            masker = _airflow_masker() if dropped else None
            replacer = getattr(masker, "replacer", None)
            mask_secret(secret)
            _register_extras(secret)
            _registered[secret] = (expires_at, credential)
            if masker is not None and masker.replacer is not replacer:
                dropped = False  # mask_secret recompiled, from the patterns left
        finally:
            if dropped:
                _recompile()


def _register_extras(token: str) -> None:
    """Register what the token's JWT redaction leaves of it (:func:`redacted_values`), counted (the caller
    holds ``_guard``)."""
    for value in redacted_values(token):
        if value in _extra_needs:
            _extra_needs[value] += 1
        elif not _masked_already(value):  # else someone else's (a permanent secret's): left alone
            mask_secret(value)
            _extra_needs[value] = 1


def _drop_soonest(candidates: list[str], bound: str) -> bool:
    """Unregister the candidate closest to expiry (patterns only: the caller recompiles); warn once."""
    soonest = min(candidates, key=lambda token: _registered[token][0])
    del _registered[soonest]
    dropped = _drop_patterns(soonest)
    if bound in _warned:
        return dropped
    _warned.add(bound)
    if bound == "per_credential":
        log.warning(
            "More than %d tokens of one Deyel credential are unexpired at once (a server that forces a "
            "renewal at each request, or cache=none?): its token closest to expiry is no longer registered "
            "with Airflow's secrets masker (the provider's own messages still redact it)",
            MAX_PER_CREDENTIAL,
        )
    else:
        log.warning(
            "More than %d Deyel tokens of this process are unexpired at once: the one closest to expiry "
            "is no longer registered with Airflow's secrets masker (the provider's own messages still "
            "redact it)",
            MAX_REGISTERED,
        )
    return dropped


def registered_count() -> int:
    """Tokens this process keeps registered with Airflow's masker (for tests and benchmarks)."""
    with _guard:
        return len(_registered)


def forget_all() -> None:
    """Forget what was registered (tests reset Airflow's masker between them)."""
    with _guard:
        _registered.clear()
        _extra_needs.clear()
        _warned.clear()


#: Where each Airflow minor keeps the accessor of its process-wide masker (private: no public API removes a
#: value). A new minor that moves or renames it is detected: see :func:`masker_internals_problem`.
_MASKER_ACCESSORS: tuple[tuple[str, str], ...] = (
    ("airflow.sdk.log", "_secrets_masker"),  # 3.3
    ("airflow.sdk._shared.secrets_masker", "_secrets_masker"),  # 3.1, 3.2
    ("airflow.sdk.execution_time.secrets_masker", "_secrets_masker"),  # 3.0
)


def masker_internals_problem() -> str | None:
    """What of Airflow's private masker internals this module relies on is missing in the installed Airflow
    (``None`` when all is there): its accessor, a ``patterns`` set of escaped values, a ``replacer`` and an
    ``_adaptations`` method. Where something is missing, tokens are still masked through the public
    ``mask_secret``, but never unregistered (the masker then grows with each renewal)."""
    return _inspect_masker()[1]


def _inspect_masker() -> tuple[Any, str | None]:
    """(Airflow's masker, ``None``) where it has the internals used here, else (``None``, what is missing)."""
    for module, accessor in _MASKER_ACCESSORS:
        try:
            masker = getattr(importlib.import_module(module), accessor)()
        except (ImportError, AttributeError):
            continue
        missing = [
            what
            for what, ok in (
                ("patterns (a set)", isinstance(getattr(masker, "patterns", None), set)),
                ("replacer", hasattr(masker, "replacer")),
                ("_adaptations()", callable(getattr(masker, "_adaptations", None))),
            )
            if not ok
        ]
        if missing:
            return None, f"{type(masker).__qualname__} has no " + ", ".join(missing)
        return masker, None
    return None, "no masker accessor at " + ", ".join(f"{m}.{a}" for m, a in _MASKER_ACCESSORS)


def _masked_already(secret: str) -> bool:
    """Whether Airflow's masker already holds ``secret``'s pattern (registered by someone else)."""
    masker = _airflow_masker()
    return masker is not None and re.escape(secret) in masker.patterns


def _drop_patterns(secret: str) -> bool:
    """Remove a token's patterns from Airflow's masker, without recompiling its regex (see
    :func:`_recompile`); whether any was there. It has no public way to remove a value: this reaches into its
    patterns, and does nothing (the value stays masked) where they are not what it expects."""
    values = [secret]
    for value in redacted_values(secret):
        if value in _extra_needs:
            _extra_needs[value] -= 1
            if not _extra_needs[value]:  # the last token that needed it: it goes too
                del _extra_needs[value]
                values.append(value)
    masker = _airflow_masker()
    if masker is None:
        return False
    patterns = masker.patterns
    removed = False
    for adapted in (adapted for value in values for adapted in masker._adaptations(value)):
        if isinstance(adapted, str) and adapted:
            pattern = re.escape(adapted)
            if pattern in patterns:
                patterns.discard(pattern)
                removed = True
    return removed


def _recompile() -> None:
    """Rebuild the masker's regex from its patterns, as its own ``add_mask`` does (until then, what was
    dropped is still masked: only ever too much)."""
    masker = _airflow_masker()
    if masker is not None:
        patterns = masker.patterns
        masker.replacer = re.compile("|".join(patterns)) if patterns else None


def _airflow_masker() -> Any:
    """Airflow's process-wide masker (the one ``mask_secret`` fills) where this version keeps it with the
    internals used here; ``None`` otherwise, with a warning once per process: registering then degrades to the
    public ``mask_secret`` alone (tokens stay masked, and are never removed)."""
    masker, problem = _inspect_masker()
    if masker is not None:
        return masker
    if "internals" not in _warned:
        _warned.add("internals")
        log.warning(
            "This Airflow's secrets masker is not what the Deyel provider expects (%s): tokens are masked "
            "with mask_secret but never unregistered, so the masker grows with each token renewal",
            problem,
        )
    return None
