"""DeyelHook: a ``deyel`` connection turned into authenticated calls to the Deyel REST API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests

from deyel_provider.api.instances import (
    field_values,
    instance_path,
    json_object,
    settle_delete,
    settle_update,
)
from deyel_provider.api.pagination import Paging
from deyel_provider.auth.backends import process_tier, shared_tier
from deyel_provider.auth.bearer import DeyelBearerAuth
from deyel_provider.auth.client import TokenClient
from deyel_provider.auth.crypto import credential_key
from deyel_provider.auth.provider import TokenProvider, mask_token
from deyel_provider.auth.xcom import token_from_xcom, token_to_xcom
from deyel_provider.compat import AirflowNotFoundException, BaseHook, mask_secret
from deyel_provider.connection.settings import DeyelConfig
from deyel_provider.exceptions import DeyelConfigError, DeyelError
from deyel_provider.http.bodies import drain, read_capped
from deyel_provider.http.concurrency import Concurrency
from deyel_provider.http.deadline import WatchedAdapter, total_deadline
from deyel_provider.http.errors import connection_error, error_from_response
from deyel_provider.http.redact import Redactor, basic_value
from deyel_provider.http.retry import RetryPolicy, is_replay_safe
from deyel_provider.read.slicing import SlicedReader, SliceSettings

#: Seconds the Test button may take beyond the connection's timeout.
TEST_CONNECTION_GRACE = 3.0

#: The only methods that follow a redirect: requests would turn other methods into a GET.
FOLLOWED_REDIRECT_METHODS = frozenset({"GET", "HEAD"})


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

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow 3.0 and 3.1; 3.2+ reads ``get_provider_info()`` and skips this."""
        from deyel_provider._provider_info import legacy_ui_field_behaviour

        return legacy_ui_field_behaviour()

    def __init__(self, deyel_conn_id: str = default_conn_name, token: Any = None) -> None:
        super().__init__()
        self.deyel_conn_id = deyel_conn_id
        self._handed_token = token

    def __repr__(self) -> str:
        return f"{type(self).__name__}(deyel_conn_id={self.deyel_conn_id!r})"

    @cached_property
    def config(self) -> DeyelConfig:
        """The validated connection settings (read once, on first use)."""
        try:
            connection = self.get_connection(self.deyel_conn_id)
        except AirflowNotFoundException:
            # Typed like every other connection mistake (a trigger reports it as its error event).
            raise DeyelConfigError(
                f"connection {str(self.deyel_conn_id)[:200]!r} does not exist: create it (type deyel) or fix "
                f"deyel_conn_id"
            ) from None
        config = DeyelConfig.from_connection(connection)
        mask_secret(config.client_secret)
        # The Basic header value is as good as the secret: an echoed request must not show it either.
        mask_secret(basic_value(config.client_id, config.client_secret))
        if config.user_password:
            mask_secret(config.user_password)
        return config

    @cached_property
    def redactor(self) -> Redactor:
        """Replaces this connection's credentials and tokens with ``***`` in text made from server answers."""
        return Redactor.for_config(self.config)

    @cached_property
    def credential_key(self) -> str:
        """The cache key of this connection's credential (and, for the password grant, its user)."""
        config = self.config
        subject = (
            (config.username or "", config.user_password or "") if config.grant_type == "password" else ()
        )
        return credential_key(config.token_url, config.client_id, config.client_secret, *subject)

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
        config, key = self.config, self.credential_key
        preset = None
        if self._handed_token is not None:
            preset = token_from_xcom(self._handed_token, config.client_secret, key, conn_id=config.conn_id)
            if preset is not None:
                mask_token(preset, credential=key)
                self.redactor.add(preset.access_token)
        return TokenProvider(
            fetch=self.token_client.grant,
            cache=process_tier(config),
            key=key,
            margin=config.refresh_margin,
            shared=shared_tier(config, key),
            refresh=self.token_client.refresh if config.grant_type == "password" else None,
            preset=preset,
            redactor=self.redactor,
            budget=self.retry_policy.renewal_budget(config.timeout),
        )

    def get_token_for_xcom(self, *, clear_text: bool = False) -> dict[str, Any]:
        """A token for other tasks, as a small JSON-serialisable XCom value.

        :param clear_text: put the access token in clear instead of encrypted with the connection-derived
            key. Anyone who can read XComs can then use it: only for consumers outside this provider.
        """
        token = self.token_provider.token()
        return token_to_xcom(
            token,
            self.config.client_secret,
            self.credential_key,
            clear_text=clear_text,
            conn_id=self.config.conn_id,
        )

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
        session = self._pooled_session()
        session.auth = DeyelBearerAuth(
            self.token_provider, self.config.is_own_url, max_body=self.config.max_response_bytes
        )
        session.headers["Accept"] = "application/json"
        return session

    def _pooled_session(self) -> requests.Session:
        session = _ConnectionSession(self.config.is_own_url)
        session.verify = self.config.verify
        session.max_redirect_body = self.config.max_response_bytes
        # Room for parallel page fetches; requests' default pool keeps 10 connections per host. Its
        # connections report to the request's total deadline (request_deadline).
        adapter = WatchedAdapter(pool_connections=4, pool_maxsize=32)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

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

        Transient failures are retried by the connection's retry policy (see
        :mod:`deyel_provider.http.retry`).
        The body is read with the ``max_response_bytes`` cap, unless ``stream=True`` is passed: the caller
        then reads a successful body itself.

        :param method: HTTP method.
        :param endpoint: path relative to the base URL plus API prefix (``/forms/CRM_ACCOUNT/instances``),
            or an absolute URL on the same server (a next-page link).
        :param params: query parameters.
        :param json: JSON body.
        :param data: form or raw body.
        :param headers: extra headers.
        :param retry_unsafe: also replay a non-idempotent call (POST, PATCH) after a failure where the server
            may have received it (a 5xx, a timeout, a connection dropped mid-answer). Off by default: a
            replayed POST can create a record twice.
        :param on_retry: called with each error the retry policy is about to retry.
        :param kwargs: passed to :meth:`requests.Session.request` (``timeout``, ``stream``...).
        """
        config = self.config
        url = config.url_for(endpoint)
        method = method.upper()
        path = urlsplit(url).path or "/"
        kwargs.setdefault("timeout", config.timeout)
        stream = bool(kwargs.pop("stream", False))
        session = self.get_conn()

        def attempt() -> requests.Response:
            try:
                # Connect, headers and the whole body within request_deadline, however slow the server.
                with total_deadline(config.request_deadline, method=method, path=path):
                    response = session.request(
                        method,
                        url,
                        params=params,
                        json=json,
                        data=data,
                        headers=headers,
                        stream=True,
                        **kwargs,
                    )
                    # Only a success is left for the caller to stream: an error, a redirect that was not
                    # followed and a 3xx without a Location are read here, capped, to build the error.
                    success = 200 <= response.status_code < 300
                    if not (stream and success):
                        read_capped(response, config.max_response_bytes, method=method, path=path)
            except requests.RequestException as exc:
                raise connection_error(exc, url, kwargs["timeout"], config.conn_id, method=method) from None
            if not success:
                raise error_from_response(
                    response, note=f"connection {config.conn_id!r}", redact=self.redactor
                )
            return response

        # A body that is a stream or a file was consumed by the first attempt: it cannot be sent again.
        replayable = data is None or isinstance(data, (bytes, str, dict, list, tuple))
        policy = self.retry_policy if replayable else RetryPolicy(attempts=1)
        return policy.call(
            attempt,
            method=method,
            path=path,
            replay_safe=is_replay_safe(method, opted_in=retry_unsafe),
            on_retry=on_retry,
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
        max_workers: int | str = 1,
        max_workers_ceiling: int = 8,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
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
        :param max_workers_ceiling: the most slices ``"auto"`` keeps in flight.
        :param clock: the worker's clock (seconds since the epoch), the server's ``Date`` is checked against.
        :param sleep: how the reader waits for a window's end to settle (tests pass one that moves the
            emulator's clock).
        """
        concurrency = Concurrency(max_workers, ceiling=max_workers_ceiling)
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
                sleep=sleep or time.sleep,
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
        """Request a token with the connection's credentials (the UI's "Test" button).

        One attempt, no retry policy, and an answer within the connection's timeout plus
        ``TEST_CONNECTION_GRACE`` seconds whatever the server does: it runs inside the API server.
        """
        try:
            config = self.config
        except DeyelError as exc:
            return False, str(exc)
        except Exception as exc:  # e.g. the connection does not exist: the button shows why
            return False, f"{type(exc).__name__}: {exc}"
        budget = config.timeout + TEST_CONNECTION_GRACE
        client = TokenClient(
            config,
            self._pooled_session(),
            redact=self.redactor,
            credential_key=self.credential_key,
            retry=RetryPolicy(attempts=1),
            budget=budget,
        )
        outcome: list[tuple[bool, str]] = []

        def attempt() -> None:
            try:
                # The button is an explicit "try again": ask the server even after a remembered refusal.
                token = client.grant(remembered_refusals=False)
            except DeyelError as exc:
                outcome.append((False, self.redactor(str(exc))))
            except Exception as exc:
                outcome.append((False, self.redactor(f"{type(exc).__name__}: {exc}", 1000)))
            else:
                mask_token(token, credential=self.credential_key)
                outcome.append(
                    (True, f"Connected to {config.base_url}: token obtained, valid {token.lifetime:.0f} s")
                )
            finally:
                client.close()

        # A thread, so that a server trickling its headers cannot hold the button past the budget either;
        # the body reads inside stop at the same deadline, so the thread does not outlive it by much.
        worker = threading.Thread(target=attempt, name="deyel-test-connection", daemon=True)
        worker.start()
        worker.join(budget)
        if not outcome:
            client.close()
            return False, (
                f"{config.base_url}: no complete answer from the token endpoint within {budget:g} s (the "
                f"'Request timeout' extra plus {TEST_CONNECTION_GRACE:g} s) [connection {config.conn_id!r}]"
            )
        return outcome[0]

    # -- one instance at a time (deyel_provider.api.instances: what a replayed write's error means) ---

    def get_instance(
        self, form: str, instance_id: str | int, *, on_retry: Callable[[BaseException], None] | None = None
    ) -> dict[str, Any]:
        """Return one instance of a form, ``dtLastUpdate`` included (what an update must send back).

        :param form: the form's identifier, e.g. ``CRM_ACCOUNT``.
        :param instance_id: the instance's id (its ``id_field`` key in listings); encoded into the path.
        :param on_retry: see :meth:`request` (the instance helpers all take it).
        """
        path = instance_path(instances_endpoint(form), instance_id)
        return json_object(self.request("GET", path, on_retry=on_retry), "an instance")

    def create_instance(
        self,
        form: str,
        values: Mapping[str, Any],
        *,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> dict[str, Any]:
        """Create an instance and return it as the server answers (its id, ``dtLastUpdate``).

        Not replayed after a failure the server may have acted on (a 5xx, a timeout, a lost answer): a second
        POST would create a second instance. That failure is raised; look the instance up before creating it
        again.

        :param form: the form's identifier.
        :param values: field identifiers to values, e.g. ``{"dsCompany": "Tenaris", "qtEmployee": 1000}``.
        """
        body = field_values(values)
        created = self.request("POST", instances_endpoint(form), json=body, on_retry=on_retry)
        return json_object(created, "the created instance")

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
        a stale one raises :class:`~deyel_provider.exceptions.DeyelConflictError`. With it, a replay is safe,
        so the PATCH is retried like the PUT; a replay refused as stale is settled by reading the instance
        again: success when it holds the values sent (the first attempt was applied, its answer lost), else
        ``DeyelConflictError`` saying an earlier attempt may have been applied.

        :param values: field identifiers to values, with ``dtLastUpdate``.
        :param partial: PATCH (only these fields) when True, PUT (the whole instance) when False.
        """
        body = field_values(values)
        path = instance_path(instances_endpoint(form), instance_id)
        method = "PATCH" if partial else "PUT"
        settle_update(
            lambda: self.request(
                method, path, json=body, retry_unsafe="dtLastUpdate" in body, on_retry=on_retry
            ),
            lambda: self.get_instance(form, instance_id, on_retry=on_retry),
            body,
        )

    def delete_instance(self, form: str, instance_id: str | int) -> None:
        """Delete an instance; on return it no longer exists.

        A 404 on the first attempt raises :class:`~deyel_provider.exceptions.DeyelNotFoundError`; a 404 on a
        replay means an earlier attempt deleted it (its answer was lost), and counts as success.
        """
        path = instance_path(instances_endpoint(form), instance_id)
        settle_delete(lambda: self.request("DELETE", path))


def instances_endpoint(form: str) -> str:
    """The collection path of a form's instances; the form name is checked, not trusted."""
    # "." and ".." survive percent-encoding and would be resolved as dot segments (the request would go to
    # /forms/instances or /instances).
    if not isinstance(form, str) or form.strip() in ("", ".", "..") or "/" in form:
        raise DeyelConfigError(f"form must be a form identifier such as 'CRM_ACCOUNT', got {form!r}")
    return f"/forms/{quote(form.strip(), safe='')}/instances"


class _ConnectionSession(requests.Session):
    """A session that follows only the redirects that cannot change a call's meaning, and whose own TLS
    setting wins over ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``.

    requests follows every redirect and turns a POST answered 301, 302 or 303 into a GET: a create would
    "succeed" with the list it was sent to and create nothing. Here only GET and HEAD follow a redirect (they
    are never rewritten), and only to the connection's own origin; any other redirect is handed back as the
    3xx it is, which :meth:`DeyelHook.request` raises as ``DeyelRequestError`` naming the Location. Before
    following, the redirect's body is drained up to the connection's ``max_response_bytes`` (requests would
    read it whole).

    requests lets those environment variables replace ``session.verify`` on every request (psf/requests#3829),
    which would silently ignore the connection's ``ca_bundle`` (and ``verify: false``) on hosts that set them.
    """

    max_redirect_body = 1024 * 1024

    def __init__(self, is_own_url: Callable[[str], bool]) -> None:
        super().__init__()
        self._is_own_url = is_own_url

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target is None or resp.request.method not in FOLLOWED_REDIRECT_METHODS:
            return None
        if not self._is_own_url(urljoin(resp.url, target)):
            return None
        drain(resp, self.max_redirect_body)
        return target

    def merge_environment_settings(
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        if verify is None:
            verify = self.verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)
