"""One authenticated call made the provider's way: a total deadline, a capped body, typed errors, and the
connection's retry policy (with no replay of a body that cannot be sent twice)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from deyel_provider.http.bodies import read_capped
from deyel_provider.http.deadline import total_deadline
from deyel_provider.http.errors import connection_error, error_from_response
from deyel_provider.http.retry import RetryPolicy, is_replay_safe

if TYPE_CHECKING:
    from deyel_provider.connection.settings import DeyelConfig
    from deyel_provider.http.redact import Redactor


@dataclass(frozen=True)
class Transport:
    """How one connection's calls are sent: through ``session`` (which authenticates them), under
    ``policy``, with server text redacted by ``redact``."""

    config: DeyelConfig
    session: requests.Session
    policy: RetryPolicy
    redact: Redactor

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        retry_unsafe: bool = False,
        on_retry: Callable[[BaseException], None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """See :meth:`deyel_provider.hooks.deyel.DeyelHook.request`; ``kwargs`` go to
        :meth:`requests.Session.request` (``params``, ``json``, ``data``, ``headers``, ``timeout``...)."""
        config, session = self.config, self.session
        url = config.url_for(endpoint)
        method = method.upper()
        path = urlsplit(url).path or "/"
        kwargs.setdefault("timeout", config.timeout)
        stream = bool(kwargs.pop("stream", False))

        def attempt() -> requests.Response:
            try:
                # Connect, headers and the whole body within request_deadline, however slow the server.
                with total_deadline(config.request_deadline, method=method, path=path):
                    response = session.request(method, url, stream=True, **kwargs)
                    # Only a success is left for the caller to stream: an error, a redirect that was not
                    # followed and a 3xx without a Location are read here, capped, to build the error.
                    success = 200 <= response.status_code < 300
                    if not (stream and success):
                        read_capped(response, config.max_response_bytes, method=method, path=path)
            except requests.RequestException as exc:
                raise connection_error(exc, url, kwargs["timeout"], config.conn_id, method=method) from None
            if not success:
                raise error_from_response(response, note=f"connection {config.conn_id!r}", redact=self.redact)
            return response

        # A body that is a stream or a file was consumed by the first attempt: it cannot be sent again.
        data = kwargs.get("data")
        replayable = data is None or isinstance(data, (bytes, str, dict, list, tuple))
        policy = self.policy if replayable else RetryPolicy(attempts=1)
        return policy.call(
            attempt,
            method=method,
            path=path,
            replay_safe=is_replay_safe(method, opted_in=retry_unsafe),
            on_retry=on_retry,
        )
