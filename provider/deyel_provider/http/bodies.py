"""Reading a response body with a size cap, so that an oversized answer never fills the worker's memory."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from deyel_provider.exceptions import DeyelBadResponseError, DeyelConnectionError

if TYPE_CHECKING:
    import requests

_CHUNK = 64 * 1024


def read_capped(
    response: requests.Response, limit: int, *, method: str, path: str, deadline: float | None = None
) -> requests.Response:
    """Load a response sent with ``stream=True`` into ``response.content``, refusing over ``limit`` bytes.

    A ``Content-Length`` over the limit fails before anything is read; a body without one (chunked) is read
    until it passes the limit and the connection is then closed. The limit applies to the decoded bytes, so
    a small compressed body that inflates past it is refused too (urllib3 >= 2.6 decodes no more than it is
    asked for, nested encodings included).

    :param deadline: a ``time.monotonic()`` after which reading stops (the Test button's total budget): the
        ``timeout`` bounds each read, not a server that sends a byte just before each one expires.

    :raises DeyelBadResponseError: the body is larger than ``limit`` (the ``max_response_bytes`` extra).
    :raises requests.RequestException: the connection broke while the body was read.
    """

    def too_large(size: str) -> DeyelBadResponseError:
        response.close()
        return DeyelBadResponseError(
            f"the response body is {size}, over the {limit} bytes allowed by the 'max_response_bytes' "
            f"extra; ask for smaller pages or raise the limit",
            status=response.status_code,
            method=method,
            path=path,
        )

    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(f"{int(declared)} bytes")
    body = bytearray()
    for chunk in response.iter_content(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise too_large("larger")
        if deadline is not None and time.monotonic() > deadline:
            response.close()
            raise DeyelConnectionError(
                "the answer was still arriving when the time allowed ran out", method=method, path=path
            )
    # What requests itself does for a non-streamed response; the connection went back to the pool at EOF.
    response._content = bytes(body)
    response._content_consumed = True
    return response


def drain(response: requests.Response, limit: int) -> None:
    """Read a body that is about to be discarded or followed (a 401 before its replay, a redirect) up to
    ``limit`` bytes decoded: requests would otherwise read it whole. A body within the limit stays readable
    (for an error message); past it the connection is closed instead of reused and the body is dropped."""
    if response._content_consumed:
        return
    body = bytearray()
    try:
        for chunk in response.iter_content(_CHUNK):
            body += chunk
            if len(body) > limit:
                response.close()
                body = bytearray()
                break
    except Exception:
        # A broken body of a response being discarded changes nothing: drop the connection.
        response.close()
        body = bytearray()
    response._content = bytes(body)
    response._content_consumed = True
