"""A ``deyel`` connection's credentials as the hook uses them: the validated settings with every secret
masked, the credential's cache key, the token provider wired to the caches (and a token handed over through
XCom), and the Test button's single grant within a budget."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deyel_provider.auth.backends import process_tier, shared_tier
from deyel_provider.auth.bearer import DeyelBearerAuth
from deyel_provider.auth.client import TokenClient
from deyel_provider.auth.crypto import credential_key
from deyel_provider.auth.provider import TokenProvider, mask_token
from deyel_provider.auth.xcom import token_from_xcom
from deyel_provider.compat import AirflowNotFoundException, mask_secret
from deyel_provider.connection.settings import DeyelConfig
from deyel_provider.exceptions import DeyelConfigError, DeyelError
from deyel_provider.http.redact import basic_value
from deyel_provider.http.retry import RetryPolicy
from deyel_provider.http.session import pooled_session

if TYPE_CHECKING:
    import requests

    from deyel_provider.http.redact import Redactor

#: Seconds the Test button may take beyond the connection's timeout.
TEST_CONNECTION_GRACE = 3.0


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
    mask_secret(config.client_secret)
    # The Basic header value is as good as the secret: an echoed request must not show it either.
    mask_secret(basic_value(config.client_id, config.client_secret))
    if config.user_password:
        mask_secret(config.user_password)
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


def try_grant(
    config: DeyelConfig, session: requests.Session, *, key: str, redactor: Redactor
) -> tuple[bool, str]:
    """One token request with the connection's credentials (the UI's "Test" button).

    One attempt, no retry policy, and an answer within the connection's timeout plus
    ``TEST_CONNECTION_GRACE`` seconds whatever the server does: it runs inside the API server.
    """
    budget = config.timeout + TEST_CONNECTION_GRACE
    client = TokenClient(
        config, session, redact=redactor, credential_key=key, retry=RetryPolicy(attempts=1), budget=budget
    )
    outcome: list[tuple[bool, str]] = []

    def attempt() -> None:
        try:
            # The button is an explicit "try again": ask the server even after a remembered refusal.
            token = client.grant(remembered_refusals=False)
        except DeyelError as exc:
            outcome.append((False, redactor(str(exc))))
        except Exception as exc:
            outcome.append((False, redactor(f"{type(exc).__name__}: {exc}", 1000)))
        else:
            mask_token(token, credential=key)
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
