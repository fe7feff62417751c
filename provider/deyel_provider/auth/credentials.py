"""A ``deyel`` connection's credentials as the hook uses them: the validated settings with every secret
masked, the credential's cache key, the token provider wired to the caches (and a token handed over through
XCom), and the Test button's single grant within a budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from deyel_provider.auth.backends import process_tier, shared_tier
from deyel_provider.auth.bearer import DeyelBearerAuth
from deyel_provider.auth.client import TokenClient
from deyel_provider.auth.crypto import credential_key
from deyel_provider.auth.masking import mask_everywhere
from deyel_provider.auth.provider import TokenProvider, mask_token
from deyel_provider.auth.xcom import token_from_xcom
from deyel_provider.compat import AirflowNotFoundException
from deyel_provider.connection.fields import API_PREFIX_CANDIDATES
from deyel_provider.connection.settings import DeyelConfig
from deyel_provider.exceptions import DeyelConfigError, DeyelError, DeyelRateLimitError
from deyel_provider.http.bodies import read_capped
from deyel_provider.http.deadline import total_deadline
from deyel_provider.http.errors import (
    api_prefix_hint,
    connection_error,
    deyel_error_body,
    error_from_response,
    names_form,
)
from deyel_provider.http.redact import Redactor, basic_value
from deyel_provider.http.retry import RetryPolicy
from deyel_provider.http.session import pooled_session

#: Seconds the Test button may take beyond the connection's timeout.
TEST_CONNECTION_GRACE = 3.0
#: What bounds the Test button's GET, as its error names it.
_BUTTON_LIMIT = "the Test button's time: the 'Request timeout' extra plus a grace"


def load_config(get_connection: Callable[[str], Any], conn_id: str) -> DeyelConfig:
    """The validated settings of connection ``conn_id``, its secrets registered with Airflow's masker."""
    try:
        connection = get_connection(conn_id)
    except AirflowNotFoundException:
        # Typed like every other connection mistake (a trigger reports it as its error event).
        raise DeyelConfigError(
            f"connection {str(conn_id)[:200]!r} does not exist: create it (type deyel) or fix deyel_conn_id"
        ) from None
    config = DeyelConfig.from_connection(connection)
    mask_everywhere(config.client_secret)
    # The Basic header value is as good as the secret: an echoed request must not show it either.
    mask_everywhere(basic_value(config.client_id, config.client_secret))
    if config.user_password:
        mask_everywhere(config.user_password)
    return config


def connection_key(config: DeyelConfig) -> str:
    """The cache key of the connection's credential (and, for the password grant, its user)."""
    subject = (config.username or "", config.user_password or "") if config.grant_type == "password" else ()
    return credential_key(config.token_url, config.client_id, config.client_secret, *subject)


def connection_token_provider(
    config: DeyelConfig,
    client: TokenClient,
    *,
    key: str,
    redactor: Redactor,
    policy: RetryPolicy,
    handed: Any = None,
) -> TokenProvider:
    """The token provider of a connection: the process tier, the shared one its ``cache`` extra names, the
    refresh grant for the password grant, renewals bounded by ``policy``, and ``handed`` (a
    ``DeyelTokenOperator``'s XCom value) while it is valid and not rejected."""
    preset = None
    if handed is not None:
        preset = token_from_xcom(handed, config.client_secret, key, conn_id=config.conn_id)
        if preset is not None:
            mask_token(preset, credential=key)
            redactor.add(preset.access_token)
    return TokenProvider(
        fetch=client.grant,
        cache=process_tier(config),
        key=key,
        margin=config.refresh_margin,
        shared=shared_tier(config, key),
        refresh=client.refresh if config.grant_type == "password" else None,
        preset=preset,
        redactor=redactor,
        budget=policy.renewal_budget(config.timeout),
    )


def authenticated_session(config: DeyelConfig, provider: TokenProvider) -> requests.Session:
    """A pooled session for ``config``'s server whose every request carries ``provider``'s token (to that
    server alone)."""
    session = pooled_session(config)
    session.auth = DeyelBearerAuth(provider, config.is_own_url, max_body=config.max_response_bytes)
    session.headers["Accept"] = "application/json"
    return session


@dataclass(frozen=True)
class ApiCheck:
    """The Test button's authenticated GET, the first thing tasks do: one instance of ``form``.

    :param form: the ``test_form`` extra, else the docs' example form.
    :param named: the user named the form (``test_form``): its absence is then a failure, not a note.
    :param params: the connection's paging parameters for a page of one instance.
    """

    form: str
    named: bool
    params: dict[str, Any] = field(default_factory=dict)


def try_grant(
    config: DeyelConfig,
    session: requests.Session,
    *,
    key: str,
    redactor: Redactor,
    check: ApiCheck | None = None,
) -> tuple[bool, str]:
    """The UI's "Test" button: one token request with the connection's credentials, then (with ``check``)
    one GET with that token through the API prefix, as tasks will.

    One attempt each, no retry policy, and an answer within the connection's timeout plus
    ``TEST_CONNECTION_GRACE`` seconds whatever the server does: it runs inside the API server.
    """
    budget = config.timeout + TEST_CONNECTION_GRACE
    deadline = time.monotonic() + budget
    client = TokenClient(
        config, session, redact=redactor, credential_key=key, retry=RetryPolicy(attempts=1), budget=budget
    )
    outcome: list[tuple[bool, str]] = []
    step = ["the token endpoint"]

    def attempt() -> None:
        try:
            # The button is an explicit "try again": ask the server even after a remembered refusal.
            token = client.grant(remembered_refusals=False)
            mask_token(token, credential=key)
            got = f"Token obtained (valid {token.lifetime:.0f} s)"
            if check is None:
                outcome.append((True, f"Connected to {config.base_url}: {got.lower()}"))
                return
            step[0] = f"GET {config.api_url}/forms/{check.form}/instances"
            access = (token.access_token, got)
            outcome.append(_check_api(config, session, access, check, deadline, redactor))
        except DeyelError as exc:
            outcome.append((False, redactor(str(exc))))
        except Exception as exc:
            outcome.append((False, redactor(f"{type(exc).__name__}: {exc}", 1000)))
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
            f"{config.base_url}: no complete answer from {step[0]} within {budget:g} s (the "
            f"'Request timeout' extra plus {TEST_CONNECTION_GRACE:g} s) [connection {config.conn_id!r}]"
        )
    return outcome[0]


