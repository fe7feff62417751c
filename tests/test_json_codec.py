"""msgspec in place of json (issue 24, "Faster JSON"): the JSON Lines bytes are those the standard library
wrote, and a parsed page holds the values ``Response.json()`` gave, over generated JSON values (any unicode,
lone surrogates, big integers, every float incl. NaN and the infinities, deep nesting)."""

from __future__ import annotations

import collections
import json
import math
from typing import Any

import requests
from hypothesis import event, given, settings
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
        data, escaped = json_lines(records)
        assert data == old_jsonl(records)
        assert escaped == any(_has_surrogate(json_text(record)) for record in records)

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
        data, escaped = json_lines(records)
        assert data == expected
        assert escaped == any(_has_surrogate(json_text(record)) for record in records)
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
