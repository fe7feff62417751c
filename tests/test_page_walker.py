"""Issue 20, finding 5: the end of a listing is taken only on proof (deyel_provider/api/page_walker.py), by
the
extraction, the sensor's count and the write-back's key search alike. Real HTTP against the emulator with
the two server behaviours the issue names (a count header that counts the page on a server capping pages
below page_size; pages shortened after paging, as per-page permissions do), and against a small stand-in
server written apart from the emulator."""

from __future__ import annotations

import email.utils
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deyel_provider.emulator import run_emulator
from deyel_provider.emulator.paging import hidden_after_paging
from deyel_provider.exceptions import DeyelBadResponseError, DeyelError, DeyelIncompleteError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.extract import DeyelExtractOperator
from deyel_provider.operators.upsert import DeyelUpsertOperator
from deyel_provider.sensors.deyel import DeyelInstanceSensor
from tests.support.branches import Branches
from tests.support.helpers import next_example, send_json
from tests.support.servers import StandInServer

FORM = "CRM_ACCOUNT"


def extract(output, **kwargs) -> dict:
    kwargs.setdefault("incremental_field", None)
    return DeyelExtractOperator(task_id="extract", form=FORM, output=str(output), **kwargs).execute({})


def written(path) -> list[int]:
    with open(path, encoding="utf-8") as fh:
        return sorted(int(json.loads(line)["idObjectValue"]) for line in fh)


def visible(emulator) -> list[int]:
    """The instances a user of a server with ``drop_after_paging`` can see: every one no page hides."""
    settings = emulator.state.settings
    return [i for i in emulator.state.store.all_ids(FORM) if not hidden_after_paging(settings, i)]


# -- the extraction ------------------------------------------------------------------------------------------


def test_a_count_header_that_counts_the_page_on_a_capping_server_is_no_end(deyel_conn, tmp_path):
    """Pages capped at 50 (page_size 100 asked) and X-Total-Count counting the page: the first answer says
    "50 of 50". Before: a full load of 1,000 wrote those 50 and succeeded. Now every instance, or a typed
    error naming total_header with nothing published."""
    with run_emulator(records=1000, page_size_max=50, total_counts_page=True) as emulator:
        deyel_conn(url=emulator.url, extra={"cache": "memory"})
        target = tmp_path / "out.jsonl"
        try:
            result = extract(target, page_size=100)
        except DeyelIncompleteError as error:
            assert "total_header" in str(error)
            assert not target.exists()
        else:
            assert written(target) == list(range(1, 1001)) and result["records"] == 1000
        # With the header switched off, the pages alone prove every end: all 1,000.
        deyel_conn(url=emulator.url, extra={"cache": "memory", "total_header": "none"})
        extract(target, page_size=100)
        assert written(target) == list(range(1, 1001))


@pytest.mark.parametrize("strategy", ["page", "offset", "link"])
def test_pages_shortened_after_paging_give_every_visible_instance(deyel_conn, tmp_path, strategy):
    """Per-page permissions: the server pages, then drops a third of each page. Before: 1,600 instances, no
    count header, a full load succeeded with about two thirds of what the user can see (a short page was
    taken for a slice's end). Now every visible instance: short pages prove nothing on such a server."""
    with run_emulator(
        records=1600, drop_after_paging=0.33, send_total=False, paging=strategy, seed=7
    ) as emulator:
        deyel_conn(url=emulator.url, extra={"cache": "memory", "paging": strategy})
        target = tmp_path / "out.jsonl"
        result = extract(target, page_size=100)
        expected = visible(emulator)
        assert 900 < len(expected) < 1300  # the switch really hid instances
        assert written(target) == expected and result["records"] == len(expected)


def test_pages_shortened_after_paging_with_a_count_of_the_matches_fail_typed(deyel_conn, tmp_path):
    """The count header counts the matches before the permissions drop some: no listing ever reaches it. A
    typed error naming the header, nothing published; with total_header none, every visible instance."""
    with run_emulator(records=400, drop_after_paging=0.2) as emulator:
        deyel_conn(url=emulator.url, extra={"cache": "memory"})
        target = tmp_path / "out.jsonl"
        with pytest.raises(DeyelIncompleteError, match="total_header"):
            extract(target, page_size=100)
        assert not target.exists()
        deyel_conn(url=emulator.url, extra={"cache": "memory", "total_header": "none"})
        extract(target, page_size=100)
        assert written(target) == visible(emulator)


