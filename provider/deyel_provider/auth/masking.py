"""What the provider registers with Airflow's secrets masker, kept bounded in a long-lived process.

Airflow's masker keeps one regex of every value ever registered and recompiles it at each registration; it
runs over every log line. A triggerer or a worker that lives for weeks and registers each renewed token
would make every log line (and so every request) slower with each renewal: measured, 50 renewals made the
50th request cost 300 ms against 25 ms for the first. So every token (access or refresh, JWT or opaque) is
registered, and only the newest :data:`MAX_REGISTERED` of them stay registered: the oldest is removed from
the masker when one more comes. Renewals come once a day (``expires_in`` 86400), so a removed token expired
days ago. JWTs are registered too, although Airflow's log pipeline replaces ``eyJ...`` strings in messages
(``redact_jwt``): that processor does not reach a token inside a logged exception.

The provider's own :class:`~deyel_provider.redact.Redactor` still redacts this connection's recent tokens from
every text built from a server answer, whatever is registered here.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from collections import OrderedDict
from typing import Any

from deyel_provider.compat import mask_secret

log = logging.getLogger(__name__)

#: Tokens kept registered with Airflow's masker at once (per process).
MAX_REGISTERED = 8

_registered: OrderedDict[str, None] = OrderedDict()
_guard = threading.Lock()


def register_token(secret: str) -> None:
    """Make sure ``secret`` (an access or refresh token) is masked in Airflow's logs, keeping the masker
    bounded: the newest few stay registered."""
    if not secret:
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
