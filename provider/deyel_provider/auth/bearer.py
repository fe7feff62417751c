"""``requests`` authentication that attaches the Deyel token, and renews it once on a 401."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar

from deyel_provider.http.bodies import drain

if TYPE_CHECKING:
    from collections.abc import Callable

    import requests

    from deyel_provider.auth.provider import TokenProvider

log = logging.getLogger(__name__)


class DeyelBearerAuth(AuthBase):
    """Sends ``Authorization: Bearer <token>`` to the configured Deyel server only.

    On a 401 the rejected token is dropped from the cache, a fresh one is fetched and the request is replayed
    once; a second 401 is returned to the caller. Requests to any other host (an absolute URL, a redirect)
    never get the header.

    :param provider: serves the current token.
    :param is_own_url: tells whether a URL belongs to the configured Deyel server.
    :param max_body: most bytes of a 401 body read (decoded) before the replay; the connection's
        ``max_response_bytes``.
    """

    def __init__(
        self, provider: TokenProvider, is_own_url: Callable[[str], bool], max_body: int = 1024 * 1024
    ) -> None:
        self._provider = provider
        self._is_own_url = is_own_url
        self._max_body = max_body

    def __repr__(self) -> str:
        return f"DeyelBearerAuth({self._provider!r})"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if not request.url or not self._is_own_url(request.url):
            request.headers.pop("Authorization", None)
            return request
        access_token = self._provider.token().access_token
        request.headers["Authorization"] = f"Bearer {access_token}"
        request.register_hook("response", functools.partial(self._renew_on_401, rejected=access_token))
        return request

    def _renew_on_401(self, response: requests.Response, rejected: str, **kwargs: Any) -> requests.Response:
        if response.status_code != 401 or not _replayable(response.request):
            return response
        if not response.request.url or not self._is_own_url(response.request.url):
            # A redirect led elsewhere and that host answered 401: its 401 is not ours to answer with a token.
            return response
        self._provider.invalidate(rejected)
        access_token = self._provider.token().access_token
        log.info("Deyel answered 401 to %s; replaying it once with a renewed token", response.request.method)
        # Release the connection first so the replay can reuse it (as requests' own digest auth does), but
        # never read more of that body than any other: a 401 can be a decompression bomb too.
        drain(response, self._max_body)
        response.close()
        replay = response.request.copy()
        cookies = replay._cookies
        if cookies is not None:
            extract_cookies_to_jar(cookies, response.request, response.raw)
            replay.prepare_cookies(cookies)
        replay.headers["Authorization"] = f"Bearer {access_token}"
        assert response.connection is not None
        second = response.connection.send(replay, **kwargs)
        second.history.append(response)
        second.request = replay
        return second


def _replayable(request: requests.PreparedRequest) -> bool:
    """A body that is a stream was consumed by the first attempt and cannot be sent again."""
    return request.body is None or isinstance(request.body, (bytes, str))