def _check_api(
    config: DeyelConfig,
    session: requests.Session,
    access: tuple[str, str],
    check: ApiCheck,
    deadline: float,
    redactor: Redactor,
) -> tuple[bool, str]:
    """The GET that proves the API prefix and the token, and what its answer tells the user.

    :param access: the token, and what the message says about it ("token obtained, valid 86400 s").
    """
    token, got = access
    url = config.url_for(f"/forms/{quote(check.form, safe='')}/instances")
    answer = _get(config, session, url, token, check.params, deadline, redactor)
    form = check.form
    if isinstance(answer, list):
        return True, (
            f"Connected to {config.base_url}: {got.lower()}; GET {urlsplit(url).path} answered a list of "
            f"{form} instances (the API prefix is right)"
        )
    if answer is None:  # 2xx, but not a JSON list: a web page served for any path, not the API
        found = _find_prefix(config, session, token, check, deadline, redactor)
        return False, f"{got}, but " + api_prefix_hint(url, None, config.api_prefix, found, form)
    if isinstance(answer, _ForeignRefusal):
        # A 403 page that is not Deyel's (a proxy forbidding every path outside the API): no proof, as a
        # 404 that does not name the form is none.
        found = _find_prefix(config, session, token, check, deadline, redactor)
        return False, f"{got}, but " + api_prefix_hint(url, answer.status, config.api_prefix, found, form)
    error = answer
    if error.status == 404 and not names_form(error, form):
        found = _find_prefix(config, session, token, check, deadline, redactor)
        return False, f"{got}, but " + api_prefix_hint(url, 404, config.api_prefix, found, form)
    if error.status in (403, 404) and not check.named and not isinstance(error, DeyelRateLimitError):
        # The API answered about the docs' example form: prefix and token are proven, the form is not ours.
        what = "has no such form" if error.status == 404 else "does not let this client read it"
        return True, (
            f"Connected to {config.base_url}: {got.lower()}; the API answers at {urlsplit(url).path} "
            f"({form} {what}: set the test_form extra to a form this client reads for a full check)"
        )
    if error.status == 404:
        return False, f"{got}, but the API has no form {form!r} (the test_form extra): {error}"
    if error.status == 401:
        return False, f"{got}, but the API refused it: {error}"
    return False, f"{got}, but {error}"


@dataclass(frozen=True)
class _ForeignRefusal:
    """A 403 whose body is not Deyel's error shape: some other server's page, not the API's answer."""

    status: int


def _get(
    config: DeyelConfig,
    session: requests.Session,
    url: str,
    token: str,
    params: dict[str, Any],
    deadline: float,
    redactor: Redactor,
) -> list[Any] | DeyelError | _ForeignRefusal | None:
    """One GET with ``token`` (to the connection's own host, no redirect followed): the JSON list it
    answered, the typed error of a failure, a :class:`_ForeignRefusal` for a 403 that is not Deyel's, or
    None for a success that is not a JSON list."""
    path = urlsplit(url).path
    seconds = max(min(config.request_deadline, deadline - time.monotonic()), 0.001)
    try:
        with total_deadline(seconds, method="GET", path=path, limit=_BUTTON_LIMIT):
            response = session.get(
                url,
                params=params,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=min(config.timeout, seconds),
                allow_redirects=False,
                stream=True,
            )
            read_capped(response, config.max_response_bytes, method="GET", path=path, deadline=deadline)
    except requests.RequestException as exc:
        raise connection_error(exc, url, config.timeout, config.conn_id, method="GET") from None
    if response.status_code == 403 and not deyel_error_body(response):
        return _ForeignRefusal(response.status_code)
    if not 200 <= response.status_code < 300:
        return error_from_response(response, note=f"connection {config.conn_id!r}", redact=redactor)
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, list) else None


def _find_prefix(
    config: DeyelConfig,
    session: requests.Session,
    token: str,
    check: ApiCheck,
    deadline: float,
    redactor: Redactor,
) -> str | None:
    """The first common API prefix that answers as the API (a list, or a 404 naming the form), tried while
    the button's time lasts; None when none does."""
    tried = {config.api_prefix.strip("/")}
    for prefix in API_PREFIX_CANDIDATES:
        if prefix.strip("/") in tried or deadline - time.monotonic() < 0.5:
            continue
        tried.add(prefix.strip("/"))
        url = f"{config.base_url}{prefix}/forms/{quote(check.form, safe='')}/instances"
        try:
            answer = _get(config, session, url, token, check.params, deadline, redactor)
        except DeyelError:
            continue
        if isinstance(answer, list) or (
            isinstance(answer, DeyelError) and answer.status == 404 and names_form(answer, check.form)
        ):
            return prefix
    return None
