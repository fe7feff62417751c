"""Operators for any authenticated Deyel API call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from deyel_provider.exceptions import DeyelError
from deyel_provider.hooks.deyel import DeyelHook

if TYPE_CHECKING:
    import requests
    from airflow.sdk import Context


class DeyelOperator(BaseOperator):
    """Call any Deyel REST endpoint with the connection's token and push the parsed JSON to XCom.

    Airflow reserves ``params`` for DAG params (as in ``/forms/{{ params.form }}/instances``), so the query
    string goes in ``query_params``.

    :param endpoint: path relative to the base URL plus API prefix, e.g. ``/forms/CRM_ACCOUNT/instances``
        (templated).
    :param method: HTTP method (templated).
    :param query_params: query parameters, e.g. ``{"search": "cdCountry=eq:AR"}`` (templated).
    :param json: JSON body (templated).
    :param headers: extra headers (templated).
    :param response_check: called with the response; returning False fails the task.
    :param response_filter: called with the response; its result is pushed to XCom instead of the JSON.
    :param deyel_conn_id: the ``deyel`` connection.
    """

    template_fields: Sequence[str] = ("endpoint", "method", "query_params", "json", "headers")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "query_params": "json",
        "json": "json",
        "headers": "json",
    }

    def __init__(
        self,
        *,
        endpoint: str,
        method: str = "GET",
        query_params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        response_check: Callable[[requests.Response], bool] | None = None,
        response_filter: Callable[[requests.Response], Any] | None = None,
        deyel_conn_id: str = DeyelHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.method = method
        self.query_params = query_params
        self.json = json
        self.headers = headers
        self.response_check = response_check
        self.response_filter = response_filter
        self.deyel_conn_id = deyel_conn_id

    @cached_property
    def hook(self) -> DeyelHook:
        return DeyelHook(deyel_conn_id=self.deyel_conn_id)

    def execute(self, context: Context) -> Any:
        response = self.hook.request(
            self.method, self.endpoint, params=self.query_params, json=self.json, headers=self.headers
        )
        self.log.info("%s %s answered %s", self.method.upper(), self.endpoint, response.status_code)
        if self.response_check is not None and not self.response_check(response):
            raise DeyelError(
                "response_check returned False",
                status=response.status_code,
                method=self.method.upper(),
                path=self.endpoint.split("?")[0],
            )
        if self.response_filter is not None:
            return self.response_filter(response)
        return parsed_body(response)


def parsed_body(response: requests.Response) -> Any:
    """The JSON body, the text when it is not JSON, or None when there is no body (202, 204)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text
