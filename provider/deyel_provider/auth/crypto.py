"""Encryption of tokens at rest and in XCom, with keys derived from the client secret (scrypt, HKDF, Fernet).

Whoever lacks the client secret can neither read an entry nor forge one the provider would accept: the key
comes from the secret, and each plaintext names the cache key it was written for, so an entry copied under
another key (a foreign entry) is refused too.

In Deyel the client secret is a user's password, so nothing stored or logged may let anyone test a guessed
secret quickly: every value derived from a secret (cache key names, encryption and MAC keys) goes through
scrypt, a memory-hard KDF, computed once per process and credential and then cached.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from deyel_provider.auth.token import DeyelToken

#: What a derived key is for: the shared cache and XCom never share a key.
CACHE_PURPOSE = "token-cache"
XCOM_PURPOSE = "xcom-token"
#: MAC of a clear-text XCom token: ties it to the connection it was made for.
XCOM_CLEAR_PURPOSE = "xcom-clear-mac"
#: MAC of a stored watermark: ties it to the connection (and the key it was written under).
WATERMARK_PURPOSE = "watermark-mac"

#: scrypt cost: 2**14 * 8 * 128 bytes = 16 MiB of memory and 4 * N * r = 524,288 Salsa20/8 cores per guess
#: (about 50 ms on one core; an attacker's core tests a few dozen guesses a second at most).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1


@functools.lru_cache(maxsize=64)
def stretched(secret_material: str, salt_material: str) -> bytes:
    """scrypt of a secret, once per process for each (secret, salt): the only way from a secret to any key."""
    kdf = Scrypt(
        salt=hashlib.sha256(salt_material.encode()).digest(), length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P
    )
    return kdf.derive(secret_material.encode())


def subkey(master: bytes, purpose: str, salt_material: str = "", length: int = 32) -> bytes:
    """A key for one purpose from a stretched secret (HKDF: cheap once the scrypt is paid)."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=hashlib.sha256(salt_material.encode()).digest(),
        info=f"airflow-provider-deyel/{purpose}/v2".encode(),
    )
    return hkdf.derive(master)


def credential_name(token_url: str, client_id: str, secrets: tuple[str, ...]) -> str:
    """The cache key name of a credential: from the secrets only through scrypt, so a stored name is no
    faster an oracle for the secret than the scrypt itself."""
    master = stretched(json.dumps(list(secrets)), json.dumps([token_url, client_id]))
    return "deyel-token-" + subkey(master, "cache-key-name", length=16).hex()


def purpose_mac(client_secret: str, salt_material: str, purpose: str, fields: str) -> str:
    """A MAC of ``fields`` with a key derived from the secret for one purpose (scrypt once per process)."""
    mac_key = subkey(stretched(client_secret, salt_material), purpose, salt_material)
    return hmac.new(mac_key, fields.encode(), hashlib.sha256).hexdigest()


def clear_text_mac(client_secret: str, key: str, fields: str) -> str:
    """A MAC proving a clear-text XCom token was made with this connection's secret, for this credential."""
    return purpose_mac(client_secret, key, XCOM_CLEAR_PURPOSE, fields)


class UnreadableTokenError(ValueError):
    """The bytes are not a token sealed with this credential's key (corrupted, foreign or tampered)."""


def derive_fernet(client_secret: str, salt_material: str, purpose: str) -> Fernet:
    """A Fernet key from the client secret: rotating the secret makes every old entry unreadable."""
    key = subkey(stretched(client_secret, salt_material), purpose, salt_material)
    return Fernet(base64.urlsafe_b64encode(key))


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


def credential_key(token_url: str, client_id: str, client_secret: str, *subject: str) -> str:
    """Cache key of one credential: rotating the secret changes the key, so an old token is never served.

    Derived through scrypt (see :func:`credential_name`): key names are stored in
    Redis and as file names, and must not let anyone test a guessed secret quickly.

    :param subject: more parts that select a different token (the password grant's user and password).
    """
    return credential_name(token_url, client_id, (client_secret, *subject))
