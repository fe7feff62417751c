"""A hostile server against the write-back (issue 22, findings 2, 5 and 8): a key search that pages without
end, ids and values that echo the request's credentials, an id that cannot name a URL. A stand-in written
for it (its own search parser and paging, ids it makes up), not the emulator."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from deyel_provider.exceptions import DeyelBadResponseError, DeyelIncompleteError, DeyelRejectedError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.redact import basic_value
from deyel_provider.load.upsert import load_records as upsert
from tests.support.helpers import CLIENT_ID, CLIENT_SECRET, connection_json, send_json
from tests.support.servers import StandInServer

FORM = "ERP_CUSTOMER"
KEY = "cdCustomer"
#: The stand-in's access token: long and unlike anything else in the answers.
TOKEN = "hostile-token-" + "Zq7" * 40
BASIC = basic_value(CLIENT_ID, CLIENT_SECRET)
#: The default of max_matches_per_key (written out: the test must fail, not error, on the old code).
MAX_MATCHES_PER_KEY = 10
#: Requests after which the stand-in answers 400, so that an unbounded search (the old code) ends too.
CEILING = 200

#: Makes a listing page: (server, asked keys, 0-based page index, page size, Authorization sent) -> instances.
Lister = Callable[["HostileServer", list[str], int, int, str], list[dict[str, Any]]]


class HostileServer(StandInServer):
    """Answers the token POST, listings (``search=cdCustomer=in:a;b`` or ``eq:a``, ``page``/``pageSize``)
    through ``lister``, and PATCH/POST with ``write_status`` (a 400 echoes the Authorization header)."""

    def __init__(self, lister: Lister, write_status: int = 202) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lister = lister
        self.write_status = write_status
        self.lock = threading.Lock()
        self.listings = 0
        self.writes: list[tuple[str, str]] = []  # (method, path)
        self.next_id = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def fresh_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id


class _Handler(BaseHTTPRequestHandler):
    server: HostileServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path.endswith("/oauth/token"):
            send_json(self, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600})
            return
        self._write()

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._write()

    def _write(self) -> None:
        with self.server.lock:
            self.server.writes.append((self.command, self.path))
        status = self.server.write_status
        if status >= 400:
            echo = f"refused: you sent {self.headers.get('Authorization')}; {BASIC}"
            send_json(self, {"errors": [{"message": echo, "attribute-name": "dsName"}]}, status=status)
            return
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.listings += 1
            count = self.server.listings
        if count > CEILING:
            send_json(self, {"errors": [{"message": "enough"}]}, status=400)
            return
        query = dict(parse_qsl(urlsplit(self.path).query))
        operator, _, values = query.get("search", "").partition("=")[2].partition(":")
        asked = values.split(";") if operator == "in" else [values]
        page = int(query.get("page", 1)) - 1
        size = int(query.get("pageSize", 100))
        auth = self.headers.get("Authorization") or ""
        send_json(self, self.server.lister(self.server, asked, page, size, auth))


@contextlib.contextmanager
def hostile(monkeypatch: pytest.MonkeyPatch, lister: Lister, **settings: Any) -> Iterator[HostileServer]:
    server = HostileServer(lister, **settings)
    monkeypatch.setenv("AIRFLOW_CONN_DEYEL_DEFAULT", connection_json(server.url, cache="memory"))
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def records(count: int) -> list[dict[str, Any]]:
    return [{KEY: f"K{i}", "dsName": f"name {i}"} for i in range(1, count + 1)]


# -- finding 2: a key search that pages without end ----------------------------------------------------------


def endless_on_first_key(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
    """Every page full of new instances, all holding the first key asked (a search never decided)."""
    return [{"idObjectValue": server.fresh_id(), KEY: asked[0], "dsName": "x"} for _ in range(size)]


def endless_over_every_key(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
    """Every page full of new instances, spread over the keys asked."""
    return [
        {"idObjectValue": server.fresh_id(), KEY: asked[(page * size + n) % len(asked)], "dsName": "x"}
        for n in range(size)
    ]


def test_a_search_paging_without_end_fails_typed_within_its_bound(monkeypatch):
    """The issue's run: 3,251 requests and +3.8 GiB in 30 s, still searching. Three keys ask pages of four;
    past 3 x MAX_MATCHES_PER_KEY distinct instances the search stops: page 8 brings the 31st."""
    with hostile(monkeypatch, endless_on_first_key) as server:
        with pytest.raises(DeyelIncompleteError) as caught:
            upsert(DeyelHook(), FORM, records(3), KEY, key_type="text")
    limit = 3 * MAX_MATCHES_PER_KEY
    assert server.listings == limit // 4 + 1 == 8
    assert server.writes == []
    message = str(caught.value)
    assert f"more than {limit} distinct instances for 3 key(s)" in message
    assert f"max_matches_per_key={MAX_MATCHES_PER_KEY}" in message and FORM in message


def test_the_bound_is_an_option(monkeypatch):
    with hostile(monkeypatch, endless_on_first_key) as server:
        with pytest.raises(DeyelIncompleteError, match="more than 6 distinct instances for 3 key"):
            upsert(DeyelHook(), FORM, records(3), KEY, key_type="text", max_matches_per_key=2)
    assert server.listings == 2 and server.writes == []


def test_a_search_stops_once_every_key_names_several_instances(monkeypatch, tmp_path):
    """Every key already held by two instances: each record is a reject whatever follows, so the search
    ends there (2 pages of 4 for 3 keys), nothing is written, and the rejects file is the owner's alone."""
    target = tmp_path / "rejects.jsonl"
    with hostile(monkeypatch, endless_over_every_key) as server:
        with pytest.raises(DeyelRejectedError, match="3 records of the source list were rejected"):
            upsert(DeyelHook(), FORM, records(3), KEY, key_type="text", rejects=str(target))
    assert server.listings == 2 and server.writes == []
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["key"] for line in lines] == ["K1", "K2", "K3"]
    assert all(
        "more than one instance of ERP_CUSTOMER has this cdCustomer" in line["errors"][0]["message"]
        for line in lines
    )


