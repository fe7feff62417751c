"""msgspec in place of json (issue 24, "Faster JSON"): the JSON Lines bytes are those the standard library
wrote, and a parsed page holds the values ``Response.json()`` gave, over generated JSON values (any unicode,
lone surrogates, big integers, every float incl. NaN and the infinities, deep nesting)."""

from __future__ import annotations

import collections
import json
import math
from typing import Any

import msgspec
import pytest
import requests
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from deyel_provider.extract.formats.base import encodable_json, json_line, json_lines, json_text
from deyel_provider.http.json_body import response_json
from tests.support.branches import Branches

#: Characters that escape differently or not at all in some encoder: controls, DEL, line separators,
#: lone surrogates (no UTF-8 form), non-BMP characters, quotes and backslashes.
_AWKWARD = ["\x00", "\x1f", "\x7f", "\u2028", "\u2029", "\ud800", "\udfff", "é", "\U0001f600", '"', "\\", "/"]
TEXT = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(_AWKWARD)), max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(),  # NaN and the infinities included: only json writes them as it did
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e-3, max_value=1e-3),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: abs(f) >= 1e15),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
RECORDS = st.dictionaries(TEXT, VALUES, max_size=6)


def old_jsonl(records: list[dict[str, Any]]) -> bytes:
    """What the JSON Lines writer wrote before msgspec (extract/formats/text.py, as merged)."""
    try:
        return ("\n".join(map(json_text, records)) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return ("\n".join(map(encodable_json, records)) + "\n").encode("utf-8")


def test_json_lines_are_byte_for_byte_what_the_standard_library_wrote():
    branches: collections.Counter[str] = collections.Counter()

    @settings(max_examples=200, deadline=None)
    @given(st.lists(RECORDS, min_size=1, max_size=3))
    def check(records: list[dict[str, Any]]) -> None:
        for record in records:
            branch = "msgspec" if json_line(record) is not None else "json"
            event(branch)
            branches[branch] += 1
        data, escaped, nonfinite = json_lines(records)
        assert data == old_jsonl(records)
        assert escaped == any(_has_surrogate(json_text(record)) for record in records)
        assert nonfinite == any(not math.isfinite(f) for f in _floats(records))

    check()
    # Generated records are far more hostile than Deyel's (a float, surrogate or "1e" in most of them).
    assert branches["msgspec"] >= 0.25 * sum(branches.values()), branches


def test_the_fast_path_is_taken_for_deyel_shaped_records():
    from bench.json_codecs import page_records

    records = page_records(1000)
    fast = sum(json_line(record) is not None for record in records)
    # The rest are false alarms (a 0xcb byte inside a float's own MessagePack bytes): json writes them.
    assert fast >= 950, fast
    assert json_lines(records)[0] == old_jsonl(records)


def test_floats_msgspec_writes_otherwise_go_through_json():
    for value in (1e16, 1e-7, 0.00001, 1.2345678901234567e19, math.nan, math.inf, -math.inf):
        assert json_line({"x": value}) is None
        assert json_lines([{"x": value}])[0] == old_jsonl([{"x": value}])
    assert json_line({"x": 0.5, "y": None, "z": 10**15, "w": 0.0001}) == (
        b'{"x":0.5,"y":null,"z":1000000000000000,"w":0.0001}'
    )
    # An integer past 64 bits (MessagePack has no form for it, so its floats cannot be seen): json writes it.
    assert json_line({"z": 10**30}) is None
    assert json_lines([{"z": 10**30}])[0] == b'{"z":1000000000000000000000000000000}\n'


def _response(body: bytes, encoding: str | None = "utf-8") -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = body
    response.encoding = encoding
    return response


def test_parsed_pages_hold_the_values_response_json_gave():
    branches: collections.Counter[str] = collections.Counter()

    @settings(max_examples=200, deadline=None)
    @given(st.lists(RECORDS, max_size=3), st.booleans(), st.sampled_from(["utf-8", "UTF-8", None]))
    def check(records: list[dict[str, Any]], ascii_only: bool, encoding: str | None) -> None:
        body = json.dumps(records, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        response = _response(body, encoding)
        try:
            expected: Any = response.json()
        except ValueError as refused:
            expected = type(refused)
        try:
            got: Any = response_json(_response(body, encoding))
        except ValueError as refused:
            got = type(refused)
        event("parsed" if not isinstance(got, type) else "refused by both")
        branches["same" if _same(got, expected) else "different"] += 1
        assert _same(got, expected), (got, expected)

    check()
    assert branches["different"] == 0
    assert branches["same"] >= 150


def test_a_body_in_another_charset_is_parsed_as_requests_parses_it():
    body = '[{"dsCompany": "Compañía"}]'.encode("latin-1")
    assert response_json(_response(body, "ISO-8859-1")) == [{"dsCompany": "Compañía"}]
    utf16 = '[{"a": "é"}]'.encode("utf-16")
    assert response_json(_response(utf16, None)) == [{"a": "é"}]


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types (floats by their text: NaN, -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def test_a_deyel_page_is_encoded_in_one_call_and_a_page_with_an_odd_float_record_by_record():
    """The page path (one msgspec call per page) takes Deyel-shaped pages; one float msgspec writes otherwise,
    anywhere in the page (here inside a grid row), sends the page record by record: the same bytes."""
    from bench.json_codecs import page_records
    from deyel_provider.extract.formats.base import _page_lines

    records = page_records(1000)
    assert _page_lines(records) == old_jsonl(records)
    for odd in (1e16, 1e-7, 0.00001, math.nan, math.inf):
        page = [*records[:10], {"lsAddress": [{"nuLat": 0.0}, {"nuLat": odd}]}, *records[10:20]]
        assert _page_lines(page) is None
        assert json_lines(page)[0] == old_jsonl(page)
    assert _page_lines([{"x": 0.0, "y": -0.0, "z": 1e-4, "w": 9.9e15}]) is not None


class _Text(str):
    """A str subclass (json writes its text; msgspec may not be asked)."""


class _Number(int):
    """An int subclass, as an IntEnum is."""


class _Real(float):
    """A float subclass: json writes it as a float, msgspec may not."""


#: Values a parsed Deyel page holds, floats in msgspec's same-text range included.
_PLAIN = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(min_value=1e-4, max_value=9.999999999999998e15),
    st.floats(min_value=-9.999999999999998e15, max_value=-1e-4),
    st.sampled_from([0.0, -0.0, 1e-4, 9999999999999998.0, 2.0**53, 0.1 + 0.2]),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8),
    st.sampled_from(["\x00", "\x1f", "\x7f", "\u2028", "é", "\U0001f600", '"', "\\", "/", "\b\f\n\r\t"]),
)
#: One of these in a record sends the page (or that record) to json.
_ODD = st.one_of(
    st.sampled_from(
        [
            *(1e16, -1e16, 1e-5, 5e-324, 1.7976931348623157e308, float("nan"), float("inf")),
            *("\ud800", "a\udfff", _Text("sub"), _Number(7), _Real(1e16), _Real(0.5), (1, "a"), (1e16,)),
            *({1e16: 1}, {1e-5: 1}, {0.5: 1}, {7: 1}, {True: 1}, {None: 1}, {_Text("k"): 1}, {"\ud800": 1}),
        ]
    ),
    st.floats(),
)


def test_a_page_is_written_in_one_call_only_where_the_bytes_are_the_standard_library_s():
    """The page path (one msgspec call after the walk of ``_differs``) against the bytes ``json`` wrote, on
    pages of Deyel-like records, some with one odd value somewhere (nested too): bools against ints, -0.0,
    the bounds of the float range, integers past 64 bits, str and int subclasses, keys that are not text,
    lone surrogates, NUL and the other controls."""
    from deyel_provider.extract.formats.base import _page_lines

    branches = Branches()
    plain_values = st.recursive(
        _PLAIN,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT.filter(_utf8), inner, max_size=3),
        max_leaves=8,
    )
    odd_values = st.recursive(
        _ODD,
        lambda inner: (
            st.lists(inner, min_size=1, max_size=2) | st.dictionaries(TEXT, inner, min_size=1, max_size=2)
        ),
        max_leaves=3,
    )

    @settings(max_examples=400, deadline=None)
    @given(
        st.lists(st.dictionaries(TEXT.filter(_utf8), plain_values, max_size=6), max_size=5),
        st.one_of(st.none(), st.tuples(st.integers(0, 5), TEXT, odd_values)),
    )
    def check(records: list[dict[str, Any]], odd: tuple[int, str, Any] | None) -> None:
        if odd is not None:
            at, key, value = odd
            records = [*records[:at], {key: value}, *records[at:]]
        page = _page_lines(records)
        expected = old_jsonl(records) if records else b""  # an empty page: no line (never written)
        data, escaped, nonfinite = json_lines(records)
        assert data == expected
        assert escaped == any(_has_surrogate(json_text(record)) for record in records)
        assert nonfinite == any(not math.isfinite(f) for f in _floats(records))
        if page is None:
            branches.took("record by record")
            return
        assert page == expected
        branches.took("one call")

    check()
    assert branches.counts["record by record"] >= 40, dict(branches.counts)
    branches.assert_share("one call", at_least=0.3, examples=200)


