"""DeyelHook: a ``deyel`` connection turned into authenticated calls to the Deyel REST API."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import requests
from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret
from requests.adapters import HTTPAdapter

from deyel_provider.auth.backends import process_tier, shared_tier
from deyel_provider.auth.bearer import DeyelBearerAuth
from deyel_provider.auth.client import TokenClient, connection_error
from deyel_provider.auth.provider import TokenProvider, credential_key, mask_token
from deyel_provider.auth.xcom import token_from_xcom, token_to_xcom
from deyel_provider.config import DeyelConfig
from deyel_provider.exceptions import DeyelError, error_from_response


class DeyelHook(BaseHook):
    """Interact with the Deyel REST API through OAuth2 client-credentials tokens.

    Tokens come from the documented ``POST /oauth/token`` and are reused until shortly before they expire;
    every hook of the process shares them, and the ``token_cache`` extra shares them with the other
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

    def __init__(self, deyel_conn_id: str = default_conn_name, token: Any = None) -> None:
        super().__init__()
        self.deyel_conn_id = deyel_conn_id
        self._handed_token = token

    def __repr__(self) -> str:
        return f"{type(self).__name__}(deyel_conn_id={self.deyel_conn_id!r})"

    @cached_property
    def config(self) -> DeyelConfig:
        """The validated connection settings (read once, on first use)."""
        config = DeyelConfig.from_connection(self.get_connection(self.deyel_conn_id))
        mask_secret(config.client_secret)
        if config.user_password:
            mask_secret(config.user_password)
        return config

    @cached_property
    def credential_key(self) -> str:
        """The cache key of this connection's credential (and, for the password grant, its user)."""
        config = self.config
        subject = (
            (config.username or "", config.user_password or "") if config.grant_type == "password" else ()
        )
        return credential_key(config.token_url, config.client_id, config.client_secret, *subject)

    @cached_property
    def token_client(self) -> TokenClient:
        return TokenClient(self.config, self._pooled_session())

    @cached_property
    def token_provider(self) -> TokenProvider:
        config, key = self.config, self.credential_key
        preset = None
        if self._handed_token is not None:
            preset = token_from_xcom(self._handed_token, config.client_secret, key)
            if preset is not None:
                mask_token(preset)
        return TokenProvider(
            fetch=self.token_client.grant,
            cache=process_tier(config),
            key=key,
            margin=config.refresh_margin,
            shared=shared_tier(config, key),
            refresh=self.token_client.refresh if config.grant_type == "password" else None,
            preset=preset,
        )

    def get_token_for_xcom(self, *, clear_text: bool = False) -> dict[str, Any]:
        """A token for other tasks, as a small JSON-serialisable XCom value.

        :param clear_text: put the access token in clear instead of encrypted with the connection-derived
            key. Anyone who can read XComs can then use it: only for consumers outside this provider.
        """
        token = self.token_provider.token()
        return token_to_xcom(token, self.config.client_secret, self.credential_key, clear_text=clear_text)

    def get_token(self) -> str:
        """Return a valid access token, requesting one only when none is cached or it is about to expire."""
        return self.token_provider.token().access_token

    def get_conn(self) -> requests.Session:
        """Return this hook's pooled session; it authenticates every request to the Deyel server."""
        return self._api_session

    @cached_property
    def _api_session(self) -> requests.Session:
        session = self._pooled_session()
        session.auth = DeyelBearerAuth(self.token_provider, self.config.is_own_url)
        session.headers["Accept"] = "application/json"
        return session

    def _pooled_session(self) -> requests.Session:
        session = requests.Session()
        session.verify = self.config.verify
        # Room for parallel page fetches; requests' default pool keeps 10 connections per host.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
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
        **kwargs: Any,
    ) -> requests.Response:
        """Make an authenticated call and return the response, or raise the typed error.

        :param method: HTTP method.
        :param endpoint: path relative to the base URL plus API prefix (``/forms/CRM_ACCOUNT/instances``),
            or an absolute URL on the same server (a next-page link).
        :param params: query parameters.
        :param json: JSON body.
        :param data: form or raw body.
        :param headers: extra headers.
        :param kwargs: passed to :meth:`requests.Session.request` (``timeout``, ``stream``...).
        """
        config = self.config
        url = config.url_for(endpoint)
        kwargs.setdefault("timeout", config.timeout)
        try:
            response = self.get_conn().request(
                method.upper(), url, params=params, json=json, data=data, headers=headers, **kwargs
            )
        except requests.RequestException as exc:
            raise connection_error(exc, url.split("?")[0], kwargs["timeout"], config.conn_id) from None
        if not response.ok:
            raise error_from_response(response, note=f"connection {config.conn_id!r}")
        return response

    def test_connection(self) -> tuple[bool, str]:
        """Request a token with the connection's credentials (the UI's "Test" button)."""
        try:
            token = self.token_client.grant()
        except DeyelError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        mask_token(token)
        return True, f"Connected to {self.config.base_url}: token obtained, valid {token.lifetime:.0f} s"
