"""PortReuse: an emulator on a free port takes a port an earlier round's emulator had, never one of its own
round's, and none at all outside a round (the suite opens a round per test, ``_reused_emulator_ports``, and
one per property example, ``next_example``)."""

from __future__ import annotations

from deyel_provider.emulator import run_emulator
from deyel_provider.emulator.server import PORT_REUSE, PortReuse
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.helpers import next_example

HOST = "127.0.0.1"


def test_the_last_ports_bound_come_back_in_a_later_round_the_most_recent_first():
    reuse = PortReuse()
    assert reuse.claim(HOST) == 0  # no round open: the system picks
    with reuse.rounds():
        for port in range(1001, 1020):
            reuse.bound(HOST, port)
            reuse.released(HOST, port)
        assert reuse.claim(HOST) == 0  # none of this round's ports again in this round
    assert reuse.claim(HOST) == 0

    with reuse.rounds():
        claimed = [reuse.claim(HOST) for _ in range(PortReuse.LIMIT + 1)]
        assert reuse.claim("::1") == 0  # ports are offered on the host they were bound on

    # The last LIMIT bound, newest first; then the system's.
    assert claimed == [*range(1019, 1019 - PortReuse.LIMIT, -1), 0]


def test_a_port_still_listening_is_not_offered():
    reuse = PortReuse()
    with reuse.rounds():
        reuse.bound(HOST, 1001)
        reuse.released(HOST, 1001)
        reuse.bound(HOST, 1002)  # still running when the round ends
    with reuse.rounds():
        assert [reuse.claim(HOST), reuse.claim(HOST)] == [1001, 0]
    reuse.released(HOST, 1002)
    with reuse.rounds():
        assert reuse.claim(HOST) == 1002


def test_emulators_of_a_later_round_listen_where_the_earlier_rounds_did():
    with PORT_REUSE.rounds():
        with run_emulator(records=0) as first:
            pass
        with run_emulator(records=0) as second:
            assert second.url != first.url  # a URL of its own within the round
    with PORT_REUSE.rounds():
        with run_emulator(records=0) as again, run_emulator(records=0) as other:
            assert (again.url, other.url) == (second.url, first.url)
            with run_emulator(records=0) as third:
                assert third.url not in (first.url, second.url)


def test_the_next_round_offers_again_the_ports_of_the_rounds_before_and_does_nothing_outside_one():
    reuse = PortReuse()
    reuse.next_round()
    assert reuse.claim(HOST) == 0
    with reuse.rounds():
        reuse.bound(HOST, 1001)
        reuse.released(HOST, 1001)
        reuse.bound(HOST, 1002)  # still running
        assert reuse.claim(HOST) == 0
        reuse.next_round()
        assert [reuse.claim(HOST), reuse.claim(HOST)] == [1001, 0]


def test_an_example_after_next_example_gets_an_earlier_examples_port_and_none_of_its_tokens(deyel_conn):
    """Two property examples in one test: the second's emulator listens where the first's did, and its
    client asks it for a token of its own (one POST, no request refused) instead of sending the first
    server's token, which the file cache and the process cache held."""
    urls, stats = [], []
    for _ in range(2):
        next_example(deyel_conn)
        with run_emulator(records=3) as emulator:
            deyel_conn(url=emulator.url)
            assert len(list(DeyelHook().iter_instances("CRM_ACCOUNT"))) == 3
            urls.append(emulator.url)
            stats.append(emulator.stats())
    assert urls[0] == urls[1]
    assert [(s["token_requests"], s["api_unauthorized"]) for s in stats] == [(1, 0), (1, 0)]


def test_a_stand_in_server_takes_its_port_as_emulators_do_and_never_one_of_its_rounds():
    """A stand-in on port 0 takes an earlier round's port, and no emulator of its round takes the stand-in's
    once it is closed: a client that cached a token for the stand-in's URL never sends it to an emulator."""
    from http.server import BaseHTTPRequestHandler

    from tests.support.servers import StandInServer

    with PORT_REUSE.rounds():
        with run_emulator(records=0) as earlier:
            pass
    with PORT_REUSE.rounds():
        server = StandInServer((HOST, 0), BaseHTTPRequestHandler)
        server.server_close()
        with run_emulator(records=0) as emulator:
            assert f"http://{HOST}:{server.server_address[1]}" == earlier.url
            assert emulator.url != earlier.url