def _utf8(text: str) -> bool:
    return not _has_surrogate(text)


# -- a page's "plain" fact, taken as it is parsed (issue 24, "Faster than a raw loop") ----------------------

#: JSON number texts in every notation a server may use (exponents in either case and sign, leading zeros
#: after the point, long mantissas): msgspec's float_hook sees them as written, not as ``repr`` writes them.
NUMBER_TEXTS = st.from_regex(r"-?(0|[1-9][0-9]{0,19})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
SCALAR_TEXTS = st.one_of(
    NUMBER_TEXTS,
    st.sampled_from(["1e16", "1E16", "9999999999999999.5", "0.0001", "0.00009999", "1e-4", "-0.0", "0e400"]),
    st.sampled_from(["1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity", '"\\ud800"', '"\\udfff"']),
    # A lone surrogate stays raw in the text: the body's bytes (surrogatepass) are then not UTF-8.
    SCALARS.map(lambda value: json.dumps(value, ensure_ascii=False)),
)
VALUE_TEXTS = st.recursive(
    SCALAR_TEXTS,
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
        | st.dictionaries(TEXT.map(json.dumps), inner, max_size=3).map(
            lambda items: "{" + ",".join(f"{key}:{value}" for key, value in items.items()) + "}"
        )
    ),
    max_leaves=8,
)


