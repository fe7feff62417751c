"""Reading a response body with a size cap, so that an oversized answer never fills the worker's memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deyel_provider.exceptions import DeyelBadResponseError

if TYPE_CHECKING:
    import requests

_CHUNK = 64 * 1024


def read_capped(response: requests.Response, limit: int, *, method: str, path: str) -> requests.Response:
    """Load a response sent with ``stream=True`` into ``response.content``, refusing over ``limit`` bytes.

    A ``Content-Length`` over the limit fails before anything is read; a body without one (chunked) is read
    until it passes the limit and the connection is then closed. The limit applies to the decoded bytes, so
    a small compressed body that inflates past it is refused too.

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
    # What requests itself does for a non-streamed response; the connection went back to the pool at EOF.
    response._content = bytes(body)
    response._content_consumed = True
    return response
