"""Keys compared as the key field's type (issue 21, finding 3): for a numeric key ``7``, ``7.0``, ``"007"``
and ``"7.00"`` are one key in the duplicate check, the search and the matching of instances; text keys compare
exactly. The type is declared (``key_type``) or inferred (prefix, the form's instances, the source). Loads run
against the emulator over HTTP; counts come from its store and request counters."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import pytest

from deyel_provider.emulator.forms import TARGET_FORM
from deyel_provider.exceptions import DeyelConfigError, DeyelSourceError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.load.key_types import NotAKey, infer_key_type, normalise, written_value
from deyel_provider.load.upsert import load_records as upsert
from deyel_provider.operators.upsert import DeyelUpsertOperator

#: A form without a schema (made by its first create): its fields have no prefix, so no type is declared.
LEGACY = "LEGACY_ITEMS"


def load(form: str, source: Any, key: str, **kwargs: Any) -> tuple[int, int, int, int]:
    kwargs.setdefault("progress_interval", 3600)
    result = DeyelUpsertOperator(task_id="load", form=form, source=source, key=key, **kwargs).execute({})
    return result["created"], result["updated"], result["unchanged"], result["rejected"]


def instances(emulator, form: str) -> list[dict[str, Any]]:
    store = emulator.state.store
    return [store.get(form, i) for i in store.all_ids(form)]


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def customer(number: Any, name: str = "Seven", code: str = "C-7") -> dict[str, Any]:
    return {"qtEmployee": number, "cdCustomer": code, "dsName": name}


# -- the duplicate check -----------------------------------------------------------------------------------


def test_7_and_007_in_one_source_are_one_numeric_key_named_at_both_lines_before_any_request(
    emulator, deyel_conn, tmp_path
):
    records = [customer(n, code=f"C-{n}") for n in (1, 2, 7, 3, 4, 5, 6, 8, "007", 9)]
    path = write_jsonl(tmp_path / "customers.jsonl", records)
    emulator.reset()
    with pytest.raises(DeyelSourceError) as raised:
        load(TARGET_FORM, path, "qtEmployee")
    message = str(raised.value)
    assert "'7' at line 3, line 9 ('007')" in message
    assert "compared as numbers" in message
    assert emulator.methods() == {}  # qtEmployee's prefix tells the type: not even a listing
    assert instances(emulator, TARGET_FORM) == []


def test_a_key_that_is_not_a_number_is_named_with_its_record_before_any_request(emulator, deyel_conn):
    emulator.reset()
    with pytest.raises(DeyelSourceError, match=r"record 2 has 'seven' in 'qtEmployee'.*key_type='text'"):
        load(TARGET_FORM, [customer(7), customer("seven", code="C-8")], "qtEmployee")
    assert emulator.methods() == {}


def test_text_keys_007_and_7_stay_two_keys(emulator, deyel_conn):
    source = [customer(1, name="Zero seven", code="007"), customer(2, name="Seven", code="7")]
    assert load(TARGET_FORM, source, "cdCustomer") == (2, 0, 0, 0)
    assert load(TARGET_FORM, source, "cdCustomer") == (0, 0, 2, 0)
    assert sorted(i["cdCustomer"] for i in instances(emulator, TARGET_FORM)) == ["007", "7"]


# -- matching the form's instances -------------------------------------------------------------------------


def test_a_form_holding_7_and_sources_keyed_007_make_one_instance_over_three_loads(
    emulator, deyel_conn, tmp_path
):
    emulator.state.store.create(TARGET_FORM, customer(7))
    jsonl = write_jsonl(tmp_path / "a.jsonl", [customer("007")])
    csv = tmp_path / "b.csv"
    csv.write_text("qtEmployee,cdCustomer,dsName\n007,C-7,Seven again\n", encoding="utf-8")
    emulator.reset()
    assert load(TARGET_FORM, jsonl, "qtEmployee") == (0, 0, 1, 0)
    assert load(TARGET_FORM, str(csv), "qtEmployee") == (0, 1, 0, 0)
    assert load(TARGET_FORM, [customer("7.00", name="Seven again")], "qtEmployee") == (0, 0, 1, 0)
    # Two GETs a search (a page of one more proves the count header counts the search): no POST.
    assert emulator.methods() == {"GET": 6, "PATCH": 1}
    [held] = instances(emulator, TARGET_FORM)
    assert (held["qtEmployee"], held["dsName"]) == (7, "Seven again")


def test_an_instance_holding_the_number_as_text_answers_the_record_keyed_007(emulator, deyel_conn):
    emulator.state.store.create(TARGET_FORM, customer("7.0"))  # Deyel 8.0 sends numbers as text
    emulator.reset()
    assert load(TARGET_FORM, [customer("007")], "qtEmployee") == (0, 0, 1, 0)
    assert load(TARGET_FORM, [customer(7, name="Seven again")], "qtEmployee") == (0, 1, 0, 0)
    assert emulator.methods() == {"GET": 4, "PATCH": 1}
    assert len(instances(emulator, TARGET_FORM)) == 1


def test_a_numeric_key_given_as_text_is_created_as_its_number_once(emulator, deyel_conn):
    assert load(TARGET_FORM, [customer("007")], "qtEmployee") == (1, 0, 0, 0)
    assert load(TARGET_FORM, [customer(7.0)], "qtEmployee") == (0, 0, 1, 0)
    assert load(TARGET_FORM, [customer(" 7e0 ")], "qtEmployee") == (0, 0, 1, 0)
    [held] = instances(emulator, TARGET_FORM)
    assert held["qtEmployee"] == 7  # the number, not "007": a number field refuses text


def test_numeric_keys_past_a_floats_precision_stay_apart(emulator, deyel_conn):
    big = 2**53 + 1  # as a float, the same as 2**53
    emulator.state.store.create(TARGET_FORM, customer(big, code="C-big"))
    source = [customer(str(big), code="C-big"), customer(str(big - 1), code="C-other")]
    assert load(TARGET_FORM, source, "qtEmployee") == (1, 0, 1, 0)
    assert sorted(i["qtEmployee"] for i in instances(emulator, TARGET_FORM)) == [big - 1, big]


# -- declared or inferred ----------------------------------------------------------------------------------


def test_the_type_is_inferred_from_the_forms_instances_or_declared(emulator, deyel_conn, caplog):
    # An unprefixed field: the emulator compares it as text ("7" = 7, not "007"), so only a client
    # that searches 007 as 7 finds the instance.
    emulator.state.store.create(LEGACY, {"itemNumber": 7, "dsLabel": "seven"})
    emulator.reset()
    caplog.set_level(logging.INFO, logger="deyel_provider.load")
    assert load(LEGACY, [{"itemNumber": "007", "dsLabel": "seven"}], "itemNumber") == (0, 0, 1, 0)
    # The load logs through its module loggers, which Airflow's task runner routes to the task log.
    logged = caplog.text
    assert "keys of itemNumber compared as number: the form's instances hold numbers" in logged
    assert emulator.methods() == {"GET": 3}  # the sample of instances, the search and its proof page
    emulator.reset()
    assert load(LEGACY, [{"itemNumber": "7.00", "dsLabel": "seven"}], "itemNumber", key_type="number") == (
        0,
        0,
        1,
        0,
    )
    assert emulator.methods() == {"GET": 2}  # declared: no sample
    assert len(instances(emulator, LEGACY)) == 1


def test_instances_holding_numbers_and_texts_in_the_key_fail_typed_asking_for_key_type(emulator, deyel_conn):
    emulator.state.store.create(LEGACY, {"itemNumber": 7})
    emulator.state.store.create(LEGACY, {"itemNumber": "B-8"})
    emulator.reset()
    with pytest.raises(DeyelConfigError, match=r"both numbers .* and texts .* key_type='number'"):
        load(LEGACY, [{"itemNumber": "007"}], "itemNumber")
    assert emulator.methods() == {"GET": 1}  # the sample only: nothing written
    assert load(LEGACY, [{"itemNumber": "B-8"}], "itemNumber", key_type="text") == (0, 0, 1, 0)


def test_an_empty_form_takes_the_type_from_the_source_and_logs_why(emulator, deyel_conn, caplog):
    store = emulator.state.store
    store.delete(LEGACY, store.create(LEGACY, {"itemNumber": 1})[0])  # the form exists, empty
    hook = DeyelHook()
    caplog.set_level(logging.INFO, logger="deyel_provider.load")
    result = upsert(hook, LEGACY, [{"itemNumber": 7}, {"itemNumber": 8.0}], "itemNumber")
    assert (result.created, result.unchanged) == (2, 0)
    assert "compared as number: the form has no instance to tell, and every source key is a number" in (
        caplog.text
    )
    caplog.clear()
    # The form now holds numbers: "007" is 7.
    result = upsert(hook, LEGACY, [{"itemNumber": "007"}], "itemNumber")
    assert (result.created, result.unchanged) == (0, 1)
    assert "the form's instances hold numbers" in caplog.text


def test_key_type_is_checked_at_parse_time_and_templated():
    with pytest.raises(DeyelConfigError, match="key_type must be one of \\['number', 'text'\\]"):
        DeyelUpsertOperator(task_id="t", form=TARGET_FORM, source="a.jsonl", key="qtEmployee", key_type="int")
    operator = DeyelUpsertOperator(
        task_id="t", form=TARGET_FORM, source="a.jsonl", key="qtEmployee", key_type="{{ params.kt }}"
    )
    assert "key_type" in operator.template_fields


# -- the normalising function ------------------------------------------------------------------------------


def test_normalise_gives_one_text_per_number_and_keeps_text_exact():
    same_seven = [7, 7.0, "007", "7.00", " 7 ", "7e0", "+7", Decimal("7.000")]
    assert {normalise(v, "number") for v in same_seven} == {"7"}
    assert normalise("0012.50", "number") == "12.5" == normalise(12.5, "number")
    assert normalise("700", "number") == "700" and normalise("-0", "number") == "0"
    assert normalise(2**53 + 1, "number") != normalise(2**53, "number")
    assert normalise("9007199254740993", "number") == "9007199254740993"
    long = "1234567890.12345678901234567890123456789"  # past Decimal's 28 digits of context
    assert normalise("00" + long + "000", "number") == long
    assert normalise("007", "text") == "007" != normalise("7", "text")
    assert normalise(None, "number") is None and normalise("", "text") is None
    for bad in ("seven", "1_000", "NaN", "inf", True, "1e999999999"):
        with pytest.raises(NotAKey):
            normalise(bad, "number")
    assert written_value("qtEmployee", "007", "number") == 7
    assert written_value("nuRevenue", "12.50", "number") == 12.5
    assert written_value("cdCustomer", "007", "number") == "7"  # a text field takes the number's text
    assert written_value("cdCustomer", "007", "text") == "007"


def test_infer_key_type_from_instances_prefix_then_source():
    def infer(held: list[Any], key: str = "itemNumber", source: Any = ()) -> str:
        return infer_key_type([{key: v} for v in held], key, source)[0]

    assert infer([7, 8.5, None]) == "number"
    assert infer(["A-1", "7"]) == "text"
    assert infer(["7", "8"], key="qtEmployee") == "number"  # Deyel 8.0 sends numbers as text
    assert infer([], key="qtEmployee") == "number" and infer([], key="cdCustomer") == "text"
    assert infer([], source=[1, 2.5]) == "number" and infer([], source=[1, "2"]) == "text"
    with pytest.raises(DeyelConfigError, match="pass key_type"):
        infer([7, "8"])
    read: list[Any] = []

    def source() -> Any:
        for value in (1, "a", 3):
            read.append(value)
            yield value

    assert infer([7], source=source()) == "number" and read == []  # the source is read only when needed


def test_every_spelling_of_a_number_is_one_key_and_different_numbers_stay_apart():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.support.branches import Branches

    branches = Branches()
    numbers = st.decimals(allow_nan=False, allow_infinity=False, places=3)

    @settings(max_examples=300, deadline=None)
    @given(
        a=st.one_of(st.integers(-(10**30), 10**30), numbers),
        b=st.one_of(st.integers(-(10**30), 10**30), numbers),
        zeros=st.integers(0, 3),
        trailing=st.integers(0, 3),
    )
    def check(a: Any, b: Any, zeros: int, trailing: int) -> None:
        a, b = Decimal(a), Decimal(b)
        sign, digits = ("-" if a < 0 else ""), format(a.copy_abs(), "f")  # abs() would round to 28 digits
        padded = sign + "0" * zeros + digits + ("" if "." in digits else ".") + "0" * trailing
        branches.took("whole" if a == a.to_integral_value() else "fraction")
        assert normalise(padded, "number") == normalise(a, "number") == normalise(str(a), "number")
        assert (normalise(a, "number") == normalise(b, "number")) == (a == b)
        if a == int(a) and abs(a) < 2**53:
            assert normalise(float(a), "number") == normalise(int(a), "number")

    check()
    # No failure branch: every example must hold. Both kinds of number must be drawn often.
    branches.assert_share("whole", at_least=50 / 300)
    branches.assert_share("fraction", at_least=50 / 300)


# -- review of issue 21: keys written exactly, ASCII digits only, one instance enough ------------------------


def test_a_fractional_numeric_key_a_float_would_round_is_refused_before_any_write(emulator, deyel_conn):
    """ "1.00000000000000000001" would be sent as 1.0 and searched as its exact text: never found again, so
    created on every run. It is refused naming the record and why; one a float holds exactly ("12.5") is
    written as its number and found by the next run."""
    emulator.reset()
    with pytest.raises(DeyelSourceError, match=r"record 2 has '1.00000000000000000001' in 'qtEmployee'") as e:
        load(TARGET_FORM, [customer(3, code="C-3"), customer("1.00000000000000000001")], "qtEmployee")
    assert "each run would create it again" in str(e.value)
    assert emulator.methods() == {} and instances(emulator, TARGET_FORM) == []
    for _ in range(2):
        load(TARGET_FORM, [customer("12.50")], "qtEmployee")
    assert [i["qtEmployee"] for i in instances(emulator, TARGET_FORM)] == [12.5]
    with pytest.raises(NotAKey, match="not every digit"):
        written_value("qtEmployee", Decimal("0.1000000000000000000001"), "number")
    assert (
        written_value("qtEmployee", "123456789012345678901234567890", "number")
        == 123456789012345678901234567890
    )


def test_a_numeric_key_with_non_ascii_digits_is_named_with_its_record(emulator, deyel_conn):
    """U+0667 (Arabic-Indic seven) or U+FF17 (full-width seven) would be read as 7 by Decimal, then searched
    and stored as another text than 7: only ASCII digits make a numeric key."""
    for digit in ("\u0667", "\uff17", "1\u0662"):
        with pytest.raises(NotAKey):
            normalise(digit, "number")
    emulator.reset()
    with pytest.raises(DeyelSourceError, match=r"record 1 has '\uff17' in 'qtEmployee'"):
        load(TARGET_FORM, [customer("\uff17")], "qtEmployee")
    assert emulator.methods() == {}


def test_zero_with_a_large_negative_exponent_is_zero():
    assert normalise("0e-5000", "number") == "0" == normalise(Decimal("0E+5000"), "number")
    assert written_value("qtEmployee", "0e-5000", "number") == 0
    with pytest.raises(NotAKey, match="more than 1000 digits"):
        normalise("1e-5000", "number")


def test_a_numeric_key_form_with_one_instance_can_still_create(deyel_conn):
    """The form holds one instance: the separator proof cannot pad its one sample value with a made-up
    text (a numeric field answers 400), so it searches it twice, and the load creates."""
    from deyel_provider.emulator import run_emulator

    with run_emulator(records=0) as emulator:
        deyel_conn(url=emulator.url)
        emulator.state.store.create(TARGET_FORM, customer(7))
        source = [customer(8, code="C-8"), customer(9, code="C-9")]
        assert upsert(DeyelHook(), TARGET_FORM, source, "qtEmployee", batch_size=10).created == 2
        assert upsert(DeyelHook(), TARGET_FORM, source, "qtEmployee", batch_size=10).created == 0
