"""Remembering, for a short while, that the token endpoint refused a credential (a negative cache).

A wrong Client Secret fails every task that uses the connection; without this, each of them (and each of their
retries) would POST the same bad credentials again, which can lock the account or trip the server's abuse
protection. The refusal is kept as a small marker file so that every task process of the host sees it (Airflow
runs each task in a process of its own): per user, in ``$DEYEL_PROVIDER_STATE_DIR`` or the temp directory,
in a 0700 directory, written atomically, 0600. The file name is a hash and the file holds only what the error
message already says (status, the server's message, connection id), never a secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from deyel_provider.exceptions import DeyelAuthError

log = logging.getLogger(__name__)

STATE_DIR_ENV = "DEYEL_PROVIDER_STATE_DIR"


def refusal_key(credential_key: str, form: dict[str, str]) -> str:
    """One key per credential and grant form (a password grant's user is part of what was refused).

    The user password is left out: it is already in ``credential_key`` through scrypt, and a fast hash of it
    in a file name would let anyone test guesses of it offline.
    """
    public = {name: value for name, value in form.items() if name != "password"}
    material = credential_key + "\n" + urlencode(sorted(public.items()))
    return "refused-" + hashlib.sha256(material.encode()).hexdigest()[:40]


def _directory() -> Path | None:
    """The per-user marker directory, or None when it cannot be trusted (not ours, a symlink, unwritable)."""
    base = Path(os.environ.get(STATE_DIR_ENV) or tempfile.gettempdir())
    uid = os.getuid() if hasattr(os, "getuid") else None
    directory = base / f"deyel-provider-{uid if uid is not None else 'user'}"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.lstat()
    except OSError:
        return None
    if directory.is_symlink() or (uid is not None and info.st_uid != uid) or info.st_mode & 0o077:
        # Someone else could plant or read markers there: remembering is an optimisation, so skip it.
        return None
    return directory


def check(key: str, ttl: float) -> None:
    """Raise the remembered refusal again if it is younger than ``ttl`` seconds (no request is made)."""
    if ttl <= 0:
        return
    directory = _directory()
    if directory is None:
        return
    try:
        raw = json.loads((directory / key).read_text())
        refused_at = float(raw["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    age = time.time() - refused_at
    if not 0 <= age < ttl:
        return
    raise DeyelAuthError(
        f"{raw.get('detail')} [refused {age:.0f} s ago; the provider does not send the same credentials "
        f"again for {ttl - age:.0f} s (the 'auth_failure_ttl' extra): fix the connection]",
        status=raw.get("status"),
        method=raw.get("method"),
        path=raw.get("path"),
        errors=raw.get("errors") if isinstance(raw.get("errors"), list) else None,
    )


def remember(key: str, error: DeyelAuthError, ttl: float) -> None:
    if ttl <= 0:
        return
    directory = _directory()
    if directory is None:
        return
    record: dict[str, Any] = {
        "at": time.time(),
        "detail": error.detail,
        "status": error.status,
        "method": error.method,
        "path": error.path,
        "errors": error.errors,
    }
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
        os.replace(tmp, directory / key)
    except (OSError, TypeError, ValueError) as exc:
        log.debug("Could not remember the refused credentials: %s", type(exc).__name__)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def forget(key: str) -> None:
    """The credentials were accepted: drop any refusal still remembered."""
    directory = _directory()
    if directory is not None:
        with contextlib.suppress(OSError):
            (directory / key).unlink()
