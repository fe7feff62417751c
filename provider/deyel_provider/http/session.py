"""One connection's pooled ``requests.Session``: redirects that cannot change a call's meaning, the
connection's own TLS setting, and connections watched by the per-request deadline."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies

from deyel_provider.http.bodies import drain
from deyel_provider.http.deadline import WatchedAdapter

if TYPE_CHECKING:
    from deyel_provider.connection.settings import DeyelConfig

#: The only methods that follow a redirect: requests would turn other methods into a GET.
FOLLOWED_REDIRECT_METHODS = frozenset({"GET", "HEAD"})


class ConnectionSession(requests.Session):
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

    The proxy variables (``HTTPS_PROXY``, ``NO_PROXY``...) are read once per session for the connection's own
    origin, not on every request: requests scans the whole environment four times per call to find them
    (0.35 ms of a one-instance GET's 2.0 ms of client CPU with 37 variables; a task's environment holds
    more). Other origins are read as requests reads them; a variable changed after the session's first call
    applies to the next session.
    """

    max_redirect_body = 1024 * 1024

    def __init__(self, is_own_url: Callable[[str], bool]) -> None:
        super().__init__()
        self._is_own_url = is_own_url
        self._environ_proxies: dict[tuple[str, str], dict[str, str]] = {}

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
        if not self.trust_env or proxies or not self._is_own_url(url):
            # A call's own proxies (and their no_proxy), or another origin (the session of get_conn() used
            # elsewhere): requests' way, so that the cache holds the connection's origin alone.
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        origin = urlsplit(url)[:2]
        environ_proxies = self._environ_proxies.get(origin)
        if environ_proxies is None:
            environ_proxies = self._environ_proxies[origin] = get_environ_proxies(url)
        if verify is True:  # as requests: the environment's CA bundle, unless the connection names one
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or verify
        return {
            "proxies": merge_setting(dict(environ_proxies), self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }


def pooled_session(config: DeyelConfig) -> ConnectionSession:
    """A new session for ``config``'s server (no authentication attached: the token endpoint's too)."""
    session = ConnectionSession(config.is_own_url)
    session.verify = config.verify
    session.max_redirect_body = config.max_response_bytes
    # Room for parallel page fetches; requests' default pool keeps 10 connections per host. Its
    # connections report to the request's total deadline (request_deadline).
    adapter = WatchedAdapter(pool_connections=4, pool_maxsize=32)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
