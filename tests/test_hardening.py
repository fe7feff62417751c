"""Hardening: TLS verification, the token never leaving the configured host, URL typos, oversized bodies."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import (
    DeyelBadResponseError,
    DeyelConfigError,
    DeyelConnectionError,
    DeyelNotFoundError,
    DeyelRequestError,
)
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.servers import recording_server

INSTANCES = "/forms/CRM_ACCOUNT/instances"


# -- TLS ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by itself, as a private CA's server would present."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deyel-emulator-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


def test_tls_is_verified_by_default_and_a_ca_bundle_makes_it_pass(deyel_conn, self_signed, caplog):
    cert, key = self_signed
    with run_emulator(records=5, ssl_certfile=cert, ssl_keyfile=key) as tls:
        assert tls.url.startswith("https://")
        deyel_conn(url=tls.url)
        with pytest.raises(DeyelConnectionError, match="TLS verification failed") as caught:
            DeyelHook().get_token()
        assert caught.value.transient is False  # a certificate does not fix itself: no retry
        assert not [r for r in caplog.records if r.name == "deyel_provider.http.retry"]
        assert tls.stats()["token_requests"] == 0

        deyel_conn(url=tls.url, extra={"ca_bundle": cert})
        hook = DeyelHook()
        assert hook.request("GET", INSTANCES + "/1").json()["idObjectValue"] == "1"
        assert tls.stats()["token_requests"] == 1
        hook.close()  # no kept-alive TLS connection left for the server's shutdown to cut


def test_the_connections_ca_bundle_and_verify_beat_requests_ca_bundle(
    deyel_conn, self_signed, monkeypatch, tmp_path
):
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's verify on every request."""
    cert, key = self_signed
    with run_emulator(records=5, ssl_certfile=cert, ssl_keyfile=key) as tls:
        # The environment trusts other CAs (not the emulator's): the connection's ca_bundle is the one used.
        other = tmp_path / "other-ca.pem"
        other.write_text(Path(certifi.where()).read_text())
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
        monkeypatch.setenv("CURL_CA_BUNDLE", str(other))
        deyel_conn(url=tls.url, extra={"ca_bundle": cert})
        hook = DeyelHook()
        assert hook.request("GET", INSTANCES + "/1").json()["idObjectValue"] == "1"
        hook.close()
        deyel_conn(url=tls.url, extra={"verify": False})
        with pytest.warns(Warning):  # urllib3's InsecureRequestWarning: verification is off, as configured
            unverified = DeyelHook()
            assert unverified.request("GET", INSTANCES + "/2").ok
        unverified.close()
        assert (tls.stats()["token_requests"], tls.stats()["api_requests"]) == (1, 2)


# -- the token stays on the configured host ------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_host_is_not_followed(emulator, deyel_conn, status):
    with recording_server(status=401) as (elsewhere, seen):
        emulator.set_faults(
            [
                {
                    "route": "data",
                    "action": "status",
                    "status": status,
                    "headers": {"Location": elsewhere + "/collect?key=abc"},
                }
            ]
        )
        with pytest.raises(DeyelRequestError, match="redirected to") as caught:
            DeyelHook().request("GET", INSTANCES)
    assert seen == []  # neither the token nor anything else went there
    assert f"{elsewhere}/collect and not followed" in str(caught.value)
    assert "abc" not in str(caught.value)  # a Location's query may carry anything
    assert caught.value.status == status
    assert emulator.stats()["token_requests"] == 1


def test_a_redirect_on_the_same_host_keeps_the_token(emulator, deyel_conn):
    emulator.set_faults(
        [
            {
                "route": "data",
                "action": "status",
                "status": 307,
                "path_contains": "/instances/1",
                "headers": {"Location": emulator.url + INSTANCES + "/2"},
            }
        ]
    )
    assert DeyelHook().request("GET", INSTANCES + "/1").json()["idObjectValue"] == "2"


def test_the_token_endpoint_does_not_follow_redirects(emulator, deyel_conn):
    with recording_server(status=200) as (elsewhere, seen):
        emulator.set_faults(
            [{"route": "token", "action": "status", "status": 307, "headers": {"Location": elsewhere}}]
        )
        with pytest.raises(DeyelRequestError, match="Temporary Redirect"):  # a capped body stays readable
            DeyelHook().get_token()
    assert seen == []  # the client secret was not sent there


# -- URLs ---------------------------------------------------------------------------------------------------


def test_a_base_url_with_a_path_typo_says_what_to_check(emulator, deyel_conn):
    deyel_conn(url=emulator.url + "/DeyelWbe")
    with pytest.raises(DeyelNotFoundError, match="check the base URL and the token path") as caught:
        DeyelHook().get_token()
    assert caught.value.path == "/DeyelWbe/oauth/token"
    assert emulator.stats()["api_requests"] == 1  # a 404 is not retried


def test_plain_http_to_a_remote_host_is_refused_unless_allowed(deyel_conn):
    deyel_conn(url="http://deyel.example.com")
    with pytest.raises(DeyelConfigError, match=r"plain http to deyel.example.com.*'allow_insecure_http'"):
        DeyelHook().config  # noqa: B018
    deyel_conn(url="http://deyel.example.com", extra={"allow_insecure_http": True})
    with pytest.warns(UserWarning, match="plain http to deyel.example.com"):
        DeyelHook().config  # noqa: B018


# -- response size ----------------------------------------------------------------------------------


def test_an_oversized_response_is_refused_without_retry(emulator, deyel_conn, caplog):
    caplog.set_level(logging.INFO)
    deyel_conn(extra={"max_response_bytes": 2000})
    hook = DeyelHook()
    assert hook.request("GET", INSTANCES + "/1").ok  # a small body passes
    with pytest.raises(
        DeyelBadResponseError, match="over the 2000 bytes allowed by the 'max_response_bytes'"
    ):
        hook.request("GET", INSTANCES, params={"pageSize": 50})
    assert emulator.stats()["api_requests"] == 2


def test_an_oversized_body_of_unknown_length_stops_being_read(emulator, deyel_conn):
    deyel_conn(extra={"max_response_bytes": 100_000})
    big = b"[" + b'"x",' * 1_000_000 + b'"x"]'  # 4 MB, chunked: no Content-Length announces it
    emulator.set_faults(
        [
            {
                "route": "data",
                "action": "status",
                "status": 200,
                "raw_body": big,
                "headers": {"Transfer-Encoding": "chunked"},
            }
        ]
    )
    with pytest.raises(DeyelBadResponseError, match="is larger, over the 100000 bytes") as caught:
        DeyelHook().request("GET", INSTANCES)
    assert caught.value.status == 200
    assert emulator.stats()["api_requests"] == 1


def test_an_oversized_token_response_is_refused(emulator, deyel_conn):
    deyel_conn(extra={"max_response_bytes": 1000})
    emulator.set_faults(
        [{"route": "token", "action": "status", "status": 200, "raw_body": "{" + " " * 5000 + "}"}]
    )
    with pytest.raises(DeyelBadResponseError, match="max_response_bytes"):
        DeyelHook().get_token()
