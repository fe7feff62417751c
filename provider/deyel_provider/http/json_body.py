"""Parsing a JSON response body: msgspec where it gives the standard library's answer, the standard library
(``requests``' ``Response.json()``) everywhere else.

msgspec (which Airflow itself installs) parses a Deyel page about twice as fast as ``json``
(``python -m bench json_codecs``). It is used only on a body ``requests`` would decode as UTF-8 (a declared
UTF-8 charset, or none: JSON's default), where both parsers build the same values from every document both
accept. Whatever msgspec refuses goes to ``Response.json()``, so what is accepted or refused, and with which
error, is unchanged: a number beyond a float's range (``1e400``, parsed as infinity), ``NaN``, an escaped
lone surrogate (``"\\ud800"``), a byte order mark, a body in another encoding or not JSON at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import requests

_decode = msgspec.json.Decoder().decode
#: Charsets under which ``requests`` reads a body as UTF-8 text (None: it detects UTF-8/16/32 from the
#: bytes; a UTF-16 or UTF-32 body is refused by msgspec and handed to ``requests``).
_UTF8 = frozenset({None, "utf-8", "utf8"})


def response_json(response: requests.Response) -> Any:
    """``response.json()``, faster where the answer is provably the same; raises what it raises."""
    encoding = response.encoding.strip().lower() if response.encoding else None
    if encoding in _UTF8:
        try:
            return _decode(response.content)
        except (msgspec.MsgspecError, ValueError, RecursionError):
            pass  # refused: the standard library decides, as it did before msgspec (see the docstring)
    return response.json()
