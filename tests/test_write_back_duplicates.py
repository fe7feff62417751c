"""Issue 21, findings 1, 2 and 5: against servers that page, count, order, separate or key instances otherwise
than assumed, three loads of one source leave exactly one instance per key, or each load fails typed before
creating anything it could not prove absent. Against the emulator (its switches) and a stand-in server written
differently; then a property test over those behaviours and the emulator's faults."""

from __future__ import annotations

import itertools
import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deyel_provider.emulator import run_emulator
from deyel_provider.emulator.forms import TARGET_FORM
from deyel_provider.exceptions import DeyelConfigError, DeyelError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.load.upsert import load_records as upsert
from tests.support.branches import Branches
from tests.support.helpers import next_example, send_json
from tests.support.servers import StandInServer

FORM = TARGET_FORM
KEY = "cdCustomer"


def record(i: int, prefix: str = "K-") -> dict[str, Any]:
    return {KEY: f"{prefix}{i:04d}", "dsName": f"Customer {i}", "qtEmployee": i % 700}


def source_of(size: int, prefix: str = "K-") -> list[dict[str, Any]]:
    return [record(i, prefix) for i in range(size)]


#: Emulator switches (and connection extras) per misbehaving server; pages are capped at 4 so that the
#: searches of batches of 10 need several pages.
EMULATOR_SERVERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "ignore_page_param": ({"ignore_page_param": True, "page_size_max": 4}, {}),
    "total_counts_page": ({"total_counts_page": True, "page_size_max": 4}, {}),
    "unstable_order": ({"unstable_order": True, "page_size_max": 4}, {}),
    "in_separator": ({"in_separator": "|"}, {}),
    "in_separator+capped": ({"in_separator": "|", "page_size_max": 4}, {}),
    "id_key=id": ({"id_key": "id", "page_size_max": 4}, {"id_field": "id"}),
    "page_size_max=3": ({"page_size_max": 3}, {}),
}
#: Which instances exist before the first load: none, every other key, or all but each batch's first key
#: (the key an ``in`` result of nothing is confirmed with).
SEEDS = {
    "empty": lambda i: False,
    "half": lambda i: i % 2 == 1,
    "first-of-batch-new": lambda i: i % 10 != 0,
}


def held_values(store: Any, fields: list[str]) -> list[dict[str, Any]]:
    """The ``fields`` of every instance of the form in an emulator's store."""
    return [{f: (store.get(FORM, i) or {}).get(f) for f in fields} for i in store.all_ids(FORM)]


def counts_by_key(keys: Iterator[Any]) -> Counter[str]:
    return Counter(str(k) for k in keys if k is not None)


def three_loads(hook_loader, held, source) -> list[str]:
    """Three loads of ``source``; after each, no key is held twice. Returns each load's outcome."""
    outcomes = []
    for _ in range(3):
        before = held()
        try:
            hook_loader()
            outcomes.append("ok")
        except DeyelError as error:  # typed, before creating anything it could not prove absent
            outcomes.append(type(error).__name__)
            after = held()
            assert all(after[k] <= max(before[k], 1) for k in after), "a failed load created a duplicate"
        state = held()
        doubled = {k: n for k, n in state.items() if n > 1}
        assert not doubled, f"keys held twice: {sorted(doubled)[:5]}"
    if "ok" in outcomes:
        assert {r[KEY] for r in source} <= set(held()), "a load succeeded without writing every key"
    return outcomes


@pytest.mark.parametrize("seeded", list(SEEDS))
@pytest.mark.parametrize("server", list(EMULATOR_SERVERS))
def test_three_loads_against_a_misbehaving_emulator_leave_one_instance_per_key(deyel_conn, server, seeded):
    switches, extra = EMULATOR_SERVERS[server]
    source = source_of(40)
    with run_emulator(records=0, **switches) as emulator:
        deyel_conn(url=emulator.url, extra=extra)
        store = emulator.state.store
        for i, r in enumerate(source):
            if SEEDS[seeded](i):
                store.create(FORM, dict(r))

        def held() -> Counter[str]:
            return counts_by_key(v[KEY] for v in held_values(store, [KEY]))

        outcomes = three_loads(lambda: upsert(DeyelHook(), FORM, source, KEY, batch_size=10), held, source)
    if server.startswith("in_separator"):
        # A wrong separator is named, at the latest on the load that first meets an existing instance.
        failures = [o for o in outcomes if o != "ok"]
        assert failures and set(failures) == {"DeyelConfigError"}, outcomes
        assert outcomes == (["ok", "DeyelConfigError", "DeyelConfigError"] if seeded == "empty" else failures)
    elif server in ("id_key=id", "page_size_max=3"):
        assert outcomes == ["ok", "ok", "ok"]
    # Otherwise a load may succeed where its searches met no repeated page, unstable order or count (an empty
    # form's), and fail typed where they did: three_loads checked that no key is held twice either way.


