"""One URL parser decides where the token goes (urllib3's, the one requests connects with): URLs that parsers
read differently are refused, and a next link or endpoint naming another host is never fetched."""

from __future__ import annotations

import pytest

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.servers import recording_server

INSTANCES = "/forms/CRM_ACCOUNT/instances"


def _hostport(url: str) -> str:
    return url.split("://", 1)[1]


def test_a_backslash_endpoint_is_refused_before_any_request(emulator, deyel_conn):
    with recording_server(status=200) as (other, seen):
        # urlsplit reads the host after "@" (the emulator), requests connects to the one before "\".
        endpoint = f"{other}\\@{_hostport(emulator.url)}{INSTANCES}"
        with pytest.raises(DeyelConfigError, match="backslash or user-info"):
            DeyelHook().request("GET", endpoint)
    assert seen == []
    assert emulator.stats()["token_requests"] == 0


def test_an_endpoint_with_user_info_is_refused(emulator, deyel_conn):
    with pytest.raises(DeyelConfigError, match="backslash or user-info"):
        DeyelHook().request("GET", f"http://someone@{_hostport(emulator.url)}{INSTANCES}")
    assert emulator.stats()["token_requests"] == 0


def test_a_next_link_to_another_host_is_never_fetched(emulator, deyel_conn):
    with recording_server(status=200) as (other, seen):
        next_url = f"{other}\\@{_hostport(emulator.url)}{INSTANCES}?page=2"
        emulator.set_faults(
            [
                {
                    "route": "data",
                    "action": "status",
                    "status": 200,
                    "count": 1,
                    # One instance of two asked for, no total: the reader checks the next page.
                    "raw_body": '[{"idObjectValue": "1", "dtLastUpdate": "1767225600000"}]',
                    "headers": {"Link": f'<{next_url}>; rel="next"'},
                }
            ]
        )
        deyel_conn(extra={"paging": "link", "page_size": 2})
        with pytest.raises(DeyelConfigError, match="backslash or user-info"):
            list(DeyelHook().iter_instances("CRM_ACCOUNT"))
    assert seen == []  # neither the token nor the request went there


def test_a_host_with_user_info_or_a_backslash_is_a_config_error(emulator, deyel_conn):
    for host in (
        f"http://DEYELBOT:x@{_hostport(emulator.url)}",
        f"http://evil.example\\@{_hostport(emulator.url)}",
    ):
        deyel_conn(url=host)
        with pytest.raises(DeyelConfigError, match="without user-info or backslashes"):
            DeyelHook().config  # noqa: B018
