"""DeyelHook: a ``deyel`` connection turned into authenticated calls to the Deyel REST API.

The Airflow face only: credentials and tokens are wired in :mod:`deyel_provider.auth.credentials`, the
session and one call's deadline, body cap, errors and retries in :mod:`deyel_provider.http.transport`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

import requests

from deyel_provider.api.instances import FormInstances, instances_endpoint
from deyel_provider.api.pagination import Paging
from deyel_provider.api.search import check_search
from deyel_provider.auth.client import TokenClient
from deyel_provider.auth.credentials import (
    TEST_CONNECTION_GRACE,
    ApiCheck,
    authenticated_session,
    connection_key,
    connection_token_provider,
    load_config,
    try_grant,
)
from deyel_provider.auth.provider import TokenProvider
from deyel_provider.auth.xcom import token_to_xcom
from deyel_provider.compat import BaseHook, is_temporary_test_conn_id
from deyel_provider.connection.form import legacy_ui_field_behaviour
from deyel_provider.connection.settings import DeyelConfig
from deyel_provider.exceptions import DeyelError
from deyel_provider.http.concurrency import Concurrency, Workers
from deyel_provider.http.redact import Redactor
from deyel_provider.http.retry import RetryPolicy
from deyel_provider.http.session import FOLLOWED_REDIRECT_METHODS, pooled_session
from deyel_provider.http.transport import Transport
from deyel_provider.read.slicing import SlicedReader, SliceSettings

#: The Deyel docs' example form (the CRM application's accounts): the Test button's GET without ``test_form``.
EXAMPLE_FORM = "CRM_ACCOUNT"

__all__ = ["FOLLOWED_REDIRECT_METHODS", "TEST_CONNECTION_GRACE", "DeyelHook", "instances_endpoint"]


class DeyelHook(BaseHook):
    """Interact with the Deyel REST API through OAuth2 client-credentials tokens.

    Tokens come from the documented ``POST /oauth/token`` and are reused until shortly before they expire;
    every hook of the process shares them, and the ``cache`` extra shares them with the other
    processes of the host (``file``) or of the deployment (``redis``). Nothing touches the network until a
    token or a call is needed.

    :param deyel_conn_id: the ``deyel`` connection: Host = base URL, Login = Client ID,
        Password = Client Secret, options in extras.
    :param token: the XCom value of a ``DeyelTokenOperator`` (or its rendering); used while it is valid
        and not rejected, then the normal path takes over.
    """

    conn_name_attr = "deyel_conn_id"
    default_conn_name = "deyel_default"
    conn_type = "deyel"
    hook_name = "Deyel"
    #: The worker's clock (seconds since the epoch): the server's ``Date`` is checked against it and never
    #: trusted past it. Tests that move an emulator's clock instead of waiting set it to that clock.
    clock: Callable[[], float] = staticmethod(time.time)
    #: How readers wait for a window's end or the present to settle. Tests that move an emulator's clock
    #: instead of waiting set it to that emulator's ``advance``.
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow 3.0 and 3.1; 3.2+ reads ``get_provider_info()`` and skips this."""
        return legacy_ui_field_behaviour()

    def __init__(self, deyel_conn_id: str = default_conn_name, token: Any = None) -> None:
        super().__init__()
        self.deyel_conn_id = deyel_conn_id
        self._handed_token = token

    def __repr__(self) -> str:
        return f"{type(self).__name__}(deyel_conn_id={self.deyel_conn_id!r})"

    @cached_property
    def config(self) -> DeyelConfig:
        """The validated connection settings (read once, on first use; its secrets masked)."""
        return load_config(self.get_connection, self.deyel_conn_id)

    @cached_property
    def redactor(self) -> Redactor:
        """Replaces this connection's credentials and tokens with ``***`` in text made from server answers."""
        return Redactor.for_config(self.config)

    @cached_property
    def credential_key(self) -> str:
        """The cache key of this connection's credential (and, for the password grant, its user)."""
        return connection_key(self.config)

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        """The connection's retry policy (the ``retry_*`` extras), applied to every call."""
        return RetryPolicy.from_config(self.config)

    @cached_property
    def token_client(self) -> TokenClient:
        return TokenClient(
            self.config, self._pooled_session(), redact=self.redactor, credential_key=self.credential_key
        )

    @cached_property
    def token_provider(self) -> TokenProvider:
        return connection_token_provider(
            self.config,
            self.token_client,
            key=self.credential_key,
            redactor=self.redactor,
            policy=self.retry_policy,
            handed=self._handed_token,
        )

    def get_token_for_xcom(self, *, clear_text: bool = False) -> dict[str, Any]:
        """A token for other tasks, as a small JSON-serialisable XCom value.

        :param clear_text: put the access token in clear instead of encrypted with the connection-derived
            key. Anyone who can read XComs can then use it: only for consumers outside this provider.
        """
        config, token = self.config, self.token_provider.token()
        key = self.credential_key
        return token_to_xcom(token, config.client_secret, key, clear_text=clear_text, conn_id=config.conn_id)

    def close(self) -> None:
        """Close the pooled connections (the hook opens new ones if it is used again)."""
        for name in ("_api_session", "token_client"):
            opened = self.__dict__.pop(name, None)
            if opened is not None:
                opened.close()
        self.__dict__.pop("token_provider", None)

    def get_token(self) -> str:
        """Return a valid access token, requesting one only when none is cached or it is about to expire."""
        return self.token_provider.token().access_token

    def get_conn(self) -> requests.Session:
        """Return this hook's pooled session; it authenticates every request to the Deyel server."""
        return self._api_session

    @cached_property
    def _api_session(self) -> requests.Session:
        return authenticated_session(self.config, self.token_provider)

    def _pooled_session(self) -> requests.Session:
        return pooled_session(self.config)

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        retry_unsafe: bool = False,
        on_retry: Callable[[BaseException], None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Make an authenticated call and return the response, or raise the typed error.

        Transient failures are retried by the connection's retry policy (:mod:`deyel_provider.http.retry`).
        The body is read with the ``max_response_bytes`` cap, unless ``stream=True`` is passed: the caller
        then reads a successful body itself.

        :param method: HTTP method.
        :param endpoint: path relative to the base URL plus API prefix (``/forms/CRM_ACCOUNT/instances``),
            or an absolute URL on the same server (a next-page link).
        :param params: query parameters.
        :param json: JSON body.
        :param data: form or raw body.
        :param headers: extra headers.
        :param retry_unsafe: also replay a non-idempotent call (POST, PATCH) after a failure the server may
            have acted on (a 5xx, a timeout, a dropped answer). Off by default: a POST could create twice.
        :param on_retry: called with each error the retry policy is about to retry.
        :param kwargs: passed to :meth:`requests.Session.request` (``timeout``, ``stream``...).
        """
        transport = Transport(self.config, self.get_conn(), self.retry_policy, self.redactor)
        return transport.request(
            method,
            endpoint,
            params=params,
            json=json,
            data=data,
            headers=headers,
            retry_unsafe=retry_unsafe,
            on_retry=on_retry,
            **kwargs,
        )

    def paging(self, page_size: int | None = None) -> Paging:
        """The connection's paging options (``paging`` extras), optionally with another page size."""
        return Paging.from_config(self.config, page_size=page_size)

    def sliced_reader(
        self,
        form: str,
        *,
        search: str | None = None,
        field: str = "dtLastUpdate",
        page_size: int | None = None,
        params: dict[str, Any] | None = None,
        max_workers: int | str | Workers = 1,
        max_workers_ceiling: int = 8,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        logger: Any = None,
        plain_pages: bool = False,
    ) -> SlicedReader:
        """A reader of a form's instances through time slices of ``field``
        (:mod:`deyel_provider.read.slicing`):
        every instance exactly once while the form changes, whatever the server's paging, or a typed error.

        :param form: the form's identifier, e.g. ``CRM_ACCOUNT``.
        :param search: Deyel filter, e.g. ``cdCountry=eq:AR``; each slice narrows it on ``field``.
        :param field: an epoch-millisecond field that every write moves to the present.
        :param page_size: instances per response; default: the connection's ``page_size`` (100).
        :param params: other query parameters sent with every request.
        :param max_workers: slices in flight at once (any paging strategy), or ``"auto"``.
        :param max_workers_ceiling: the most slices ``"auto"`` keeps in flight (with ``max_workers`` a
            :class:`~deyel_provider.http.concurrency.Workers`, already checked, its own ceiling is used).
        :param clock: the worker's clock (seconds since the epoch), the server's ``Date`` is checked against.
        :param sleep: how the reader waits for a window's end to settle (tests pass one that moves the
            emulator's clock).
        :param plain_pages: say of each slice whether its records are plain as parsed (``Slice.plain``),
            which lets a JSON Lines writer encode a page in one call; it costs every float a Python call in
            the parse, so only a reader that uses it asks.
        :param logger: deprecated and ignored: the reader logs to ``deyel_provider.read.*`` (Airflow's task
            log shows those lines); removed in the next minor release.
        """
        if logger is not None:
            warnings.warn(
                "DeyelHook.sliced_reader(logger=...) is deprecated and ignored: the reader logs to the "
                "deyel_provider.read loggers; drop the argument",
                DeprecationWarning,
                stacklevel=2,
            )
        check_search(search)  # a mistyped separator matches nothing: refused before the first request
        workers = max_workers
        if not isinstance(workers, Workers):
            workers = Workers(workers, max_workers_ceiling)
        concurrency = Concurrency(workers)
        query = dict(params or {})
        if search:
            query["search"] = search

        def fetch(endpoint: str, page_params: dict[str, Any] | None) -> requests.Response:
            return self.request("GET", endpoint, params=page_params, on_retry=concurrency.note_retry)

        return SlicedReader(
            fetch,
            instances_endpoint(form),
            query,
            self.paging(page_size),
            SliceSettings(
                field=field,
                id_field=self.config.id_field,
                date_literal=self.config.date_literal,
                # The server's clock as the connection trusts it (settle_seconds, max_clock_skew_seconds).
                settle_ms=round(self.config.settle_seconds * 1000),
                max_skew_ms=round(self.config.max_clock_skew_seconds * 1000),
                clock=clock or self.clock,
                sleep=sleep or self.sleep,
                plain_pages=plain_pages,
            ),
            concurrency=concurrency,
        )

    def iter_instances(
        self,
        form: str,
        *,
        search: str | None = None,
        fields: Sequence[str] | None = None,
        page_size: int | None = None,
        params: dict[str, Any] | None = None,
        max_workers: int | str = 1,
        start: int | None = None,
        end: int | None = None,
        field: str = "dtLastUpdate",
    ) -> Iterator[dict[str, Any]]:
        """Yield every instance of a form once, in ascending ``field`` order of the slices; memory holds a
        few responses at a time.

        The form is read through time slices of ``field`` (``dtLastUpdate``), not by page offsets, so a user
        editing the form meanwhile cannot make it skip or repeat an instance; where the server's answers do
        not allow that guarantee, :class:`~deyel_provider.exceptions.DeyelIncompleteError` says why.

        A loop that may stop before the end (an error in its body, a ``break``) should close the read
        then: ``with contextlib.closing(hook.iter_instances(...)) as instances:``. Otherwise the read and
        the requests its workers have in flight go on until the generator is let go, which an error's
        traceback (kept by Airflow for the task's callbacks) delays.

        :param form: the form's identifier, e.g. ``CRM_ACCOUNT``.
        :param search: Deyel filter, e.g. ``cdCountry=eq:AR,qtEmployee=gte:100``.
        :param fields: keep only these fields of each instance, in this order (missing ones are None).
        :param page_size: instances per response; default: the connection's ``page_size`` (100).
        :param params: other query parameters sent with every request.
        :param max_workers: slices fetched in parallel (any paging strategy), or ``"auto"``.
        :param start: only instances with ``field >= start`` (epoch ms).
        :param end: only instances with ``field < end`` (epoch ms).
        :param field: the epoch-millisecond field the slices are cut on.
        """
        reader = self.sliced_reader(
            form, search=search, field=field, page_size=page_size, params=params, max_workers=max_workers
        )
        for piece in reader.read(start, end):
            if fields is None:
                yield from piece.records
            else:
                for record in piece.records:
                    yield {name: record.get(name) for name in fields}

    def test_connection(self) -> tuple[bool, str]:
        """Check what tasks will use (the UI's "Test" button): a token with the connection's credentials,
        then one GET with it through the API prefix (one instance of the ``test_form`` extra's form, else
        of the docs' example form ``CRM_ACCOUNT``), so a missing prefix is red with the fix named.

        One attempt each, no retry policy, and an answer within the connection's timeout plus
        ``TEST_CONNECTION_GRACE`` seconds whatever the server does: it runs inside the API server. The
        Test button tests a copy under a random id: messages then say "this connection" instead.
        """
        ok, message = self._test_connection()
        conn_id = str(self.deyel_conn_id)
        if is_temporary_test_conn_id(conn_id):
            message = message.replace(f" [connection {conn_id!r}]", "")
            message = message.replace(f"connection {conn_id!r}", "this connection")
        return ok, message

    def _test_connection(self) -> tuple[bool, str]:
        # What reading the connection warns about (an unknown extra, plain http) goes into the button's
        # message: the API server's log is not where its user looks.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                config = self.config
            except DeyelError as exc:
                return False, str(exc)
            except Exception as exc:  # e.g. the connection does not exist: the button shows why
                return False, f"{type(exc).__name__}: {exc}"
        check = ApiCheck(
            form=config.test_form or EXAMPLE_FORM,
            named=bool(config.test_form),
            params=self.paging(1).params_for(0, 1),
        )
        ok, message = try_grant(
            config, self._pooled_session(), key=self.credential_key, redactor=self.redactor, check=check
        )
        noted = dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning))
        return ok, message + "".join(f" (warning: {note})" for note in noted)

    # -- one instance at a time (deyel_provider.api.instances: what a replayed write's error means) ---

    def get_instance(
        self, form: str, instance_id: str | int, *, on_retry: Callable[[BaseException], None] | None = None
    ) -> dict[str, Any]:
        """Return one instance of a form, ``dtLastUpdate`` included (what an update must send back).

        :param form: the form's identifier, e.g. ``CRM_ACCOUNT``.
        :param instance_id: the instance's id (its ``id_field`` key in listings); encoded into the path.
        :param on_retry: see :meth:`request` (the instance helpers all take it).
        """
        return FormInstances(self.request, form).get(instance_id, on_retry=on_retry)

    def create_instance(
        self, form: str, values: Mapping[str, Any], *, on_retry: Callable[[BaseException], None] | None = None
    ) -> dict[str, Any]:
        """Create an instance and return it as the server answers (its id, ``dtLastUpdate``).

        Not replayed after a failure the server may have acted on (a second POST would create a second
        instance): that failure is raised; look the instance up before creating it again.

        :param form: the form's identifier.
        :param values: field identifiers to values, e.g. ``{"dsCompany": "Tenaris", "qtEmployee": 1000}``.
        """
        return FormInstances(self.request, form).create(values, on_retry=on_retry)

    def update_instance(
        self,
        form: str,
        instance_id: str | int,
        values: Mapping[str, Any],
        *,
        partial: bool = True,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Update an instance: PATCH the fields given, or PUT every field when ``partial=False``.

        Deyel's optimistic lock wants the ``dtLastUpdate`` read before (:meth:`get_instance`) in ``values``;
        a stale one raises :class:`~deyel_provider.exceptions.DeyelConflictError`. A replay refused as stale
        is settled by reading the instance again: success when it holds the values sent, else
        ``DeyelConflictError`` saying an earlier attempt may have been applied.

        :param values: field identifiers to values, with ``dtLastUpdate``.
        :param partial: PATCH (only these fields) when True, PUT (the whole instance) when False.
        """
        FormInstances(self.request, form).update(instance_id, values, partial=partial, on_retry=on_retry)

    def delete_instance(self, form: str, instance_id: str | int) -> None:
        """Delete an instance; on return it no longer exists.

        A 404 on the first attempt raises :class:`~deyel_provider.exceptions.DeyelNotFoundError`; a 404 on a
        replay means an earlier attempt deleted it (its answer was lost), and counts as success.
        """
        FormInstances(self.request, form).delete(instance_id)
