"""The access token as a small immutable value that knows when it expires."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from deyel_provider.exceptions import DeyelBadResponseError

#: What an access token may be made of to travel in a header: visible ASCII, no blank (RFC 6750 is stricter).
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")

#: Lifetime assumed when the server gives neither ``expires_in`` nor a readable JWT ``exp``.
FALLBACK_LIFETIME = 300.0
#: Longest lifetime believed (a year): anything longer is a broken or hostile server, and would overflow
#: the caches' expiry arithmetic.
MAX_LIFETIME = 365 * 86400.0


@dataclass(frozen=True)
class DeyelToken:
    """An access token (and, for the password grant, its refresh token); secrets are kept out of ``repr``."""

    access_token: str = field(repr=False)
    expires_at: float
    issued_at: float
    refresh_token: str | None = field(default=None, repr=False)

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.issued_at

    def refresh_at(self, margin: float) -> float:
        """When to renew: ``margin`` seconds before expiry, but never earlier than half the lifetime."""
        return self.expires_at - min(margin, self.lifetime / 2)

    def is_fresh(self, margin: float, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.refresh_at(margin)

    def is_valid(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires_at

    @classmethod
    def from_response(cls, body: Any, *, now: float | None = None) -> DeyelToken:
        """Build a token from a token-endpoint success body (expiry: ``expires_in``, else the JWT ``exp``)."""
        now = time.time() if now is None else now
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise DeyelBadResponseError("the token endpoint answered without an access_token")
        access_token = body["access_token"]
        if not _TOKEN_CHARS.fullmatch(access_token):
            # It goes into an HTTP header: an empty value or one with blanks or control characters cannot.
            raise DeyelBadResponseError("the token endpoint answered with an access_token that is not usable")
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise DeyelBadResponseError(
                f"the token endpoint returned an unsupported token_type {str(token_type)[:40]!r}"
            )
        refresh_token = body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None
        lifetime = _positive_number(body.get("expires_in"))
        if lifetime is not None and not math.isfinite(lifetime):
            raise DeyelBadResponseError("the token endpoint answered with an expires_in that is not finite")
        if lifetime is not None:
            lifetime = min(lifetime, MAX_LIFETIME)
        expires_at = now + lifetime if lifetime is not None else _jwt_exp(access_token)
        if expires_at is not None:
            # An infinite JWT exp is no expiry at all (fallback lifetime); a far one is capped.
            expires_at = min(expires_at, now + MAX_LIFETIME) if math.isfinite(expires_at) else None
        if expires_at is None or expires_at <= now:
            expires_at = now + FALLBACK_LIFETIME
        return cls(access_token, expires_at=expires_at, issued_at=now, refresh_token=refresh_token)


def _positive_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _jwt_exp(access_token: str) -> float | None:
    """The ``exp`` claim, read without verifying the signature: only used to schedule a renewal."""
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return _positive_number(claims.get("exp"))
