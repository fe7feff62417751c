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

What bounds the set is how many tokens can be unexpired at once: per credential, the current pair and the
previous one (a token is renewed no earlier than half its lifetime), plus one per forced renewal (a 401).
A server that forces a renewal at every request (or the masker benchmark, ``cache=none``) would still grow
it, so at most :data:`MAX_REGISTERED` stay registered: past it the one closest to expiry is removed, with a
warning (once per process). JWTs are registered too, although Airflow's log pipeline replaces ``eyJ...``
strings in messages (``redact_jwt``): that processor does not reach a token inside a logged exception.

The provider's own :class:`~deyel_provider.redact.Redactor` still redacts this connection's recent tokens from
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

#: Unexpired tokens kept registered with Airflow's masker at once (per process): the bound for a server
#: that hands out tokens faster than they expire. python -m bench masker measures the cost.
MAX_REGISTERED = 16

_registered: dict[str, float] = {}  # token -> when it may be unregistered (epoch seconds)
_guard = threading.Lock()
_warned = False


def register_token(secret: str, expires_at: float, *, now: float | None = None) -> None:
    """Make sure ``secret`` (an access or refresh token) is masked in Airflow's logs until ``expires_at``
    (epoch seconds), keeping the masker bounded: what expired before ``now`` is unregistered."""
    if not secret:
        return
    now = time.time() if now is None else now
    with _guard:
        for gone in [token for token, until in _registered.items() if until <= now and token != secret]:
            del _registered[gone]
            _unregister(gone)
        if secret in _registered:
            _registered[secret] = max(_registered[secret], expires_at)
            return
        if _masked_already(secret):
            # Registered by someone else (the hook registers the client secret and the password): a server
            # answering one of them as a token must not make us unregister it once that "token" expires.
            return
        mask_secret(secret)
        _registered[secret] = expires_at
        while len(_registered) > MAX_REGISTERED:
            _unregister_soonest()


def _unregister_soonest() -> None:
    global _warned
    soonest = min(_registered, key=_registered.__getitem__)
    del _registered[soonest]
    _unregister(soonest)
    if not _warned:
        _warned = True
        log.warning(
            "More than %d Deyel tokens of this process are unexpired at once (a server that forces a renewal "
            "at each request?): the one closest to expiry is no longer registered with Airflow's secrets "
            "masker (the provider's own messages still redact it)",
            MAX_REGISTERED,
        )


def registered_count() -> int:
    """Tokens this process keeps registered with Airflow's masker (for tests and benchmarks)."""
    with _guard:
        return len(_registered)


def forget_all() -> None:
    """Forget what was registered (tests reset Airflow's masker between them)."""
    global _warned
    with _guard:
        _registered.clear()
        _warned = False


def _masked_already(secret: str) -> bool:
    """Whether Airflow's masker already holds ``secret``'s pattern (registered by someone else)."""
    patterns = getattr(_airflow_masker(), "patterns", None)
    return isinstance(patterns, set) and re.escape(secret) in patterns


def _unregister(secret: str) -> None:
    """Remove a token from Airflow's masker. It has no public way to do so: this reaches into its patterns,
    and does nothing (the value stays masked) where they are not what it expects."""
    masker = _airflow_masker()
    patterns = getattr(masker, "patterns", None)
    if not isinstance(patterns, set):
        return
    adaptations = getattr(masker, "_adaptations", None)
    values = list(adaptations(secret)) if callable(adaptations) else [secret]
    removed = False
    for value in values:
        if isinstance(value, str) and value:
            pattern = re.escape(value)
            if pattern in patterns:
                patterns.discard(pattern)
                removed = True
    if removed:
        masker.replacer = re.compile("|".join(patterns)) if patterns else None


def _airflow_masker() -> Any:
    """Airflow's process-wide masker (the one ``mask_secret`` fills), wherever this version keeps it."""
    for module in (
        "airflow.sdk.log",  # 3.3
        "airflow.sdk._shared.secrets_masker",  # 3.1, 3.2
        "airflow.sdk.execution_time.secrets_masker",  # 3.0
    ):
        try:
            return importlib.import_module(module)._secrets_masker()
        except (ImportError, AttributeError):
            continue
    return None