# -- a stand-in server written differently from the emulator -----------------------------------------------


class KeyServer(StandInServer):
    """A Deyel-like form keyed by ``rid``, paged by ``skip``/``take`` (capped at ``cap``), searched with
    ``eq``/``in`` (values split on ``separator``); ``repeats``: every page is the first; ``counts_page``: its
    ``X-Found`` header counts the page sent; ``shuffles``: each request lists the matches in a new order."""

    def __init__(
        self,
        *,
        cap: int = 1000,
        separator: str = ";",
        repeats: bool = False,
        counts_page: bool = False,
        shuffles: bool = False,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _KeyHandler)
        self.rows: dict[int, dict[str, Any]] = {}
        self.next_id = itertools.count(500)
        self.cap, self.separator, self.repeats = cap, separator, repeats
        self.counts_page, self.shuffles = counts_page, shuffles
        self.random = random.Random(7)
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, values: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            rid = next(self.next_id)
            row = {**values, "rid": str(rid), "dtLastUpdate": str(1_700_000_000_000 + rid)}
            self.rows[rid] = row
            return row

    def held(self) -> Counter[str]:
        return counts_by_key(row.get(KEY) for row in self.rows.values())


class _KeyHandler(BaseHTTPRequestHandler):
    server: KeyServer

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")

    def do_POST(self) -> None:
        if not urlsplit(self.path).path.endswith("/instances"):  # the token endpoint: a form-encoded body
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            token = {"access_token": "key-server-token-01234", "token_type": "Bearer", "expires_in": 60}
            send_json(self, token)
            return
        send_json(self, self.server.add(self._body()), status=201)

    def do_PATCH(self) -> None:
        body = self._body()
        rid = int(unquote(urlsplit(self.path).path.rsplit("/", 1)[1]))
        with self.server.lock:
            row = self.server.rows[rid]
            row.update({k: v for k, v in body.items() if k != "dtLastUpdate"})
            row["dtLastUpdate"] = str(int(row["dtLastUpdate"]) + 1)
        send_json(self, {}, status=200)

    def do_GET(self) -> None:
        server = self.server
        query = dict(parse_qsl(urlsplit(self.path).query))
        with server.lock:
            rows = sorted(server.rows.values(), key=lambda r: int(r["rid"]))
        name, _, rest = query.get("search", "").partition("=")
        if name:
            op, _, value = rest.partition(":")
            wanted = set(value.split(server.separator)) if op == "in" else {value}
            rows = [r for r in rows if str(r.get(name)) in wanted]
        if server.shuffles:
            server.random.shuffle(rows)
        take = min(int(query.get("take", 100)), server.cap)
        skip = 0 if server.repeats else int(query.get("skip", 0))
        sent = rows[skip : skip + take]
        headers = [("X-Found", str(len(sent) if server.counts_page else len(rows)))]
        send_json(self, sent, headers=headers)


@contextmanager
def key_server(deyel_conn, **behaviour: Any) -> Iterator[KeyServer]:
    server = KeyServer(**behaviour)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    extra = {"paging": "offset", "offset_param": "skip", "limit_param": "take", "total_header": "X-Found"}
    deyel_conn(url=server.url, extra={**extra, "id_field": "rid", "cache": "memory"})
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


KEY_SERVERS: dict[str, dict[str, Any]] = {
    "repeats page 1": {"repeats": True, "cap": 4},
    "count header counts the page": {"counts_page": True, "cap": 4},
    "unstable order": {"shuffles": True, "cap": 4},
    "in separator |": {"separator": "|"},
    "in separator | capped": {"separator": "|", "cap": 4},
    "pages of 3": {"cap": 3},
}


@pytest.mark.parametrize("seeded", list(SEEDS))
@pytest.mark.parametrize("server", list(KEY_SERVERS))
def test_three_loads_against_a_stand_in_leave_one_instance_per_key(deyel_conn, server, seeded):
    source = source_of(40)
    with key_server(deyel_conn, **KEY_SERVERS[server]) as stand_in:
        for i, r in enumerate(source):
            if SEEDS[seeded](i):
                stand_in.add(dict(r))
        outcomes = three_loads(
            lambda: upsert(DeyelHook(), FORM, source, KEY, batch_size=10), stand_in.held, source
        )
    if "separator" in server:
        assert "DeyelConfigError" in outcomes, outcomes
        assert outcomes == (["ok", "DeyelConfigError", "DeyelConfigError"] if seeded == "empty" else outcomes)
    elif server == "pages of 3":
        assert outcomes == ["ok", "ok", "ok"]


