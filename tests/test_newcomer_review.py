"""Adversarial review of issue 27 (search validation, the Test button, templated deyel_conn_id).

Each test fails on dcb79c1 and names a regression or a gap a user meets: a DAG that parsed before 27 and
no longer does, a search the server accepts and the provider refuses, an operator whose connection id is
not templated although 27 says every operator's is.
"""

from __future__ import annotations

import logging

import pytest

from deyel_provider.hooks.deyel import DeyelHook

# Searches the server (the emulator, as Deyel: clauses split on ',' only where 'field=op:' follows) reads as
# ONE clause, whose value holds a ';' or '&' followed by "word=word:". The validator's wrong-separator rule
# takes any "word=word:" after ';'/'&' for a clause, even when "word" after '=' is no operator at all.
ONE_CLAUSE_VALUES = [
    # an HTML meta-refresh value, as CMS-like text fields store it
    "0;url=https://example.com/next",
    # a URL whose query carries another URL (a redirect parameter)
    "https://sso.example.com/login?app=crm&next=https://crm.example.com/",
    # a cookie / header-like text value
    "session=abc; path=x:1",
]


@pytest.mark.parametrize("value", ONE_CLAUSE_VALUES)
def test_a_value_the_server_reads_as_one_clause_is_not_refused(emulator, deyel_conn, value):
    hook = DeyelHook()
    created = hook.create_instance("CRM_ACCOUNT", {"dsCompany": value, "cdCountry": "AR"})
    assert created
    search = f"dsCompany=eq:{value}"
    # The server accepts the search and finds the instance: it is one clause.
    response = hook.request("GET", "/forms/CRM_ACCOUNT/instances", params={"search": search})
    assert [r["dsCompany"] for r in response.json()] == [value]
    # The provider must not refuse what the server answers (dcb79c1: DeyelConfigError "';' joins the clause
    # 'url=https:' to the value of dsCompany", although 'https' is no operator).
    found = list(hook.iter_instances("CRM_ACCOUNT", search=search))
    assert [r["dsCompany"] for r in found] == [value]


def test_an_xcomarg_search_still_parses_in_the_extract_operator(tmp_path):
    """Before issue 27 ``search=some_task.output`` (an XComArg, resolved at run time as every templated
    field is) parsed; dcb79c1 validates ``str(XComArg)`` at parse time and the DAG fails to import."""
    from airflow.sdk import DAG, task

    from deyel_provider.operators.extract import DeyelExtractOperator

    with DAG("review27_xcom_search", schedule=None):

        @task
        def build_search() -> str:
            return "cdCountry=eq:AR"

        operator = DeyelExtractOperator(
            task_id="extract",
            form="CRM_ACCOUNT",
            output=str(tmp_path / "crm.jsonl"),
            search=build_search(),
        )
    assert "search" in operator.template_fields


def test_an_xcomarg_search_still_parses_in_the_sensor():
    """Same for DeyelInstanceSensor: dcb79c1 raises AttributeError ('PlainXComArg' object has no attribute
    'strip') from InstanceQuery.build at parse time; before 27 the sensor built the query without search."""
    from airflow.sdk import DAG, task

    from deyel_provider.sensors.deyel import DeyelInstanceSensor

    with DAG("review27_xcom_search_sensor", schedule=None):

        @task
        def build_search() -> str:
            return "cdStatus=eq:APPROVED"

        sensor = DeyelInstanceSensor(task_id="wait", form="CRM_ACCOUNT", search=build_search())
    assert "search" in sensor.template_fields


def test_every_operator_templates_deyel_conn_id():
    """Issue 27: "deyel_conn_id templated on every operator"; the deletes operator was left out, so
    deyel_conn_id="{{ var.value.crm_conn }}" is used literally there (a connection of that name)."""
    from deyel_provider.operators.deletes import DeyelDeletedInstancesOperator
    from deyel_provider.operators.deyel import DeyelOperator, DeyelTokenOperator
    from deyel_provider.operators.extract import DeyelExtractOperator
    from deyel_provider.operators.upsert import DeyelUpsertOperator
    from deyel_provider.sensors.deyel import DeyelInstanceSensor

    operators = (
        DeyelOperator,
        DeyelTokenOperator,
        DeyelExtractOperator,
        DeyelUpsertOperator,
        DeyelDeletedInstancesOperator,
        DeyelInstanceSensor,
    )
    missing = [op.__name__ for op in operators if "deyel_conn_id" not in op.template_fields]
    assert missing == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("<html><body><h1>403 Forbidden</h1><hr>nginx</body></html>", "text/html"), ("", "text/plain")],
)
def test_a_403_page_that_is_not_deyels_does_not_prove_the_prefix(emulator, deyel_conn, body, content_type):
    """A front proxy or servlet container that forbids every path outside the API (the API prefix missing)
    answers 403 with its own page. The button took any 403 for "the API answers" and said green (the very
    false green issue 27 is about), where a 404 must name the form to count (credentials.py _check_api)."""
    fault = {"action": "status", "route": "data", "status": 403, "raw_body": body, "count": 20}
    emulator.set_faults([{**fault, "headers": {"Content-Type": content_type}}])
    ok, message = DeyelHook().test_connection()
    assert not ok, message
    assert "the API answers at" not in message


def test_the_changelog_lists_issue_27s_behaviour_changes():
    """Issue 27 makes working DAGs fail or behave differently on upgrade: a search the validator refuses
    fails the DAG at parse time, another user's world-writable output folder is refused, the sensor turns
    deferrable where [operators] default_deferrable is true, unknown extras warn. The Unreleased section
    lists only item 5 (install and docs)."""
    from pathlib import Path

    text = Path(__file__).resolve().parents[1].joinpath("CHANGELOG.md").read_text(encoding="utf-8")
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    for change in ("default_deferrable", "between clauses", "strict_extras", "partition", "test_form"):
        assert change in unreleased, change


