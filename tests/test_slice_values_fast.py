"""The one-pass check of a plain page (read/slice_values.py ``_plain_entries``, issue 24) against the
record-by-record checks it stands in for: fed the same pages and bounds, whenever the fast pass accepts a
page the checked pass accepts it too, with the same entries (values, ids, the records themselves, in the
same order), for every page hypothesis builds: values as ints, digit strings with blanks, signs and
underscores, other scripts' digits, ISO text, floats, NaN, bools, None, missing, huge; ids as text, ints
("7" and 7), empty, bools, repeated within the page; bounds equal to values (inclusive start, exclusive
end), no end, clipping. A page the fast pass declines goes to the checked pass alone, so its result or error
is the checked pass's by construction; the test shows all three branches ran."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deyel_provider.api.pagination import Page
from deyel_provider.emulator import run_emulator
from deyel_provider.hooks.deyel import DeyelHook
from tests.support.branches import Branches
from tests.support.helpers import fresh_secrets_masker
from tests.test_slice_speed import CountingFetch, reader_for

START = 0  # a bool (True is 1, False 0) lies inside the slice: only its type tells it apart
MISSING = object()  # the key left out of the record

PLAIN_VALUES = st.one_of(
    st.integers(min_value=START - 2, max_value=START + 12),
    st.integers(min_value=START - 2, max_value=START + 12).map(str),
)
ODD_VALUES = st.one_of(
    st.sampled_from(
        [
            " 1001 ",
            "\u20031002\n",
            "+1003",
            "1_004",
            "01005",
            "\u0661\u0660\u0660\u0666",  # Arabic-Indic digits: int() reads 1006
            "1e3",
            "1001.0",
            "",
            " ",
            "-1",
            "2024-05-01T10:00:00-03:00",
            "9" * 5000,  # past int()'s digit limit
            True,
            False,
            None,
            MISSING,
            1001.0,
            float("nan"),
            float("inf"),
            [1001],
            {"v": 1001},
            2**80,
            -(2**80),
            10**15,  # far past the present: refused even when clipped
        ]
    ),
    st.integers(),
    st.text(max_size=6),
)
PLAIN_IDS = st.integers(min_value=0, max_value=40).map(str)
ODD_IDS = st.one_of(
    st.sampled_from(["", " ", "07", "7", 7, 0, True, False, None, MISSING, 7.0, ["7"], 2**70]),
    st.integers(min_value=0, max_value=40),
    st.text(max_size=3),
)


def _record(value: Any, ident: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"dsName": "x"}
    if value is not MISSING:
        record["dtLastUpdate"] = value
    if ident is not MISSING:
        record["idObjectValue"] = ident
    return record


IN_SLICE = st.integers(min_value=START, max_value=START + 12)
PLAIN_PAGES = st.lists(
    st.tuples(st.one_of(PLAIN_VALUES, IN_SLICE, IN_SLICE.map(str)), PLAIN_IDS),
    max_size=12,
    unique_by=lambda pair: pair[1],
)
#: Pages the checked pass accepts and the fast one is not for: ids as integers, values with blanks.
ROUNDABOUT_PAGES = st.lists(
    st.tuples(
        st.one_of(IN_SLICE, IN_SLICE.map(lambda v: f" {v}\t"), IN_SLICE.map(lambda v: f"+{v}")),
        st.one_of(st.integers(min_value=0, max_value=40), PLAIN_IDS),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda pair: str(pair[1]),
)
WILD_PAGES = st.lists(
    st.tuples(st.one_of(PLAIN_VALUES, ODD_VALUES), st.one_of(PLAIN_IDS, ODD_IDS)), max_size=12
)
ENDS = st.one_of(st.none(), st.just(START + 13), st.integers(min_value=START - 1, max_value=START + 13))


def _outcome(call: Any) -> Any:
    try:
        return ("accepted", call())
    except Exception as refused:  # the error itself is the outcome compared
        return ("refused", type(refused), str(refused))


def test_the_fast_pass_accepts_only_what_the_checked_pass_accepts_with_the_same_entries(deyel_conn):
    branches = Branches()
    with run_emulator(records=0) as emulator:
        deyel_conn(url=emulator.url, extra={"cache": "memory"})

        @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(st.one_of(PLAIN_PAGES, ROUNDABOUT_PAGES, WILD_PAGES), ENDS, st.booleans())
        def example(pairs: list[tuple[Any, Any]], end: int | None, clip: bool) -> None:
            fresh_secrets_masker()
            reader = reader_for(emulator, CountingFetch(DeyelHook()), page_size=100)
            records = [_record(value, ident) for value, ident in pairs]
            page = Page(records=records)
            fast = _outcome(lambda: reader._plain_entries(records, START, end))
            checked = _outcome(lambda: reader._checked_entries(page, START, end, clip))
            assert fast[0] == "accepted", fast  # the fast pass never raises: it declines
            if fast[1] is None:
                branches.took("declined: checked " + checked[0])
                return
            assert checked[0] == "accepted", (pairs, end, clip, checked)
            assert fast[1] == checked[1]
            assert all(a[3] is b[3] for a, b in zip(fast[1], checked[1], strict=True))
            branches.took("fast accepted")

        example()
    for branch in ("fast accepted", "declined: checked accepted", "declined: checked refused"):
        assert branches.counts[branch] >= 40, dict(branches.counts)
    branches.assert_share("fast accepted", at_least=0.1, examples=300)


# -- the repeat check of a whole page (read/id_set.py ``IdSet.add_all``) -------------------------------------

SMALL_IDS = st.integers(min_value=0, max_value=5000).map(str)
ODD_ID_TEXTS = st.one_of(
    st.sampled_from(
        [
            *("07", "+7", "-7", " 7", "7 ", "7\n", "1_0", "\u0667", "\uff17", "", "1,2", "7,", ",7", "0x7"),
            *("268435455", "268435456", "999999999", "1000000000", "0", "00", "7.0", "1e3"),
        ]
    ),
    st.text(alphabet="0123456789,+ ", max_size=4),
    st.integers(min_value=0, max_value=2**40).map(str),
)


def test_a_page_of_ids_is_added_as_the_ids_one_by_one():
    """``IdSet.add_all`` answers what ``add`` answers id after id (repeats within the page and across pages,
    non-canonical spellings kept apart from the canonical one, ids past the bitmap), and holds as many."""
    from deyel_provider.read.id_set import IdSet, _small_numbers

    branches = Branches()

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.lists(SMALL_IDS, max_size=20), st.lists(st.one_of(SMALL_IDS, ODD_ID_TEXTS), max_size=20)
            ),
            max_size=4,
        )
    )
    def example(pages: list[list[str]]) -> None:
        batched, one_by_one = IdSet(), IdSet()
        for page in pages:
            expected = [one_by_one.add(instance_id) for instance_id in page]
            assert batched.add_all(page) == expected, page
            assert len(batched) == len(one_by_one)
            branches.took("page at once" if _small_numbers(page) is not None else "id by id")
        assert len(batched._bits) <= (1 << 28) // 8
        assert batched._others == one_by_one._others

    example()
    branches.assert_share("page at once", at_least=0.3, examples=300)
    assert branches.counts["id by id"] >= 100, dict(branches.counts)


def test_a_page_of_ids_at_the_bitmap_s_edge():
    from deyel_provider.read.id_set import IdSet

    ids = IdSet()
    assert ids.add_all(["268435455", "0", "268435455", "7"]) == [True, True, False, True]
    assert len(ids._bits) == (1 << 28) // 8  # the cap: 32 MiB
    # One id past the limit sends the page id by id: the same answers, that one in the set.
    assert ids.add_all(["268435456", "7", "8", "268435456"]) == [True, False, True, False]
    assert ids._others == {"268435456"}
    assert ids.add_all(["07", "7", "1,2"]) == [True, False, True]
    assert ids.add_all([]) == []
    assert len(ids) == 7