def test_a_wrong_separator_is_named_before_any_create_even_when_each_batchs_first_key_is_new(deyel_conn):
    """The eq confirmation alone would miss it (each batch's first key is new): the separator proof on
    existing instances names it, and nothing is created."""
    source = source_of(40)
    with run_emulator(records=0, in_separator="|") as emulator:
        deyel_conn(url=emulator.url)
        for i, r in enumerate(source):
            if i % 10:
                emulator.state.store.create(FORM, dict(r))
        emulator.reset()
        with pytest.raises(DeyelConfigError, match=r"in_separator .*deyel-probe reports the separator"):
            upsert(DeyelHook(), FORM, source, KEY, batch_size=10)
        # The batch's in search, and the eq of its last missing key (in Deyel: found). No sample needed.
        assert emulator.methods() == {"GET": 3}


# -- any server behaviour, any fault mix -------------------------------------------------------------------


def _fault(action: str, method: str | None, status: int, probability: float, seed: int) -> dict[str, Any]:
    # A 429 says the call was not processed: a server that applied the write never sends it.
    if action == "apply_status" and status == 429:
        status = 504
    rule = {"route": "data", "action": action, "status": status, "probability": probability, "seed": seed}
    return {**rule, "count": 1, **({"method": method} if method else {})}


FAULTS = st.builds(
    _fault,
    st.sampled_from(["apply_status", "apply_drop", "drop", "status"]),
    st.sampled_from(["POST", "PATCH", "GET", None]),
    st.sampled_from([502, 503, 504, 429]),
    st.sampled_from([0.1, 0.3, 1.0]),
    st.integers(0, 1000),
)
_SOMETIMES = st.sampled_from([False, False, False, True])
SERVERS = st.fixed_dictionaries(
    {
        # Each misbehaviour one time in four: with all of them as likely as not, most examples fail typed
        # (rightly) and the success path, the one that must end equal to the source, is rarely taken.
        "ignore_page_param": _SOMETIMES,
        "total_counts_page": _SOMETIMES,
        "unstable_order": _SOMETIMES,
        "in_separator": st.sampled_from([";", ";", ";", "|"]),
        "id_key": st.sampled_from(["idObjectValue", "id"]),
        "page_size_max": st.sampled_from([3, 7, 1000]),
    }
)


def test_any_server_and_fault_mix_ends_equal_to_the_source_without_a_duplicate(deyel_conn):
    """A load against any mix of the switches and faults either succeeds or fails typed; after a typed
    failure, a rerun against a well-behaved server (the same instances) loads the rest. Either way the form
    ends equal to the source, no key held twice. Most examples must take the success path."""
    branches = Branches()

    # derandomize: the same examples on every run, so CI never meets a rare draw with too few successes.
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(server=SERVERS, faults=st.lists(FAULTS, max_size=3), seeded=st.sampled_from(list(SEEDS)))
    def example(server: dict[str, Any], faults: list[dict[str, Any]], seeded: str) -> None:
        next_example(deyel_conn)
        source = source_of(30)
        with run_emulator(records=0, **server) as emulator:
            deyel_conn(url=emulator.url, extra={"id_field": server["id_key"]})
            store = emulator.state.store
            for i, r in enumerate(source):
                if SEEDS[seeded](i):
                    store.create(FORM, dict(r))
            emulator.set_faults(faults)
            try:
                upsert(DeyelHook(), FORM, source, KEY, batch_size=7)
                branch = "loaded"
            except DeyelError as error:
                branch = f"failed typed: {type(error).__name__}"
            emulator.clear_faults()
            left = held_values(store, list(source[0]))
        assert not [k for k, n in counts_by_key(v[KEY] for v in left).items() if n > 1]
        if branch != "loaded":
            with run_emulator(records=0) as plain:
                deyel_conn(url=plain.url)
                for values in left:
                    plain.state.store.create(FORM, values)
                upsert(DeyelHook(), FORM, source, KEY, batch_size=7)
                left = held_values(plain.state.store, list(source[0]))
        branches.took(branch)
        assert sorted(left, key=lambda v: str(v[KEY])) == source

    example()
    branches.assert_share("loaded", at_least=1 / 3)