def test_the_happy_path_costs_no_request_more(deyel_conn, tmp_path):
    """The default emulator (a count header that counts the search): a full load of 1,000 in pages of 100
    proves every slice by its count, as before the walker."""
    with run_emulator(records=1000) as emulator:
        deyel_conn(url=emulator.url, extra={"cache": "memory"})
        result = extract(tmp_path / "out.jsonl", page_size=100)
        assert result["records"] == 1000
        assert result["requests"] == emulator.stats()["api_requests"] == REQUESTS_DEFAULT_FULL_LOAD


#: Measured on the code before the walker (commit 4d95be9) and after it: see the report of issue 20 (19). Two
#: fewer since slices are planned to fill a response and the window's edges fold into its end slices
#: (issue 24): the probe, 15 slices of about 69 and the round at the present.
REQUESTS_DEFAULT_FULL_LOAD = 17


# -- the sensor's count --------------------------------------------------------------------------------------


def sensor(**kwargs) -> DeyelInstanceSensor:
    return DeyelInstanceSensor(task_id="wait", form=FORM, poke_interval=0.01, timeout=1, **kwargs)


def test_the_sensors_count_does_not_stop_at_a_page_counting_header_on_a_capping_server(deyel_conn):
    """1,000 instances, pages capped at 50, the header counting the page: before, "50, exact" and a sensor
    waiting for 100 never fired. Now the header is caught counting the page (a page of one says 1): a typed
    error naming total_header; with total_header none the sensor fires."""
    with run_emulator(records=1000, page_size_max=50, total_counts_page=True) as emulator:
        deyel_conn(url=emulator.url)
        with pytest.raises(DeyelIncompleteError, match=r"counts the page sent.*total_header to 'none'"):
            sensor(min_count=100).poke({})
        deyel_conn(url=emulator.url, extra={"total_header": "none"})
        emulator.reset()
        outcome = sensor(min_count=100).poke({})
        assert outcome and outcome.xcom_value["count"] == 100
        # 50 of 100 asked, then page 2 at 50 (full: the cap is proven) makes 100.
        assert emulator.stats()["api_requests"] == 2


def test_the_sensors_count_does_not_stop_at_a_page_shortened_after_paging(deyel_conn):
    """Half of each page dropped after paging, no count header: before, the second page (shorter than the
    first) was taken for the last ("300, exact") and a sensor waiting for 400 of about 500 visible never
    fired."""
    with run_emulator(records=1000, drop_after_paging=0.5, send_total=False, seed=7) as emulator:
        deyel_conn(url=emulator.url)
        assert len(visible(emulator)) > 450
        outcome = sensor(min_count=400).poke({})
        assert outcome and outcome.xcom_value["count"] >= 400


# -- the write-back's key search -----------------------------------------------------------------------------

KEY = "cdCustomer"
TARGET = "ERP_CUSTOMER"  # an empty form of the emulator, keyed by cdCustomer


def customer(i: int) -> dict:
    return {KEY: f"C-{i:05d}", "dsName": f"Customer {i}"}


def test_a_key_search_cut_short_by_a_page_counting_header_fails_typed_instead_of_creating(deyel_conn):
    """180 customers exist, pages are capped at 50 and the header counts the page: before, a search for 100
    keys read one page ("50 of 50") and the load created the other 50 a second time."""
    with run_emulator(records=0, page_size_max=50, total_counts_page=True) as emulator:
        deyel_conn(url=emulator.url)
        for i in range(180):
            emulator.state.store.create(TARGET, customer(i))
        emulator.reset()
        load = DeyelUpsertOperator(
            task_id="load", form=TARGET, source=[customer(i) for i in range(250)], key=KEY, batch_size=100
        )
        with pytest.raises((DeyelIncompleteError, DeyelBadResponseError), match="total_header"):
            load.execute({})
        assert set(emulator.methods()) == {"GET"}  # nothing created, nothing updated


