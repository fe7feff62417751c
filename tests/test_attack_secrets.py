"""What an attacker can read offline (cache key names and entries, refusal files, XCom values) gives no fast
way to test a guessed client secret; a clear-text XCom token is accepted only by the connection it was made
for, and a forged one by nobody."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from deyel_provider.auth import crypto
from deyel_provider.auth.refusals import refusal_key
from deyel_provider.emulator import run_emulator
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.helpers import CLIENT_ID, CLIENT_SECRET

#: An optimistic time for one Salsa20/8 core (64 bytes, 8 rounds) on one modern CPU core with SIMD.
SALSA_CORE_SECONDS = 20e-9


def _hkdf(master: bytes, purpose: str, salt: str, length: int = 32) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=hashlib.sha256(salt.encode()).digest(),
        info=f"airflow-provider-deyel/{purpose}/v2".encode(),
    ).derive(master)


def _scrypt(secret: str, salt: str) -> bytes:
    """One guess's unavoidable cost: scrypt at the parameters the provider declares."""
    kdf = Scrypt(salt=hashlib.sha256(salt.encode()).digest(), length=32, n=2**14, r=8, p=1)
    return kdf.derive(secret.encode())


def test_the_declared_kdf_parameters_compute_to_at_most_100_guesses_per_second_per_core():
    """A computed bound, not a measurement: from the provider's declared scrypt parameters (crypto.SCRYPT_*)
    and an optimistic cost per Salsa20/8 core (SALSA_CORE_SECONDS), the memory and the time one guess needs.
    Lowering the declared parameters fails it; how fast this machine derives is not what it checks."""
    n, r, p = crypto.SCRYPT_N, crypto.SCRYPT_R, crypto.SCRYPT_P
    assert 128 * n * r * p >= 16 * 1024 * 1024  # memory per guess: no cheap parallel hardware
    salsa_cores = 4 * n * r * p  # scrypt's ROMix: 2N BlockMix calls of 2r Salsa20/8 cores each
    seconds_per_guess = salsa_cores * SALSA_CORE_SECONDS
    assert seconds_per_guess >= 0.010, seconds_per_guess  # <= 100 guesses per second and core


def test_stored_names_entries_and_xcom_values_need_one_scrypt_per_guess(emulator, deyel_conn, cache_dir):
    """The attacker's fastest oracle for each artefact is rebuilt here from public inputs: it matches the
    real artefacts for the right secret only, and every path from a guess to an artefact is a scrypt."""
    deyel_conn(extra={"cache": "file", "cache_dir": cache_dir})
    hook = DeyelHook()
    token = hook.get_token()
    sealed = hook.get_token_for_xcom()
    clear = hook.get_token_for_xcom(clear_text=True)
    [entry] = Path(cache_dir).glob("*.token")
    token_url = hook.config.token_url

    def name_for(guess: str) -> str:
        master = _scrypt(json.dumps([guess]), json.dumps([token_url, CLIENT_ID]))
        return "deyel-token-" + _hkdf(master, "cache-key-name", "", 16).hex()

    def opens(guess: str, name: str, purpose: str, data: bytes) -> str | None:
        key = _hkdf(_scrypt(guess, name), purpose, name)
        try:
            return json.loads(Fernet(base64.urlsafe_b64encode(key)).decrypt(data))["a"]
        except InvalidToken:
            return None

    name = name_for(CLIENT_SECRET)
    assert entry.name == f"{name}.token"  # the file (and Redis key) name: scrypt of the secret
    assert name_for("not-the-secret") != name
    assert opens(CLIENT_SECRET, name, "token-cache", entry.read_bytes()) == token
    assert opens(CLIENT_SECRET, name, "xcom-token", sealed["deyel_token"].encode()) == token
    assert opens("not-the-secret", name, "xcom-token", sealed["deyel_token"].encode()) is None
    mac_key = _hkdf(_scrypt(CLIENT_SECRET, name), "xcom-clear-mac", name)
    fields = json.dumps([clear["conn"], clear["access_token"], clear["expires_at"]])
    assert clear["mac"] == hmac.new(mac_key, fields.encode(), hashlib.sha256).hexdigest()
    # The old construction (SHA-256 of the secret) is no longer an oracle.
    hashed = hashlib.sha256(CLIENT_SECRET.encode()).hexdigest()
    fast = "deyel-token-" + hashlib.sha256(f"{token_url}\n{CLIENT_ID}\n{hashed}".encode()).hexdigest()[:32]
    assert entry.name != f"{fast}.token"


def test_refusal_file_names_carry_no_fast_hash_of_the_user_password():
    key = "deyel-token-0123"
    form = {"grant_type": "password", "username": "JPerez"}
    assert refusal_key(key, {**form, "password": "guess-1"}) == refusal_key(
        key, {**form, "password": "guess-2"}
    )


def test_a_clear_text_token_made_for_another_connection_is_refused(emulator, deyel_conn, caplog):
    value = DeyelHook().get_token_for_xcom(clear_text=True)
    assert value["conn"] == "deyel_default"
    assert DeyelHook(token=value).get_token() == value["access_token"]  # its own connection takes it
    with run_emulator(records=1) as elsewhere:
        deyel_conn("deyel_other", url=elsewhere.url)
        other = DeyelHook("deyel_other", token=value)
        assert other.request("GET", "/forms/CRM_ACCOUNT/instances/1").ok
        # B's host never saw A's token: B requested its own.
        assert elsewhere.stats()["token_requests"] == 1
        assert other.get_token() != value["access_token"]
        other.close()
    assert "was not made for connection 'deyel_other'" in caplog.text


def test_a_forged_clear_text_token_is_refused(emulator, deyel_conn):
    forged = {
        "access_token": "forged-by-someone-who-can-write-xcom",
        "expires_at": time.time() + 3600,
        "v": 1,
        "conn": "deyel_default",
        "mac": "0" * 64,
    }
    hook = DeyelHook(token=forged)
    assert hook.get_token() != forged["access_token"]
    assert emulator.stats()["token_requests"] == 1