@pytest.mark.parametrize("separator", [";", "|"])
def test_one_existing_instance_proves_the_separator_searched_twice(deyel_conn, separator):
    """The form holds one instance with the key (not in the source): its value is searched twice in one
    ``in`` (a made-up second value could be refused by a typed field), which must find it; a wrong separator
    then fails before any create."""
    source = source_of(20)
    with run_emulator(records=0, in_separator=separator) as emulator:
        deyel_conn(url=emulator.url)
        emulator.state.store.create(FORM, record(999, prefix="OTHER-"))
        emulator.reset()
        if separator == "|":
            with pytest.raises(DeyelConfigError, match=r"did not find the existing instances .*in_separator"):
                upsert(DeyelHook(), FORM, source, KEY, batch_size=10)
            # The first batch's in search, its eq confirmation, the page of the form, the proving search.
            assert emulator.methods() == {"GET": 4}
            assert len(list(emulator.state.store.all_ids(FORM))) == 1
        else:
            result = upsert(DeyelHook(), FORM, source, KEY, batch_size=10)
            assert result.created == 20
            # Two in searches and their eq confirmations, the page, the proving search and (once per load) a
            # page of one that proves the count header counts the search.
            assert emulator.methods() == {"GET": 2 + 2 + 1 + 1 + 1, "POST": 20}


# -- a server that applies only the first values of an in (review of issue 21, finding 1) -----------------


class _CappedInHandler(_KeyHandler):
    """Honours only the first ``in_cap`` values of an ``in`` clause (a server with a bound on IN lists)."""

    def do_GET(self) -> None:
        server = self.server
        query = dict(parse_qsl(urlsplit(self.path).query))
        name, _, rest = query.get("search", "").partition("=")
        rows = sorted(server.rows.values(), key=lambda r: int(r["rid"]))
        if name:
            op, _, value = rest.partition(":")
            values = value.split(server.separator)
            wanted = set(values[: server.in_cap]) if op == "in" else {value}  # type: ignore[attr-defined]
            rows = [r for r in rows if str(r.get(name)) in wanted]
        take = int(query.get("take", 100))
        skip = int(query.get("skip", 0))
        send_json(self, rows[skip : skip + take], headers=[("X-Found", str(len(rows)))])


@contextmanager
def capped_in_server(deyel_conn, in_cap: int) -> Iterator[KeyServer]:
    server = KeyServer()
    server.RequestHandlerClass = _CappedInHandler
    server.in_cap = in_cap  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    extra = {"paging": "offset", "offset_param": "skip", "limit_param": "take", "total_header": "X-Found"}
    deyel_conn(url=server.url, extra={**extra, "id_field": "rid", "cache": "memory"})
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_applying_only_the_first_values_of_an_in_is_named_before_any_create(deyel_conn):
    """Every key exists; the server applies the first 5 values of each `in`. The separator proof (2 values)
    passes and each in search finds some keys: the eq of the last missing key finds it, so the load fails
    typed (naming batch_size and in_separator) with nothing created; with batches of 5 it converges."""
    source = source_of(20)
    with capped_in_server(deyel_conn, in_cap=5) as server:
        for r in source:
            server.add(dict(r))
        with pytest.raises(DeyelConfigError, match=r"applies only part of the values") as raised:
            upsert(DeyelHook(), FORM, source, KEY, batch_size=10)
        assert "batch_size" in str(raised.value) and "in_separator" in str(raised.value)
        assert "nothing of this batch was written" in str(raised.value)
        assert server.held() == Counter(r[KEY] for r in source)
        assert upsert(DeyelHook(), FORM, source, KEY, batch_size=5).created == 0
        assert server.held() == Counter(r[KEY] for r in source)


def test_a_wrong_separator_that_a_numeric_key_field_refuses_is_named_in_separator(deyel_conn):
    """The server's separator is '|': the connection's `in:7;8` is one value, not a number, a 400. The
    separator proof (and an in search of the batch) name in_separator, not a bare HTTP 400; nothing is
    created."""
    with run_emulator(records=0, in_separator="|") as emulator:
        deyel_conn(url=emulator.url)
        store = emulator.state.store
        for n in (7, 8):
            store.create(FORM, {"qtEmployee": n, "cdCustomer": f"C-{n}", "dsName": "x"})
        new = [{"qtEmployee": 9, "cdCustomer": "C-9", "dsName": "nine"}]  # one key: an eq, then the proof
        with pytest.raises(DeyelConfigError, match=r"in_separator .*deyel-probe reports the separator"):
            upsert(DeyelHook(), FORM, new, "qtEmployee", batch_size=10)
        two = [*new, {"qtEmployee": 10, "cdCustomer": "C-10", "dsName": "ten"}]  # the batch's in search
        with pytest.raises(DeyelConfigError, match=r"server refused .*in_separator"):
            upsert(DeyelHook(), FORM, two, "qtEmployee", batch_size=10)
        assert emulator.methods().get("POST", 0) == 0
        assert len(store.all_ids(FORM)) == 2