# -- a stand-in server written apart from the emulator -------------------------------------------------------


class StandIn(StandInServer):
    """A Deyel-like server that is not the emulator: pages by ``from``/``count`` offsets, capped at ``cap``,
    its ``X-Count`` header counting the page it sends (``counts_page``) or nothing; ``hide``: every instance
    whose number is a multiple of it is removed from each page after paging. 700 instances, one per second
    of ``dtLastUpdate``; ``search`` takes ``gte``/``lt``/``eq`` filters on any field."""

    def __init__(self, *, cap: int, counts_page: bool = False, hide: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _StandInHandler)
        self.rows = [
            {"idObjectValue": str(i), "dtLastUpdate": str(1_700_000_000_000 + 1000 * i), "dsName": f"n{i}"}
            for i in range(1, 701)
        ]
        self.cap, self.counts_page, self.hide = cap, counts_page, hide
        self.gets = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def visible(self) -> list[int]:
        return [i for i in range(1, 701) if not (self.hide and i % self.hide == 0)]


class _StandInHandler(BaseHTTPRequestHandler):
    server: StandIn

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, body: object, headers: list[tuple[str, str]]) -> None:
        send_json(self, body, headers=headers)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(
            {"access_token": "stand-in-token-0123456789", "token_type": "Bearer", "expires_in": 3600}, []
        )

    def do_GET(self) -> None:
        server = self.server
        server.gets += 1
        query = dict(parse_qsl(urlsplit(self.path).query))
        rows = server.rows
        for clause in filter(None, query.get("search", "").split(",")):
            name, _, rest = clause.partition("=")
            op, _, value = rest.partition(":")
            test = {"gte": lambda a, b: int(a) >= int(b), "lt": lambda a, b: int(a) < int(b)}.get(
                op, lambda a, b: str(a) == b
            )
            rows = [r for r in rows if test(r[name], value)]
        count = min(int(query.get("count", 100)), server.cap)
        start = int(query.get("from", 0))
        sent = rows[start : start + count]
        if server.hide:
            sent = [r for r in sent if int(r["idObjectValue"]) % server.hide]
        headers = [("Date", email.utils.formatdate(usegmt=True))]
        if server.counts_page:
            headers.append(("X-Count", str(len(sent))))
        self._send(sent, headers)


@contextmanager
def stand_in(deyel_conn, **settings: int | bool) -> Iterator[StandIn]:
    server = StandIn(**settings)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    extra = {"cache": "memory", "paging": "offset", "offset_param": "from", "limit_param": "count"}
    extra["total_header"] = "X-Count" if settings.get("counts_page") else "none"
    deyel_conn(url=server.url, extra=extra)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_stand_in_capping_pages_with_a_page_counting_header(deyel_conn, tmp_path):
    with stand_in(deyel_conn, cap=40, counts_page=True) as server:
        target = tmp_path / "out.jsonl"
        try:
            extract(target, page_size=100)
        except DeyelError as error:
            assert "X-Count" in str(error) and not target.exists()
        else:
            assert written(target) == server.visible()


def test_a_stand_in_hiding_instances_after_paging(deyel_conn, tmp_path):
    with stand_in(deyel_conn, cap=1000, hide=4) as server:
        target = tmp_path / "out.jsonl"
        extract(target, page_size=100)
        assert written(target) == server.visible()


# -- every paging behaviour: every visible instance, or a typed error naming what to change -----------------


