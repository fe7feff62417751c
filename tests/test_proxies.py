"""The environment's proxy variables still route a connection's calls, read once per session.

requests scans the whole environment for them on every call (four passes: 0.35 ms of a one-instance GET's
2.0 ms of client CPU); the session reads them once for its connection's origin. The routing tests pass on
the old code too: they are what the cache must keep.
"""

from __future__ import annotations

import pytest
import requests.utils

from deyel_provider.exceptions import DeyelError
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.servers import recording_server

INSTANCES = "/forms/CRM_ACCOUNT/instances"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def no_proxy_environment(monkeypatch):
    """Whatever this machine's environment says about proxies is not part of the test."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)  # urllib ignores HTTP_PROXY in a CGI environment
    return monkeypatch


def test_http_proxy_carries_the_calls_and_no_proxy_sends_them_direct(
    emulator, deyel_conn, no_proxy_environment
):
    deyel_conn(extra={"auth_failure_ttl": 0})  # the proxy's 401 must not be remembered for the direct try
    with recording_server(status=401) as (proxy, seen):
        no_proxy_environment.setenv("HTTP_PROXY", proxy)
        with pytest.raises(DeyelError):
            DeyelHook().request("GET", INSTANCES, params={"pageSize": 1})
        assert len(seen) == 1 and emulator.stats()["token_requests"] == 0  # the token POST went to the proxy
        no_proxy_environment.setenv("NO_PROXY", "127.0.0.1")
        hook = DeyelHook()
        assert hook.request("GET", INSTANCES, params={"pageSize": 1}).ok
        hook.close()
    assert len(seen) == 1
    assert (emulator.stats()["token_requests"], emulator.stats()["api_requests"]) == (1, 1)


def test_the_proxy_environment_is_read_once_per_session_not_per_call(
    emulator, deyel_conn, no_proxy_environment
):
    reads: list[str] = []
    real = requests.utils.getproxies
    no_proxy_environment.setattr(requests.utils, "getproxies", lambda: reads.append("read") or real())
    hook = DeyelHook()
    for n in range(20):
        if n == 10:  # as documented: a session keeps what it read (the next hook reads this)
            no_proxy_environment.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        assert hook.request("GET", INSTANCES, params={"pageSize": 1}).ok
    hook.close()
    assert emulator.stats()["api_requests"] == 20
    # The API session's one origin once (the token's session is another, with its own read); the old
    # code read the environment on each of the 21 calls.
    assert len(reads) == 2, reads
