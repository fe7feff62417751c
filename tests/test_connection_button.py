"""The UI's Test button (``DeyelHook.test_connection``) checks what tasks will use (issue 27).

A token, then one GET with it through the API prefix: a missing or wrong prefix is red with the fix named;
a refused secret is not called an unknown client unless the server says so; https against a plain-http port
is not called a certificate problem; the random id Airflow tests a copy under is never shown.
"""

from __future__ import annotations

import pytest

from deyel_provider.emulator import run_emulator
from deyel_provider.hooks.deyel import DeyelHook

NOT_FOUND_BODY = {"errors": [{"message": "Form 'CRM_ACCOUNT' not found", "attribute-name": "form"}]}


@pytest.fixture
def prefixed_emulator():
    """A server whose API lives under a context root, as many Deyel deployments do."""
    with run_emulator(records=5, api_prefix="/DeyelWeb/api") as running:
        yield running


def test_a_missing_api_prefix_is_red_with_the_prefix_to_set(prefixed_emulator, deyel_conn):
    deyel_conn(url=prefixed_emulator.url)
    ok, message = DeyelHook().test_connection()
    assert not ok, message  # the old button said "Connected ... token obtained" here
    assert f"GET {prefixed_emulator.url}/forms/CRM_ACCOUNT/instances answered 404" in message
    assert "the API prefix is probably missing; set api_prefix to '/DeyelWeb/api'" in message
    assert prefixed_emulator.stats()["token_requests"] == 1


def test_a_wrong_api_prefix_is_red_with_the_one_that_answers(prefixed_emulator, deyel_conn):
    deyel_conn(url=prefixed_emulator.url, extra={"api_prefix": "/rest"})
    ok, message = DeyelHook().test_connection()
    assert not ok
    assert "probably wrong (api_prefix is '/rest'); set api_prefix to '/DeyelWeb/api'" in message


def test_a_prefix_no_candidate_finds_points_to_the_probe(deyel_conn):
    with run_emulator(records=5, api_prefix="/tenant7/services") as emulator:
        deyel_conn(url=emulator.url)
        ok, message = DeyelHook().test_connection()
    assert not ok
    assert "the API prefix is probably missing" in message and "deyel-probe" in message


def test_the_right_prefix_is_green_after_one_get(prefixed_emulator, deyel_conn):
    deyel_conn(url=prefixed_emulator.url, extra={"api_prefix": "/DeyelWeb/api"})
    ok, message = DeyelHook().test_connection()
    assert ok, message
    assert "GET /DeyelWeb/api/forms/CRM_ACCOUNT/instances answered a list of CRM_ACCOUNT instances" in message
    stats = prefixed_emulator.stats()
    assert (stats["token_requests"], stats["api_requests"]) == (1, 1)


def test_a_web_page_answering_every_path_is_not_the_api(emulator, deyel_conn):
    page = {"action": "status", "route": "data", "status": 200, "count": 1}
    emulator.set_faults([{**page, "raw_body": "<html>app</html>", "headers": {"Content-Type": "text/html"}}])
    ok, message = DeyelHook().test_connection()
    assert not ok
    assert "did not answer like Deyel's API: the API prefix is probably missing" in message


def test_the_test_form_must_exist_when_named(emulator, deyel_conn):
    deyel_conn(extra={"test_form": "NO_SUCH_FORM"})
    ok, message = DeyelHook().test_connection()
    assert not ok
    assert "the API has no form 'NO_SUCH_FORM' (the test_form extra)" in message
    assert "prefix" not in message.split("(the test_form extra)")[0]


def test_the_example_form_missing_still_proves_the_prefix(emulator, deyel_conn):
    emulator.set_faults(
        [{"action": "status", "route": "data", "status": 404, "body": NOT_FOUND_BODY, "count": 1}]
    )
    ok, message = DeyelHook().test_connection()
    assert ok, message
    assert "the API answers at /forms/CRM_ACCOUNT/instances (CRM_ACCOUNT has no such form" in message
    assert "set the test_form extra" in message


def test_a_token_the_api_refuses_is_red(emulator, deyel_conn):
    emulator.set_faults([{"action": "revoke", "route": "data", "count": 1}])
    ok, message = DeyelHook().test_connection()
    assert not ok
    assert "but the API refused it" in message and "401" in message


def test_a_refused_secret_is_not_called_an_unknown_client(emulator, deyel_conn):
    deyel_conn(password="not-the-secret")
    ok, message = DeyelHook().test_connection()
    assert not ok
    # The server's own words, and what they cannot tell apart (Deyel documents this one refusal).
    assert "Invalid client_id" in message
    assert "for an unknown Client ID and for a bad Client Secret alike: check both" in message
    assert "not-the-secret" not in message


def test_a_refusal_that_names_the_secret_gets_no_hint(emulator, deyel_conn):
    body = {"error": "invalid_client", "error_description": "Bad client secret"}
    emulator.set_faults([{"action": "status", "route": "token", "status": 401, "body": body, "count": 1}])
    ok, message = DeyelHook().test_connection()
    assert not ok
    assert "Bad client secret" in message and "alike" not in message


def test_https_against_a_plain_http_port_says_plain_http(emulator, deyel_conn):
    deyel_conn(url=emulator.url.replace("http://", "https://"))
    ok, message = DeyelHook().test_connection()
    assert not ok
    assert "this port speaks plain HTTP, not TLS" in message
    assert "TLS verification failed" not in message and "certificate or set" not in message


def test_the_random_id_of_airflows_test_copy_is_never_shown(emulator, deyel_conn):
    # Airflow's Test button tests a copy named get_random_string(), exported as AIRFLOW_CONN_<ID>.
    deyel_conn("aB3dE6gH", password="not-the-secret")
    ok, message = DeyelHook("aB3dE6gH").test_connection()
    assert not ok and "Invalid client_id" in message
    assert "aB3dE6gH" not in message
    deyel_conn("aB3dE6gH", extra={"timeout": "soon"})
    ok, message = DeyelHook("aB3dE6gH").test_connection()
    assert not ok and message.startswith("this connection: extra field 'timeout'")


def test_the_users_own_id_is_named(emulator, deyel_conn):
    deyel_conn("deyel_crm", password="not-the-secret")
    ok, message = DeyelHook("deyel_crm").test_connection()
    assert not ok
    assert "[connection 'deyel_crm']" in message