def test_paging_behaviours_give_every_visible_instance_or_a_typed_error(deyel_conn):
    """Caps, count headers of every kind (of the search, of the page, of the whole form, none), pages
    shortened after paging, three paging strategies: a read yields exactly the instances the user can see,
    or fails with a DeyelError that names a setting, and only where the count header counts something else
    than what the pages show (the page, the whole form, instances the permissions hide)."""
    branches = Branches()

    # Derandomized: the same 30 examples every run. Drop shares stay where a page of the short page's size
    # wholly hidden is rare (docs/extraction.md: what an empty page cannot prove on such a server).
    @settings(max_examples=30, deadline=None, database=None, derandomize=True)
    @given(
        records=st.integers(60, 400),
        cap=st.sampled_from([1000, 40, 13]),
        header=st.sampled_from(["search", "search", "none", "none", "page", "form"]),
        drop=st.sampled_from([0.0, 0.0, 0.1, 0.25]),
        strategy=st.sampled_from(["page", "offset", "link"]),
        page_size=st.sampled_from([30, 100]),
    )
    def check(records, cap, header, drop, strategy, page_size):
        next_example(deyel_conn)
        server = {
            "records": records,
            "page_size_max": cap,
            "drop_after_paging": drop,
            "paging": strategy,
            "send_total": header != "none",
            "total_counts_page": header == "page",
            "total_ignores_search": header == "form",
        }
        with run_emulator(**server) as emulator:
            deyel_conn(url=emulator.url, extra={"cache": "memory", "paging": strategy})
            reader = DeyelHook().sliced_reader(FORM, page_size=page_size)
            try:
                got = sorted(int(r["idObjectValue"]) for s in reader.read(None, None) for r in s.records)
            except DeyelError as error:
                # The count header is what cannot be trusted here: the error is the incomplete-read one and
                # names the setting to change (not merely some "set ..." advice).
                assert isinstance(error, DeyelIncompleteError), repr(error)
                assert "total_header" in str(error), str(error)
                # Only where the count header counts something else than what the pages show.
                assert header in ("page", "form") or (header == "search" and drop), str(error)
                branches.took("typed error: total_header")
            else:
                assert got == visible(emulator), server
                branches.took("complete")

    check()
    branches.assert_share("complete", at_least=0.3)


def test_a_key_search_over_pages_in_an_unstable_order_fails_typed_instead_of_creating(deyel_conn):
    """Pages capped at 50 and listed in a new order by every request (ties of a bad ORDER BY): a search for
    100 keys walks two pages that repeat some instances and skip others. Before: the skipped keys were
    "missing" and created a second time. Now a typed error before any write."""
    with run_emulator(records=0, page_size_max=50, unstable_order=True, send_total=False) as emulator:
        deyel_conn(url=emulator.url, extra={"total_header": "none"})
        for i in range(180):
            emulator.state.store.create(TARGET, customer(i))
        emulator.reset()
        load = DeyelUpsertOperator(
            task_id="load", form=TARGET, source=[customer(i) for i in range(100)], key=KEY, batch_size=100
        )
        with pytest.raises(DeyelIncompleteError, match="order"):
            load.execute({})
        assert set(emulator.methods()) == {"GET"}  # nothing created


def test_a_listing_that_shrinks_to_one_between_two_asks_is_no_page_counting_header():
    """Found by the concurrent-writer property (seed of a full run): a page of 2 with a total of 2, then a
    writer deletes one instance, and the page of one says total 1. That is a listing of one now, not a
    header counting the page: the walker lets the pages decide instead of failing the read. A server that
    does count the page still says so on the page asked again (typed error naming total_header)."""
    from deyel_provider.api.page_walker import PageWalker
    from deyel_provider.api.pagination import Page, Paging
    from deyel_provider.exceptions import DeyelIncompleteError

    listing = [{"idObjectValue": "1"}, {"idObjectValue": "2"}]

    def shrinking(offset: int, size: int) -> Page:  # the server: one instance deleted after the first ask
        del listing[1:]
        return Page(listing[offset : offset + size], total=len(listing))

    walker = PageWalker(Paging(strategy="page", page_size=5))
    assert walker.total_is_proof(Page(list(listing), total=2), shrinking) is False
    assert len(listing) == 1

    def counting(offset: int, size: int) -> Page:  # a header that counts the page sent
        page = [{"idObjectValue": str(i)} for i in range(offset, offset + min(size, 2))]
        return Page(page, total=len(page))

    with pytest.raises(DeyelIncompleteError, match="counts the page sent"):
        PageWalker(Paging(strategy="page", page_size=5)).total_is_proof(counting(0, 2), counting)