@pytest.mark.skipif(
    __import__("deyel_provider.compat", fromlist=["AIRFLOW_VERSION"]).AIRFLOW_VERSION < (3, 2),
    reason="asset partitions are Airflow 3.2+",
)
def test_partitions_written_to_one_fixed_output_are_not_overwritten_silently(deyel_conn, tmp_path, caplog):
    """A partitioned DAG whose ``output`` does not name the key (``/data/crm.jsonl``, as a non-partitioned
    DAG writes it) publishes every partition to the same file: a backfill of 05:00, 06:00, 07:00 leaves only
    07:00, and the 05:00 consumer (PartitionedAssetTimetable) reads 07:00's instances under 05:00's key.
    dcb79c1 says nothing; a warning naming the output and the key is due."""
    from types import SimpleNamespace

    from airflow.sdk import CronPartitionTimetable

    from deyel_provider.emulator import run_emulator
    from deyel_provider.operators.extract import DeyelExtractOperator
    from tests.support.helpers import outlet_events

    timetable = CronPartitionTimetable("0 * * * *", timezone="UTC")
    output = tmp_path / "crm.jsonl"
    with run_emulator(records=200) as emulator:
        deyel_conn(url=emulator.url)
        operator = DeyelExtractOperator(task_id="extract", form="CRM_ACCOUNT", output=str(output))
        context = {
            "dag": SimpleNamespace(timetable=timetable),
            "partition_key": "2026-01-01T00:00:00",
            "outlet_events": outlet_events(),
        }
        caplog.set_level(logging.WARNING, logger="deyel_provider")
        operator.execute(context)
        assert output.exists()
        # A WARNING (not a refusal: a DAG may overwrite one file on purpose), once, naming output and the fix.
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len([m for m in warned if "partition key" in m]) == 1, warned
        assert f"output {output}" in warned[0]
        assert "{{ dag_run.partition_key }}" in warned[0]


@pytest.mark.parametrize(
    "search",
    [
        # clauses on separate lines (a triple-quoted string, a YAML block): the server reads one clause
        "cdCountry=eq:AR\ncdStatus=eq:OPEN",
        # a space around '=' in the second clause: the validator's own clause shape allows it, its split
        # does not, and the server reads ", cdStatus = eq:OPEN" as part of the country
        "cdCountry=eq:AR, cdStatus = eq:OPEN",
        # ' And ' (the validator knows only 'and' and 'AND')
        "cdCountry=eq:AR And cdStatus=eq:OPEN",
    ],
)
def test_a_second_clause_the_server_reads_as_a_value_is_refused(emulator, deyel_conn, tmp_path, search):
    """The trap issue 27 closes (an empty file and an Asset event for a search that matches nothing) stays
    open for these separators: the server matches nothing, and the operator accepts the search."""
    from deyel_provider.exceptions import DeyelConfigError
    from deyel_provider.operators.extract import DeyelExtractOperator

    hook = DeyelHook()
    countries = {r["cdCountry"] for r in hook.iter_instances("CRM_ACCOUNT", fields=["cdCountry"])}
    assert "AR" in countries
    response = hook.request("GET", "/forms/CRM_ACCOUNT/instances", params={"search": search})
    assert response.json() == []  # read as one clause: nothing matches, silently
    with pytest.raises(DeyelConfigError, match=r"clause"):
        DeyelExtractOperator(
            task_id="extract", form="CRM_ACCOUNT", output=str(tmp_path / "crm.jsonl"), search=search
        )


@pytest.mark.parametrize(
    "search",
    [
        "cdCountry=eq:AR|cdStatus=eq:OPEN",
        "cdCountry=eq:AR cdStatus=eq:OPEN",
        "cdCountry=eq:AR and cdStatus=EQ:OPEN",
        "cdCountry=eq:AR\r\ncdStatus=eq:OPEN",
    ],
)
def test_other_separators_before_a_known_operator_are_refused(search):
    from deyel_provider.api.search import check_search
    from deyel_provider.exceptions import DeyelConfigError

    with pytest.raises(DeyelConfigError, match=r"use , between clauses"):
        check_search(search)


@pytest.mark.parametrize(
    "search",
    [
        "cdCountry=in:AR,BR,UY",
        "cdCountry=nin:AR;BR",
        "dsCompany=eq:Black and White Ltd",
        "dsCompany=eq:José Pérez | Hijos",
        "dtCreated=gte:2024-01-01 10:00:00,cdStatus=EQ:OPEN",
        "cdCountry=eq:,cdStatus=eq:OPEN",
        "cdCountry=Eq:AR,",
        "dsNote=like:a;b=c:d",
    ],
)
def test_values_the_server_reads_as_one_clause_still_pass(search):
    from deyel_provider.api.search import check_search

    assert check_search(search) == search


@pytest.mark.parametrize(
    ("template", "rendered", "warns"),
    [
        ("/data/crm.jsonl", "/data/crm.jsonl", True),
        ("/data/{{ dag_run.partition_key }}.jsonl", "/data/2026-01-01T00:00:00.jsonl", False),
        ("/data/{{ partition_key | replace(':', '') }}.jsonl", "/data/2026-01-01T000000.jsonl", False),
        ("/data/{{ params.key }}.jsonl", "/data/2026-01-01T00:00:00.jsonl", False),
    ],
)
def test_only_an_output_without_the_partition_key_warns(template, rendered, warns):
    from deyel_provider.extract.partitions import warn_if_output_is_not_partitioned

    assert warn_if_output_is_not_partitioned(template, rendered, "2026-01-01T00:00:00") is warns
