"""Operators for any authenticated Deyel API call, and for handing one token to many tasks through XCom."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from deyel_provider.exceptions import DeyelBadResponseError, DeyelError
from deyel_provider.hooks.deyel import DeyelHook

if TYPE_CHECKING:
    import requests
    from airflow.providers.openlineage.extractors import OperatorLineage
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
    :param deyel_conn_id: the ``deyel`` connection (templated).
    :param token: the XCom value of a ``DeyelTokenOperator``, typically
        ``"{{ ti.xcom_pull('get_token') }}"`` (templated). Encrypted: the rendered field shows ciphertext
        only. Used while valid and not rejected; otherwise the connection's normal path serves a token.
    """

    template_fields: Sequence[str] = (
        "endpoint",
        "method",
        "query_params",
        "json",
        "headers",
        "token",
        "deyel_conn_id",
    )
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
        token: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.token = token
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
        return DeyelHook(deyel_conn_id=self.deyel_conn_id, token=self.token or None)

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

    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        """The endpoint as an input (GET, HEAD) or output (other methods): namespace ``deyel://<host>``,
        name ``forms/<FORM>`` for a form's instances, else the path. Used by the OpenLineage provider."""
        from deyel_provider.extract.lineage import call_lineage

        return call_lineage(self.hook.config.base_url, str(self.method), str(self.endpoint))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        return self.get_openlineage_facets_on_start()


def parsed_body(response: requests.Response) -> Any:
    """The JSON body, the text when it is not JSON, or None when there is no body (202, 204)."""
    if not response.content:
        return None
    try:
        return response.json()
    except RecursionError:
        raise DeyelBadResponseError(
            "the response JSON is nested too deeply to read", status=response.status_code
        ) from None
    except ValueError:
        return response.text


class DeyelTokenOperator(BaseOperator):
    """Fetch (or reuse) the connection's token and push it to XCom, encrypted, for the tasks that follow.

    The XCom value is ``{"deyel_token": "<ciphertext>", "expires_at": <epoch s>, "v": 1}``, encrypted with a
    key derived from the connection's client secret: readable only by tasks that have the connection. Pass
    it on with ``token="{{ ti.xcom_pull('get_token') }}"``. With a shared ``cache`` (``file``,
    ``redis``) tasks already share one token without this operator; it helps when tasks cannot share a cache.

    :param deyel_conn_id: the ``deyel`` connection (templated).
    :param clear_text: push the access token in clear (``{"access_token": ..., "expires_at": ..., "v": 1}``)
        for consumers outside this provider. Anyone who can read XComs can then use the token until it
        expires; avoid it.
    """

    template_fields: Sequence[str] = ("deyel_conn_id",)

    def __init__(
        self, *, deyel_conn_id: str = DeyelHook.default_conn_name, clear_text: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.deyel_conn_id = deyel_conn_id
        self.clear_text = clear_text

    def execute(self, context: Context) -> dict[str, Any]:
        hook = DeyelHook(deyel_conn_id=self.deyel_conn_id)
        if self.clear_text:
            self.log.warning(
                "clear_text=True: the access token goes to XCom unencrypted; anyone who can read this "
                "task's XCom can call Deyel with it until it expires"
            )
        value = hook.get_token_for_xcom(clear_text=self.clear_text)
        self.log.info("Token shared through XCom, valid until %s (epoch s)", int(value["expires_at"]))
        return value
