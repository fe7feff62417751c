"""Issuing, registering, checking and revoking the emulator's access and refresh tokens."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

# The docs' sample token carries this permissions string; clients must treat it as an opaque JSON string.
PERMISSIONS = json.dumps(
    {
        "dtValidity": "Jun 2, 2022, 10:04:50 AM",
        "lsPermissions": [{"idApplication": "DEYEL", "cdPermission": "USUARIOFINAL"}],
    },
    separators=(",", ":"),
)


_SIGNING_KEY: rsa.RSAPrivateKey | None = None
_SIGNING_KEY_LOCK = threading.Lock()


def _signing_key() -> rsa.RSAPrivateKey:
    """The RS256 key of this process's emulators, made when the first token is signed.

    Generating a 2048-bit key costs 50 to 150 ms of CPU, more than starting the rest of an emulator: tests
    and benchmarks that start one per example paid it hundreds of times. One key per process changes
    nothing a client sees: no route publishes the key, every token differs (its ``jti``), and an emulator
    accepts only the exact tokens it issued (:meth:`TokenAuthority.check`), so another emulator's tokens
    are still refused, as after a real server restart (a new process makes a new key).
    """
    global _SIGNING_KEY
    with _SIGNING_KEY_LOCK:
        if _SIGNING_KEY is None:
            _SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _SIGNING_KEY


@dataclass
class IssuedToken:
    token: str
    jti: str
    sub: str
    grant_type: str
    expires_at: float
    revoked: bool = False
    forced_expired: bool = False

    def is_active(self, now: float) -> bool:
        return not self.revoked and not self.forced_expired and now < self.expires_at


@dataclass(frozen=True)
class RefreshGrant:
    client_id: str
    username: str


class TokenAuthority:
    """Signs RS256 JWTs shaped like Deyel's and remembers every one, so tokens can be revoked or expired."""

    def __init__(self, ttl: int) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._by_token: dict[str, IssuedToken] = {}
        self._refresh: dict[str, RefreshGrant] = {}
        # Revoked refresh tokens stay listed so leak checks still see every token ever handed out.
        self._revoked_refresh: set[str] = set()
        self._session_number = 0

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return _signing_key().public_key()

    def issue(self, sub: str, grant_type: str) -> IssuedToken:
        now = time.time()
        with self._lock:
            self._session_number += 1
            session_number = self._session_number
        iat = int(now)
        jti = str(uuid.uuid4())
        claims = {
            "iss": "Deyel",
            "sub": sub,
            "exp": iat + self._ttl,
            "iat": iat,
            "jti": jti,
            "cdOrgUnit": "0000000001",
            "grant_type": grant_type,
            "company": "CST",
            "nuSecHidden": session_number,
            "idDataBaseSession": f"{sub}*{session_number}",
            "permissions": PERMISSIONS,
        }
        token = jwt.encode(claims, _signing_key(), algorithm="RS256", headers={"kid": "k1", "typ": None})
        # The float expiry keeps short TTLs exact even though the exp claim is whole seconds.
        issued = IssuedToken(token=token, jti=jti, sub=sub, grant_type=grant_type, expires_at=now + self._ttl)
        with self._lock:
            self._by_token[token] = issued
        return issued

    def new_refresh_token(self, client_id: str, username: str) -> str:
        refresh = secrets.token_urlsafe(32)
        with self._lock:
            self._refresh[refresh] = RefreshGrant(client_id=client_id, username=username)
        return refresh

    def refresh_grant(self, refresh_token: str) -> RefreshGrant | None:
        with self._lock:
            if refresh_token in self._revoked_refresh:
                return None
            return self._refresh.get(refresh_token)

    def check(self, token: str) -> bool:
        """True when the token was issued here and is neither revoked nor expired.

        Looking the exact string up is stricter than verifying the signature: a token is accepted only if
        this emulator issued it.
        """
        with self._lock:
            issued = self._by_token.get(token)
            return issued is not None and issued.is_active(time.time())

    def revoke(self, token: str | None = None) -> int:
        """Revoke one access or refresh token, or every access token when ``token`` is None."""
        with self._lock:
            if token is None:
                count = 0
                for issued in self._by_token.values():
                    if not issued.revoked:
                        issued.revoked = True
                        count += 1
                return count
            one = self._by_token.get(token)
            if one is not None:
                was_active = not one.revoked
                one.revoked = True
                return int(was_active)
            if token in self._refresh and token not in self._revoked_refresh:
                self._revoked_refresh.add(token)
                return 1
            return 0

    def expire(self, token: str) -> bool:
        with self._lock:
            issued = self._by_token.get(token)
            if issued is None:
                return False
            issued.forced_expired = True
            return True

    def active_count(self) -> int:
        now = time.time()
        with self._lock:
            return sum(1 for issued in self._by_token.values() if issued.is_active(now))

    def access_tokens(self) -> list[str]:
        with self._lock:
            return list(self._by_token)

    def refresh_tokens(self) -> list[str]:
        with self._lock:
            return list(self._refresh)
