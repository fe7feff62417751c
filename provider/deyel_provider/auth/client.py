"""The documented token POST, and nothing else: one request in, one token or one typed error out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import requests

from deyel_provider.auth.token import DeyelToken
from deyel_provider.exceptions import (
    DeyelBadResponseError,
    DeyelConnectionError,
    DeyelError,
    error_from_response,
)

if TYPE_CHECKING:
    from deyel_provider.config import DeyelConfig

log = logging.getLogger(__name__)


class TokenClient:
    """Requests tokens from ``POST {base_url}{token_path}`` with HTTP Basic client authentication.

    Stateless apart from the pooled session it is given: caching and renewal belong to the token provider.
    """

    def __init__(self, config: DeyelConfig, session: requests.Session) -> None:
        self._config = config
        self._session = session

    def __repr__(self) -> str:
        return f"TokenClient(token_url={self._config.token_url!r}, client_id={self._config.client_id!r})"

    def client_credentials(self) -> DeyelToken:
        return self._post({"grant_type": "client_credentials"})

    def password(self) -> DeyelToken:
        """The resource owner password grant, with the connection's ``username``/``password`` extras."""
        config = self._config
        assert config.username and config.user_password  # DeyelConfig checks both for this grant
        return self._post(
            {"grant_type": "password", "username": config.username, "password": config.user_password}
        )

    def refresh(self, refresh_token: str) -> DeyelToken:
        """The documented refresh POST: a new access token for the same refresh token."""
        return self._post({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def grant(self) -> DeyelToken:
        """The connection's full grant (``grant_type`` extra)."""
        return self.password() if self._config.grant_type == "password" else self.client_credentials()

    def _post(self, form: dict[str, str]) -> DeyelToken:
        config = self._config
        url = config.token_url
        try:
            # requests encodes the Basic header from the raw id and secret, as Deyel documents
            # (no form-encoding first), and form-encodes ``data`` with the right Content-Type.
            response = self._session.post(
                url,
                data=form,
                auth=(config.client_id, config.client_secret),
                headers={"Accept": "application/json"},
                timeout=config.timeout,
                verify=config.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise connection_error(exc, url, config.timeout, config.conn_id) from None
        log.debug("Token endpoint %s answered %s", url, response.status_code)
        if response.status_code != 200:
            raise error_from_response(response, token_endpoint=True, note=f"connection {config.conn_id!r}")
        try:
            body = response.json()
        except ValueError:
            raise DeyelBadResponseError(
                "the token endpoint answered 200 with a body that is not JSON; check the base URL and "
                "the token path",
                status=200,
                method="POST",
                path=config.token_path,
            ) from None
        return DeyelToken.from_response(body)


def connection_error(exc: requests.RequestException, url: str, timeout: float, conn_id: str) -> DeyelError:
    """A clear message for a request that got no HTTP answer (what went wrong and what to check)."""
    if isinstance(exc, requests.exceptions.SSLError):
        reason = "TLS verification failed; fix the certificate or set the 'CA bundle path' extra"
    elif isinstance(exc, requests.exceptions.Timeout):
        reason = f"no answer within {timeout:g} s (the 'Request timeout' extra)"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        reason = "could not connect; check the Host (base URL) and that the server is up"
    else:
        reason = f"request failed ({type(exc).__name__})"
    return DeyelConnectionError(f"{url}: {reason} [connection {conn_id!r}]")