def _object_text(items: dict[str, str]) -> str:
    return "{" + ",".join(f"{key}:{value}" for key, value in items.items()) + "}"


RECORD_TEXTS = st.dictionaries(TEXT.map(json.dumps), VALUE_TEXTS, max_size=5).map(_object_text)
#: Records as Deyel sends them (text, integers, amounts, grids), in any number notation: mostly plain.
DEYEL_RECORD_TEXTS = st.dictionaries(
    st.sampled_from(["idObjectValue", "dsCompany", "qtEmployee", "nuRevenue", "lsAddress", "flActive"]).map(
        json.dumps
    ),
    st.recursive(
        st.one_of(
            _PLAIN.map(lambda value: json.dumps(value, ensure_ascii=False)),
            NUMBER_TEXTS.filter(lambda text: float(text) == 0.0 or 1e-4 <= abs(float(text)) < 1e16),
        ),
        lambda inner: st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
        max_leaves=4,
    ),
    max_size=6,
).map(_object_text)
#: A Deyel record holding a float msgspec writes otherwise (in a grid, in any notation).
ODD_RECORD_TEXTS = st.one_of(
    NUMBER_TEXTS.filter(lambda text: float(text) != 0.0 and not 1e-4 <= abs(float(text)) < 1e16),
    st.sampled_from(["1e16", "-1E+16", "0.00001", "1e-5", "12345678901234567.0", "9999999999999999.5"]),
).map(lambda text: f'{{"idObjectValue":"7","lsAddress":[{{"nuLat":0.5}},{{"nuLat":{text}}}]}}')
BODIES = st.one_of(
    st.lists(DEYEL_RECORD_TEXTS, max_size=4),
    st.lists(RECORD_TEXTS, max_size=4),
    st.tuples(st.lists(DEYEL_RECORD_TEXTS, max_size=3), ODD_RECORD_TEXTS, st.integers(0, 3)).map(
        lambda drawn: [*drawn[0][: drawn[2]], drawn[1], *drawn[0][drawn[2] :]]
    ),
).map(lambda records: "[" + ",".join(records) + "]")


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for item in value.values() for f in _floats(item)]
    if isinstance(value, list):
        return [f for item in value for f in _floats(item)]
    return []


def _written(records: list[dict[str, Any]], plain: bool) -> bytes:
    import io

    from deyel_provider.extract.formats.text import JsonLinesWriter
    from deyel_provider.storage.compression import EncodedFile

    raw = io.BytesIO()
    writer = JsonLinesWriter(lambda number: EncodedFile(raw, None))
    writer.write_page(records, plain=plain)
    return raw.getvalue()  # an uncompressed file: every byte is in ``raw`` as written


