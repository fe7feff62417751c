"""DeyelOperator: templated fields, XCom result, response_check/filter, typed failures."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG

from deyel_provider.exceptions import DeyelError, DeyelNotFoundError
from deyel_provider.operators.deyel import DeyelOperator


def run(operator: DeyelOperator, **context):
    context.setdefault("params", operator.dag.params if operator.has_dag() else {})
    operator.render_template_fields(context)
    return operator.execute(context)


@pytest.fixture
def dag():
    with DAG(
        "t", schedule=None, start_date=pendulum.datetime(2026, 1, 1), params={"form": "CRM_ACCOUNT"}
    ) as d:
        yield d


def test_templated_get_returns_parsed_json(emulator, deyel_conn, dag):
    op = DeyelOperator(
        task_id="get",
        endpoint="/forms/{{ params.form }}/instances",
        query_params={"search": "idObjectValue=in:1;2;{{ 2 + 1 }}", "pageSize": 10},
    )
    result = run(op, params={"form": "CRM_ACCOUNT"})
    assert [r["idObjectValue"] for r in result] == ["1", "2", "3"]
    assert op.endpoint == "/forms/CRM_ACCOUNT/instances"


def test_post_json_and_response_filter(emulator, deyel_conn, dag):
    op = DeyelOperator(
        task_id="create",
        method="POST",
        endpoint="/forms/CRM_ACCOUNT/instances",
        json={"dsCompany": "{{ params.form }} Corp"},
        response_filter=lambda response: (response.status_code, response.json()["idObjectValue"]),
    )
    status, new_id = run(op, params={"form": "Acme"})
    assert status == 201
    assert int(new_id) == 51


def test_response_check_false_fails_the_task(emulator, deyel_conn, dag):
    op = DeyelOperator(
        task_id="check", endpoint="/forms/CRM_ACCOUNT/instances", response_check=lambda r: False
    )
    with pytest.raises(DeyelError, match="response_check returned False"):
        run(op)


def test_http_error_fails_with_the_typed_error(emulator, deyel_conn, dag):
    op = DeyelOperator(task_id="missing", endpoint="/forms/NO_SUCH_FORM/instances")
    with pytest.raises(DeyelNotFoundError):
        run(op)


def test_empty_body_returns_none(emulator, deyel_conn, dag):
    op = DeyelOperator(task_id="delete", method="DELETE", endpoint="/forms/CRM_ACCOUNT/instances/5")
    assert run(op) is None


def test_no_network_at_construction(emulator, deyel_conn, dag):
    DeyelOperator(task_id="lazy", endpoint="/forms/CRM_ACCOUNT/instances")
    assert emulator.stats()["token_requests"] == 0
    assert emulator.stats()["api_requests"] == 0
