"""The documented token POST, and nothing else: one request in, one token or one typed error out."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests

from deyel_provider.auth import refusals
from deyel_provider.auth.token import DeyelToken
from deyel_provider.exceptions import DeyelAuthError, DeyelBadResponseError
from deyel_provider.http.bodies import read_capped
from deyel_provider.http.deadline import REQUEST_DEADLINE, total_deadline
from deyel_provider.http.errors import connection_error, error_from_response
from deyel_provider.http.redact import Redactor
from deyel_provider.http.retry import RetryPolicy

if TYPE_CHECKING:
    from deyel_provider.connection.settings import DeyelConfig

__all__ = ["TokenClient", "connection_error"]

log = logging.getLogger(__name__)


class TokenClient:
    """Requests tokens from ``POST {base_url}{token_path}`` with HTTP Basic client authentication.

    Stateless apart from the pooled session it is given: caching and renewal belong to the token provider.
    Transient failures (429, 5xx, network) are retried by the provider's retry policy (a token POST may be
    sent twice: the worst outcome is an unused token); refused credentials never are, and are remembered for
    ``auth_failure_ttl`` seconds so that later tasks fail at once instead of sending them again.
    """

    def __init__(
        self,
        config: DeyelConfig,
        session: requests.Session,
        redact: Redactor | None = None,
        *,
        credential_key: str,
        retry: RetryPolicy | None = None,
        budget: float | None = None,
    ) -> None:
        """
        :param redact: the connection's redactor (tokens obtained here are added to it).
        :param credential_key: the credential's cache key (``auth.crypto.credential_key``); refusals are
            remembered under it.
        :param retry: the retry policy; default: the connection's.
        :param budget: seconds a whole grant may take, reading included (the Test button's bound).
        """
        self._config = config
        self._credential_key = credential_key
        self._session = session
        self._redact = redact or Redactor.for_config(config)
        self._retry = retry or RetryPolicy.from_config(config)
        self._budget = budget

    def __repr__(self) -> str:
        return f"TokenClient(token_url={self._config.token_url!r}, client_id={self._config.client_id!r})"

    def close(self) -> None:
        self._session.close()

    def password(self, *, remembered_refusals: bool = True, deadline: float | None = None) -> DeyelToken:
        """The resource owner password grant, with the connection's ``username``/``password`` extras."""
        config = self._config
        assert config.username and config.user_password  # DeyelConfig checks both for this grant
        return self._post(
            {"grant_type": "password", "username": config.username, "password": config.user_password},
            remembered_refusals=remembered_refusals,
            deadline=deadline,
        )

    def refresh(self, refresh_token: str, *, deadline: float | None = None) -> DeyelToken:
        """The documented refresh POST: a new access token for the same refresh token."""
        return self._post({"grant_type": "refresh_token", "refresh_token": refresh_token}, deadline=deadline)

    def grant(self, *, remembered_refusals: bool = True, deadline: float | None = None) -> DeyelToken:
        """The connection's full grant (``grant_type`` extra).

        :param remembered_refusals: fail at once with a refusal remembered from the last ``auth_failure_ttl``
            seconds; the connection test turns this off to ask the server again.
        :param deadline: a ``time.monotonic()`` by which the grant ends, retries included: the renewal
            budget (see :meth:`deyel_provider.http.retry.RetryPolicy.renewal_budget`).
        """
        if self._config.grant_type == "password":
            return self.password(remembered_refusals=remembered_refusals, deadline=deadline)
        return self.client_credentials(remembered_refusals=remembered_refusals, deadline=deadline)

    def client_credentials(
        self, *, remembered_refusals: bool = True, deadline: float | None = None
    ) -> DeyelToken:
        """Request a token with the client's own credentials.

        :param remembered_refusals: fail at once with a refusal remembered from the last ``auth_failure_ttl``
            seconds; the connection test turns this off to ask the server again.
        :param deadline: see :meth:`grant`.
        """
        return self._post(
            {"grant_type": "client_credentials"}, remembered_refusals=remembered_refusals, deadline=deadline
        )

    def _post(
        self, form: dict[str, str], *, remembered_refusals: bool = True, deadline: float | None = None
    ) -> DeyelToken:
        config = self._config
        # The user's password is part of the credential key (through scrypt), never of a fast hash.
        key = refusals.refusal_key(self._credential_key, form)
        if remembered_refusals:
            refusals.check(key, config.auth_failure_ttl)
        # The renewal's deadline stops the retries; either deadline cuts off an answer still arriving.
        read_deadline = deadline
        if self._budget is not None:
            own = time.monotonic() + self._budget
            read_deadline = own if deadline is None else min(own, deadline)
        try:
            token = self._retry.call(
                lambda: self._post_once(form, read_deadline),
                method="POST",
                path=urlsplit(config.token_url).path,
                replay_safe=True,
                deadline=deadline,
                # requests' timeout bounds the connection and then the answer, each on its own.
                attempt_time=2 * config.timeout,
            )
        except DeyelAuthError as refused:
            refusals.remember(key, refused, config.auth_failure_ttl)
            raise
        refusals.forget(key)
        return token

    def _post_once(self, form: dict[str, str], deadline: float | None = None) -> DeyelToken:
        config = self._config
        url = config.token_url
        path = urlsplit(url).path
        try:
            # requests encodes the Basic header from the raw id and secret, as Deyel documents
            # (no form-encoding first), and form-encodes ``data`` with the right Content-Type.
            # The whole POST within request_deadline, and within the renewal's (or the Test button's) own.
            seconds, limit = config.request_deadline, REQUEST_DEADLINE
            if deadline is not None and deadline - time.monotonic() < seconds:
                seconds = max(deadline - time.monotonic(), 0.001)
                limit = "the time allowed for this token request: the Test button's, or the renewal's budget"
            with total_deadline(seconds, method="POST", path=path, limit=limit):
                response = self._session.post(
                    url,
                    data=form,
                    auth=(config.client_id, config.client_secret),
                    headers={"Accept": "application/json"},
                    timeout=config.timeout,
                    verify=config.verify,
                    allow_redirects=False,
                    stream=True,
                )
                read_capped(response, config.max_response_bytes, method="POST", path=path, deadline=deadline)
        except requests.RequestException as exc:
            raise connection_error(exc, url, config.timeout, config.conn_id, method="POST") from None
        log.debug("Token endpoint %s answered %s", url, response.status_code)
        if response.status_code != 200:
            raise error_from_response(
                response, token_endpoint=True, note=f"connection {config.conn_id!r}", redact=self._redact
            )
        try:
            body = response.json()
        except (ValueError, RecursionError):
            raise DeyelBadResponseError(
                "the token endpoint answered 200 with a body that is not JSON; check the base URL and "
                "the token path",
                status=200,
                method="POST",
                path=path,
            ) from None
        try:
            token = DeyelToken.from_response(body)
        except DeyelBadResponseError as exc:
            detail = self._redact(exc.detail)
            raise DeyelBadResponseError(detail, status=200, method="POST", path=path) from None
        self._redact.add(token.access_token, token.refresh_token)
        return token
