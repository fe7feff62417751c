"""What the provider registers with Airflow's secrets masker, kept bounded in a long-lived process.

Airflow's masker keeps one regex of every value ever registered and recompiles it at each registration; it
runs over every log line. A triggerer or a worker that lives for weeks and registers each renewed token
would make every log line (and so every request) slower with each renewal: measured, 50 renewals made the
50th request cost 300 ms against 25 ms for the first. So:

- a JWT-shaped token (Deyel's are RS256 JWTs) is not registered when Airflow's log pipeline already replaces
  every ``eyJ...`` string by ``eyJ***`` (its ``redact_jwt`` processor). That is checked by running the
  processor over a sample line, not by version: early Airflow 3 releases masked a value only when it
  *started* with ``eyJ``, which would leave a token inside a message in clear;
- any other token (an opaque one, a refresh token, or a JWT on such an Airflow) is registered, and only the
  newest :data:`MAX_REGISTERED` of them stay registered: the oldest is removed from the masker when one more
  comes. Renewals come once a day (``expires_in`` 86400), so a removed token expired days ago.

The provider's own :class:`~deyel_provider.redact.Redactor` still redacts this connection's recent tokens from
every text built from a server answer, whatever is registered here.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import cache
from typing import Any

from airflow.sdk.log import mask_secret

log = logging.getLogger(__name__)

#: Opaque tokens kept registered with Airflow's masker at once (per process).
MAX_REGISTERED = 8
#: A whole compact JWS: three base64url parts, the header starting with ``{"`` (``eyJ``).
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
#: Where Airflow's log pipeline keeps its JWT processor (task SDK, then core: the triggerer).
_JWT_PROCESSOR_MODULES = ("airflow.sdk._shared.logging.structlog", "airflow._shared.logging.structlog")
_SAMPLE_JWT = "eyJhbGciOiJub25lIn0.eyJzdWIiOi-_kZXllbCJ9.c2ln-_bmF0dXJl"

_registered: OrderedDict[str, None] = OrderedDict()
_guard = threading.Lock()


@cache
def airflow_masks_jwts() -> bool:
    """Whether this Airflow's log pipeline masks a JWT anywhere in a log line (checked once per process)."""
    for name in _JWT_PROCESSOR_MODULES:
        try:
            processor = getattr(importlib.import_module(name), "redact_jwt", None)
        except ImportError:
            continue
        if processor is not None:
            return masks_embedded_jwts(processor)
    return False


def masks_embedded_jwts(processor: Callable[..., Any]) -> bool:
    """Whether a structlog processor removes every piece of a JWT that sits inside a log message."""
    try:
        event = processor(None, "info", {"event": f"Bearer {_SAMPLE_JWT} sent"})
        masked = str(event.get("event", ""))
    except Exception:  # a changed processor signature: do not rely on it
        return False
    # Every piece of the token must be gone, not only its start (nor up to its first "-").
    return not any(_SAMPLE_JWT[i : i + 6] in masked for i in range(3, len(_SAMPLE_JWT) - 5))


def is_jwt(secret: str) -> bool:
    return JWT_SHAPE.fullmatch(secret) is not None


def register_token(secret: str) -> None:
    """Make sure ``secret`` (an access or refresh token) is masked in Airflow's logs, keeping the masker
    bounded: JWTs by Airflow's own pattern where it has one, others registered, the newest few only."""
    if not secret or (is_jwt(secret) and airflow_masks_jwts()):
        return
    with _guard:
        if secret in _registered:
            _registered.move_to_end(secret)
            return
        mask_secret(secret)
        _registered[secret] = None
        while len(_registered) > MAX_REGISTERED:
            oldest, _ = _registered.popitem(last=False)
            _unregister(oldest)


def registered_count() -> int:
    """Tokens this process keeps registered with Airflow's masker (for tests and benchmarks)."""
    with _guard:
        return len(_registered)


def forget_all() -> None:
    """Forget what was registered (tests reset Airflow's masker between them)."""
    with _guard:
        _registered.clear()


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
    try:
        from airflow.sdk.log import _secrets_masker
    except ImportError:
        return None
    return _secrets_masker()