#: Server text that makes each instance of a search large: 4 MiB (a page stays far under the 16 MiB cap).
BIG = 4 << 20


def searched_peak(monkeypatch: pytest.MonkeyPatch, lister: Lister, error: type[Exception], match: str):
    """Runs a 3-key search against ``lister`` to its error; the server and the peak of traced memory."""
    import tracemalloc

    with hostile(monkeypatch, lister) as server:
        tracemalloc.start()
        try:
            with pytest.raises(error, match=match) as caught:
                upsert(DeyelHook(), FORM, records(3), KEY, key_type="text")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(str(caught.value)) < 1000 and server.writes == []
    return server, peak


def test_an_id_longer_than_the_bound_is_refused_before_the_search_keeps_it(monkeypatch):
    """One new instance per page under a 4 MiB id: the search kept every id seen, whole (30 of them, 120
    MiB, before its instance bound stopped it; ~16 GiB with the defaults). An id past MAX_ID_LENGTH (1024
    characters) is now refused on the first page, named with the bound, the id cut."""

    def huge_ids(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
        return [{"idObjectValue": f"{server.fresh_id()}-" + "x" * BIG, KEY: asked[0]}]

    server, peak = searched_peak(monkeypatch, huge_ids, DeyelBadResponseError, "longer than 1024 characters")
    assert server.listings == 1
    assert peak < 8 * BIG, f"the search peaked at {peak / 2**20:.0f} MiB"


def test_a_search_holds_only_the_fields_a_load_reads_of_its_instances(monkeypatch):
    """Ids at the bound and a 4 MiB field the load does not compare, one new instance per page, each key
    in turn: the search reads six pages (two instances per key decide it: three rejects), and of the six
    instances it holds keeps only the key, the id, dtLastUpdate and the compared fields (dsName): it
    peaked at 32 MiB holding them whole, 20 MiB now (the pages being read). The hostile server answers from
    a thread of this process, so its own copy of a page is traced too, and when it is freed depends on the
    threads' timing: 24.1 MiB was seen once under four busy test workers. The bound, 28 MiB, sits between
    that and the 32 MiB of instances held whole."""

    def big_fields(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
        ident = f"{server.fresh_id()}-".ljust(1024, "x")
        return [{"idObjectValue": ident, KEY: asked[page % 3], "dsName": "x", "dsNotes": "n" * BIG}]

    server, peak = searched_peak(monkeypatch, big_fields, DeyelRejectedError, "3 records .* were rejected")
    assert server.listings == 6
    assert peak < 7 * BIG, f"the search peaked at {peak / 2**20:.0f} MiB"


# -- finding 8: an id that cannot name a URL; the rejects file's mode ------------------------------------


def dot_dot_for_k1(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
    if page > 0:
        return []
    ids = {"K1": " .. ", "K2": "2", "K3": "3"}
    return [{"idObjectValue": ids[k], KEY: k, "dsName": "old"} for k in asked if k in ids]


def test_an_id_that_cannot_name_a_url_is_a_reject_and_the_load_goes_on(monkeypatch, tmp_path):
    """It was a DeyelConfigError in the middle of the load (earlier records written, later ones not)."""
    target = tmp_path / "rejects.jsonl"
    with hostile(monkeypatch, dot_dot_for_k1) as server:
        result = upsert(
            DeyelHook(), FORM, records(3), KEY, key_type="text", rejects=str(target), max_rejects=1
        )
    assert (result.updated, result.rejected) == (2, 1)
    assert sorted(path for _, path in server.writes) == [f"/forms/{FORM}/instances/{i}" for i in (2, 3)]
    (line,) = [json.loads(line) for line in target.read_text().splitlines()]
    assert (
        line["key"] == "K1"
        and "has the id ' .. ', which cannot name it in a URL" in line["errors"][0]["message"]
    )


def plain(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
    return [] if page > 0 else [{"idObjectValue": k, KEY: k, "dsName": "old"} for k in asked]


def test_the_rejects_file_is_published_for_its_owner_only(monkeypatch, tmp_path):
    """Finding 8b: it holds whole source records; it was published 0644 (the umask's mode)."""
    target = tmp_path / "rejects.jsonl"
    old = os.umask(0o022)
    try:
        with hostile(monkeypatch, plain, write_status=400):  # Deyel refuses every update
            result = upsert(
                DeyelHook(), FORM, records(3), KEY, key_type="text", rejects=str(target), max_rejects=3
            )
    finally:
        os.umask(old)
    assert result.rejected == 3 and len(target.read_text().splitlines()) == 3
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


# -- finding 5: server-supplied values that echo the credentials ---------------------------------------------


def padded(text: str) -> str:
    return text + "-" + "p" * 400_000  # the 400 KB message


def padded_id(text: str) -> str:
    """As long as an id may be (MAX_ID_LENGTH, 1024 characters): a longer one is refused before quoted."""
    return (text + "-").ljust(1024, "p")


def echoing_duplicates(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
    """K1 held twice, under ids echoing the Authorization header and the Basic value (1 KiB each)."""
    if page > 0:
        return []
    rows = []
    for key in asked:
        if key == "K1":
            rows += [
                {"idObjectValue": padded_id(auth), KEY: key, "dsName": auth},
                {"idObjectValue": padded_id(f"{BASIC} {TOKEN}"), KEY: key, "dsName": BASIC},
            ]
        else:
            rows.append({"idObjectValue": f"id-{key}", KEY: key, "dsName": "old"})
    return rows


def echoing_a_key_not_asked(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
    return [{"idObjectValue": padded_id(auth), KEY: padded(auth), "dsName": auth}]


def echoing_a_long_id(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
    return [{"idObjectValue": padded(auth), KEY: asked[0], "dsName": auth}]


def _secret_free(text: str) -> None:
    for secret in (TOKEN, BASIC, CLIENT_SECRET, TOKEN[:40]):
        assert secret not in text


def test_echoed_credentials_reach_no_message_log_or_rejects_file(monkeypatch, tmp_path, caplog, capfd):
    """Ids, key values and error texts echoing the bearer token and the Basic value: every message, log
    line and the rejects file show them redacted and cut."""
    caplog.set_level(logging.DEBUG)
    target = tmp_path / "rejects.jsonl"
    texts: list[str] = []
    # Duplicates under echoing ids (rejects), and updates Deyel refuses with an echoing error (rejects).
    with hostile(monkeypatch, echoing_duplicates, write_status=400) as server:
        with pytest.raises(DeyelRejectedError) as rejected:
            upsert(DeyelHook(), FORM, records(3), KEY, key_type="text", rejects=str(target))
    assert len(server.writes) == 2  # K2 and K3 were tried, and refused
    texts.append(str(rejected.value))
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(lines) == 3 and lines[0]["key"] == "K1"
    assert "***" in lines[0]["errors"][0]["message"]
    for line in lines:
        assert len(line["errors"][0]["message"]) < 1200
    # A search the server did not apply, told with the echoing instance.
    with hostile(monkeypatch, echoing_a_key_not_asked):
        with pytest.raises(DeyelBadResponseError) as bad:
            upsert(DeyelHook(), FORM, records(2), KEY, key_type="text")
    texts.append(str(bad.value))
    assert "***" in str(bad.value) and "not asked for" in str(bad.value)
    # An id past the bound, told with the id.
    with hostile(monkeypatch, echoing_a_long_id):
        with pytest.raises(DeyelBadResponseError, match="longer than 1024") as bad:
            upsert(DeyelHook(), FORM, records(2), KEY, key_type="text")
    texts.append(str(bad.value))
    assert "***" in str(bad.value)
    for text in texts:
        assert len(text) < 2000
    logged = [record.getMessage() for record in caplog.records]
    assert all(len(message) < 2000 for message in logged)
    out, err = capfd.readouterr()
    for text in [*texts, *logged, out, err, target.read_text()]:
        _secret_free(text)


def mixed_key_types(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
    """The sample a load reads to tell its key's type: a number and a text echoing the Authorization."""
    return [{"idObjectValue": "1", "customerKey": 7}, {"idObjectValue": "2", "customerKey": padded(auth)}]


def test_a_sample_echoing_credentials_is_quoted_redacted_in_the_key_type_error(monkeypatch):
    from deyel_provider.exceptions import DeyelConfigError

    with hostile(monkeypatch, mixed_key_types) as server:
        with pytest.raises(DeyelConfigError, match="hold both numbers") as caught:
            upsert(DeyelHook(), FORM, [{"customerKey": "K1"}], "customerKey")
    assert server.listings == 1 and server.writes == []
    message = str(caught.value)
    assert "numbers (7) and texts ('Bearer ***...')" in message
    assert "hostile-token" not in message and len(message) < 500


def repeats_then_one_new(server: HostileServer, asked: list[str], page: int, size: int, auth: str):
    """The first chunk (K1-K3) answers honestly, in a short page: the walker learns pages of 3. The second
    (K4-K6) answers a page of 2, so the walker takes it that pages are shortened and lets repeats through;
    then 64 pages of repeats (the walker's limit in a row) and one new instance, again and again."""
    if asked == ["K1", "K2", "K3"]:
        return [] if page else [{"idObjectValue": k, KEY: k, "dsName": f"name {k[1:]}"} for k in asked]
    first, second = {"idObjectValue": "h1", KEY: "K4"}, {"idObjectValue": "h2", KEY: "K4"}
    if page == 0:
        return [first, second]
    if page % 65 == 0:
        return [{"idObjectValue": f"new{page}", KEY: "K4"}, first]
    return [second, first] if page % 2 else [first, second]


def test_a_search_of_repeats_with_a_trickle_of_new_instances_ends_within_its_page_bound(monkeypatch):
    """Few distinct instances, pages without end: the search's pages are bounded too (30 + 66 for three
    keys), so it ends at the 97th page of the second chunk (2 pages for the first), not at the ceiling."""
    with hostile(monkeypatch, repeats_then_one_new) as server:
        with pytest.raises(DeyelIncompleteError, match="more than 96 pages for 3 key"):
            upsert(DeyelHook(), FORM, records(6), KEY, key_type="text", batch_size=3)
    assert server.listings == 2 + 97 and server.writes == []