def test_a_page_parsed_from_any_body_is_written_as_json_wrote_the_values_json_parsed():
    """Generated JSON bodies (numbers in every notation, NaN, numbers past a float's range, lone surrogates,
    nesting) through the real parse (``parse_page``) and the JSON Lines writer with the page's plain fact:
    the bytes are ``json``'s text of ``json``'s parse, and a page is plain exactly when msgspec parsed it and
    every float in it lies where both encoders write it alike."""
    from deyel_provider.api.pagination import Paging, parse_page
    from deyel_provider.exceptions import DeyelBadResponseError

    branches = Branches()

    @settings(max_examples=400, deadline=None)
    @given(BODIES, st.sampled_from(["utf-8", None, "ISO-8859-1"]))
    # A raw lone surrogate (bytes that are not UTF-8), which the strategy rarely draws: a CI run found both.
    @example('[{"":"\ud800"}]', "utf-8")
    @example('[{"":"\ud800"}]', "ISO-8859-1")
    def check(text: str, encoding: str | None) -> None:
        body = text.encode("utf-8", "surrogatepass")  # a raw lone surrogate: bytes that are not UTF-8
        try:
            # What Response.json() made of it before msgspec (the contract, json_body.py): json's parse of
            # the text, as requests decodes it (invalid UTF-8 replaced).
            expected = _response(body, encoding).json()
        except ValueError:
            expected = None
        try:
            page = parse_page(_response(body, encoding), Paging(), plain=True)
        except DeyelBadResponseError:
            assert expected is None or not all(isinstance(r, dict) for r in expected)
            branches.took("refused")
            return
        assert _same(page.records, expected)
        # Not asked for the fact (every writer but JSON Lines): the same records, never called plain.
        unasked = parse_page(_response(body, encoding), Paging())
        assert _same(unasked.records, expected) and unasked.plain is False
        try:
            msgspec.json.decode(body)
            by_msgspec = encoding != "ISO-8859-1"
        except (msgspec.MsgspecError, ValueError):  # ValueError: bytes that are not UTF-8
            by_msgspec = False
        odd = [f for f in _floats(expected) if f != 0.0 and not 1e-4 <= abs(f) < 1e16]
        assert page.plain == (by_msgspec and not odd), (body, page.plain)
        assert _written(page.records, page.plain) == (old_jsonl(expected) if expected else b"")
        if page.plain:
            branches.took("plain: one call")
        else:
            branches.took("odd float" if by_msgspec else "parsed by json")

    check()
    for branch in ("odd float", "parsed by json"):
        assert branches.counts[branch] >= 25, dict(branches.counts)
    branches.assert_share("plain: one call", at_least=0.25, examples=300)


def test_a_plain_page_is_written_without_the_walk_and_any_other_page_with_it(monkeypatch):
    """The plain fact replaces ``_differs``' walk: a plain page is never walked, a page without the fact
    (records from elsewhere) always is; both give json's bytes."""
    from bench.json_codecs import page_records
    from deyel_provider.extract.formats import base

    walked: list[Any] = []
    real = base._differs
    monkeypatch.setattr(base, "_differs", lambda value: walked.append(value) or real(value))
    records = page_records(1000)
    assert _written(records, plain=True) == old_jsonl(records)
    assert walked == []
    assert _written(records, plain=False) == old_jsonl(records)
    # A projection (fields=[...]) keeps some values and adds nulls: still plain, still json's bytes.
    import io

    from deyel_provider.extract.formats.text import JsonLinesWriter
    from deyel_provider.storage.compression import EncodedFile

    raw = io.BytesIO()
    writer = JsonLinesWriter(lambda number: EncodedFile(raw, None), ["nuRevenue", "missing", "lsAddress"])
    writer.write_page(records, plain=True)  # the writer kept: its file, dropped, would close ``raw``
    projected = [
        {name: record.get(name) for name in ("nuRevenue", "missing", "lsAddress")} for record in records
    ]
    assert raw.getvalue() == old_jsonl(projected)
    assert sum(map(id, records)) == sum(
        id(value) for value in walked if type(value) is dict and "idObjectValue" in value
    )


