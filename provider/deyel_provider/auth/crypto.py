"""Encryption of tokens at rest and in XCom, with keys derived from the client secret (HKDF + Fernet).

Whoever lacks the client secret can neither read an entry nor forge one the provider would accept: the key
comes from the secret, and each plaintext names the cache key it was written for, so an entry copied under
another key (a foreign entry) is refused too.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from deyel_provider.auth.token import DeyelToken

#: What a derived key is for: the shared cache and XCom never share a key.
CACHE_PURPOSE = "token-cache"
XCOM_PURPOSE = "xcom-token"


class UnreadableTokenError(ValueError):
    """The bytes are not a token sealed with this credential's key (corrupted, foreign or tampered)."""


def derive_fernet(client_secret: str, salt_material: str, purpose: str) -> Fernet:
    """A Fernet key from the client secret: rotating the secret makes every old entry unreadable."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=hashlib.sha256(salt_material.encode()).digest(),
        info=f"airflow-provider-deyel/{purpose}/v1".encode(),
    )
    return Fernet(base64.urlsafe_b64encode(hkdf.derive(client_secret.encode())))


class TokenSealer:
    """Turns a token into ciphertext bound to one cache key, and back.

    :param client_secret: the secret the key is derived from.
    :param key: the credential's cache key (also the HKDF salt and the binding checked on open).
    :param purpose: ``CACHE_PURPOSE`` or ``XCOM_PURPOSE``.
    """

    def __init__(self, client_secret: str, key: str, purpose: str) -> None:
        self._fernet = derive_fernet(client_secret, key, purpose)
        self._key = key

    def __repr__(self) -> str:
        return "TokenSealer()"

    def seal(self, token: DeyelToken) -> bytes:
        plain: dict[str, Any] = {
            "k": self._key,
            "a": token.access_token,
            "r": token.refresh_token,
            "e": token.expires_at,
            "i": token.issued_at,
        }
        return self._fernet.encrypt(json.dumps(plain, separators=(",", ":")).encode())

    def open(self, data: bytes) -> DeyelToken:
        try:
            plain = json.loads(self._fernet.decrypt(data))
            if plain["k"] != self._key:
                raise UnreadableTokenError("the entry was written for another credential")
            return DeyelToken(
                plain["a"],
                expires_at=float(plain["e"]),
                issued_at=float(plain["i"]),
                refresh_token=plain["r"],
            )
        except UnreadableTokenError:
            raise
        except (InvalidToken, ValueError, TypeError, KeyError):
            raise UnreadableTokenError(
                "the entry is corrupted or was not sealed with this credential's key"
            ) from None
