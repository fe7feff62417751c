"""DeyelHook.iter_instances over every paging strategy, against the emulator over real HTTP."""

from __future__ import annotations

import pytest

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.pagination import Paging

RECORDS = 257  # not a multiple of any page size used below: the last page is short


def expected_ids(n: int = RECORDS) -> list[str]:
    return [str(i) for i in range(1, n + 1)]


def ids_of(records) -> list[str]:
    return [r["idObjectValue"] for r in records]


@pytest.mark.parametrize("strategy", ["page", "offset", "link", "none"])
def test_every_strategy_yields_each_instance_once_in_order(deyel_conn, strategy):
    with run_emulator(records=RECORDS, paging=strategy) as emulator:
        deyel_conn(url=emulator.url, extra={"paging": strategy})
        records = list(DeyelHook().iter_instances("CRM_ACCOUNT", page_size=50))
        assert ids_of(records) == expected_ids()
        pages = 1 if strategy == "none" else 6  # 5 full pages and a short one
        assert emulator.stats()["api_requests"] == pages


@pytest.mark.parametrize("strategy", ["page", "offset"])
def test_exact_multiple_without_total_ends_on_the_empty_page(deyel_conn, strategy):
    with run_emulator(records=200, paging=strategy) as emulator:
        deyel_conn(url=emulator.url, extra={"paging": strategy, "total_header": "X-Not-Sent"})
        assert ids_of(DeyelHook().iter_instances("CRM_ACCOUNT", page_size=50)) == expected_ids(200)
        assert emulator.stats()["api_requests"] == 5  # four full pages, then an empty one


def test_custom_parameter_names(deyel_conn):
    with run_emulator(records=RECORDS, paging="offset", offset_param="skip", limit_param="top") as emulator:
        deyel_conn(url=emulator.url, extra={"paging": "offset", "offset_param": "skip", "limit_param": "top"})
        assert ids_of(DeyelHook().iter_instances("CRM_ACCOUNT", page_size=100)) == expected_ids()


def test_server_capping_the_page_size_is_followed(deyel_conn):
    with run_emulator(records=RECORDS, page_size_max=40) as emulator:
        deyel_conn(url=emulator.url)
        assert ids_of(DeyelHook().iter_instances("CRM_ACCOUNT", page_size=100)) == expected_ids()


@pytest.mark.parametrize("records", [50, 257])
def test_server_ignoring_paging_ends(deyel_conn, records):
    """The server answers every page with the whole collection: no loop, no duplicates."""
    with run_emulator(records=records, paging="none") as emulator:
        deyel_conn(url=emulator.url, extra={"paging": "page", "total_header": "X-Not-Sent"})
        assert ids_of(DeyelHook().iter_instances("CRM_ACCOUNT", page_size=50)) == expected_ids(records)
        # 257 > 50: the oversized first page is the whole; 50 == 50: page 2 repeats page 1 and ends it.
        assert emulator.stats()["api_requests"] == (1 if records > 50 else 2)


def test_search_and_fields(deyel_conn, emulator):
    hook = DeyelHook()
    every = list(hook.iter_instances("CRM_ACCOUNT"))
    argentine = [r for r in every if r["cdCountry"] == "AR"]
    assert argentine
    picked = list(hook.iter_instances("CRM_ACCOUNT", search="cdCountry=eq:AR", fields=["cdCountry", "nope"]))
    assert picked == [{"cdCountry": "AR", "nope": None}] * len(argentine)


@pytest.mark.parametrize("strategy", ["page", "offset"])
def test_parallel_fetching_keeps_the_server_order(deyel_conn, strategy):
    with run_emulator(records=RECORDS, paging=strategy) as emulator:
        deyel_conn(url=emulator.url, extra={"paging": strategy})
        records = list(DeyelHook().iter_instances("CRM_ACCOUNT", page_size=20, max_workers=4))
        assert ids_of(records) == expected_ids()
        assert emulator.stats()["api_requests"] == 13


def test_parallel_falls_back_to_sequential_for_links(deyel_conn):
    with run_emulator(records=RECORDS, paging="link") as emulator:
        deyel_conn(url=emulator.url, extra={"paging": "link"})
        records = list(DeyelHook().iter_instances("CRM_ACCOUNT", page_size=50, max_workers=4))
        assert ids_of(records) == expected_ids()


def test_bad_paging_options_are_typed_errors(deyel_conn, emulator):
    with pytest.raises(DeyelConfigError, match="page_size"):
        list(DeyelHook().iter_instances("CRM_ACCOUNT", page_size=0))
    with pytest.raises(DeyelConfigError, match="max_workers"):
        list(DeyelHook().iter_instances("CRM_ACCOUNT", max_workers=0))
    with pytest.raises(DeyelConfigError, match="form"):
        list(DeyelHook().iter_instances("../oauth"))
    with pytest.raises(DeyelConfigError, match="paging"):
        Paging(strategy="cursor")
    deyel_conn("bad", extra={"paging": "cursor"})
    with pytest.raises(DeyelConfigError, match="paging"):
        list(DeyelHook("bad").iter_instances("CRM_ACCOUNT"))


def test_a_page_that_is_not_an_array_of_objects_is_a_typed_error(deyel_conn, emulator):
    from deyel_provider.exceptions import DeyelBadResponseError

    for body, problem in (('{"items": []}', "got dict"), ('[{"a": 1}, 2]', "item 1 is int")):
        emulator.set_faults([{"route": "data", "action": "status", "status": 200, "raw_body": body}])
        with pytest.raises(DeyelBadResponseError, match=problem) as caught:
            list(DeyelHook().iter_instances("CRM_ACCOUNT", fields=["a"]))
        assert (caught.value.method, caught.value.path) == ("GET", "/forms/CRM_ACCOUNT/instances")
        assert str(caught.value).startswith("GET /forms/CRM_ACCOUNT/instances")