def test_only_a_body_msgspec_parses_with_every_float_in_range_is_plain():
    from deyel_provider.http.json_body import response_body

    assert response_body(
        _response(b'[{"a":1.5,"b":[0.0,-0.0,1e-4,9.9e15],"c":10e2,"d":123456789012345678901}]')
    )[1]
    for odd in (
        b"1e16",
        b"1E+16",
        b"-1e16",
        b"0.00001",
        b"1e-5",
        b"5e-324",
        b"1e308",
        b"12345678901234567.0",
    ):
        assert response_body(_response(b'[{"a":[{"b":' + odd + b"}]}]")) == (
            [{"a": [{"b": float(odd)}]}],
            False,
        )
    # Refused by msgspec, parsed by json as before: never plain.
    for body, value in ((b"[1e400]", math.inf), (b"[-1e400]", -math.inf), (b'["\\ud800"]', "\ud800")):
        assert response_body(_response(body)) == ([value], False)
    parsed, plain = response_body(_response(b"[NaN]"))
    assert math.isnan(parsed[0]) and not plain
    assert response_body(_response('[{"a":"ñ"}]'.encode("latin-1"), "ISO-8859-1")) == ([{"a": "ñ"}], False)
    # A float of any notation is the float json reads from that text.
    for text in (
        "0.1",
        "1.0000000000000002",
        "2.2250738585072011e-308",
        "1e-400",
        "-0e5",
        "9007199254740993.0",
    ):
        ((value,), _) = response_body(_response(f"[{text}]".encode()))
        assert repr(value) == repr(json.loads(text))


def test_an_extraction_writes_its_plain_pages_in_one_call_and_a_page_with_an_odd_float_checked(
    tmp_path, monkeypatch
):
    """A real extraction (emulator, HTTP, the sliced reader, the JSON Lines writer): every written page that
    holds a float msgspec writes otherwise reaches the writer without the plain fact and is walked; every
    other page reaches it plain. Each line is ``json``'s own text of the value it holds."""
    from deyel_provider.extract.formats import text
    from tests.support.extracting import extract_pages

    calls: list[tuple[bool, bool]] = []  # (a record holds the odd float, plain)
    real = text.json_lines

    def spy(records: Any, *, plain: bool = False) -> tuple[bytes, bool]:
        odd = any("lsGrid" in record for record in records)
        calls.append((odd, plain))
        return real(records, plain=plain)

    monkeypatch.setattr(text, "json_lines", spy)
    pages = [
        [{"dsName": f"n{page}-{n}", "nuRevenue": n + 0.25, "qtSeats": 2**70} for n in range(20)]
        for page in range(4)
    ]
    pages[2][5] = {"dsName": "odd", "lsGrid": [{"nuOdd": 1e16}, {"nuOdd": 1e-7}]}
    result, (path,) = extract_pages(tmp_path / "out.jsonl", "jsonl", pages)
    assert result.records == 80
    lines = path.read_bytes().splitlines()
    assert len(lines) == 80
    assert all(json_text(json.loads(line)).encode("utf-8") == line for line in lines)
    assert sum(b'"lsGrid":[{"nuOdd":1e+16},{"nuOdd":1e-07}]' in line for line in lines) == 1
    assert sum(odd for odd, _ in calls) == 1
    assert all(plain != odd for odd, plain in calls), calls
    assert len(calls) >= 2


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_only_a_json_lines_extraction_pays_for_the_plain_fact(
    deyel_conn, emulator, tmp_path, monkeypatch, fmt
):
    """Learning whether a page is plain costs a Python call per float in the parse (msgspec's float_hook):
    only JSON Lines uses the fact, so CSV and Parquet extractions parse without the hook (review of issue 24:
    a float-heavy page parsed 2.5-4x slower for every reader)."""
    from deyel_provider.api import pagination
    from deyel_provider.operators.extract import DeyelExtractOperator

    hooked: list[bool] = []
    real = pagination.response_body
    monkeypatch.setattr(pagination, "response_body", lambda response: hooked.append(True) or real(response))
    task = DeyelExtractOperator(
        task_id="x",
        form="CRM_ACCOUNT",
        output=str(tmp_path / f"out.{fmt}"),
        format=fmt,
        page_size=20,
        incremental_field=None,
    )
    result = task.execute({})
    assert result["records"] == 50 and result["requests"] >= 3
    assert len(hooked) == (result["requests"] if fmt == "jsonl" else 0)


def test_a_page_of_odd_floats_costs_no_memory_beyond_its_records():
    """The parse learns one fact per page (plain or not): a page holding many floats that the two encoders
    write differently keeps no list of them beside its records (review of issue 24: 8 bytes a float)."""
    import tracemalloc

    from deyel_provider.http.json_body import response_body

    floats = 200_000
    body = ("[" + ",".join('{"nuLat":1e-05}' for _ in range(floats)) + "]").encode()
    tracemalloc.start()
    try:
        records, plain = response_body(_response(body))
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(records) == floats and records[-1] == {"nuLat": 1e-05} and plain is False
    # Beyond what the records hold, the parse's own transient memory: far less than a slot per float.
    assert peak - held < floats * 2, (held, peak)
