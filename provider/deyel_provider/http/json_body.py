"""Parsing a JSON response body: msgspec where it gives the standard library's answer, the standard library
(``requests``' ``Response.json()``) everywhere else.

msgspec (which Airflow itself installs) parses a Deyel page about twice as fast as ``json``
(``python -m bench json_codecs``). It is used only on a body ``requests`` would decode as UTF-8 (a declared
UTF-8 charset, or none: JSON's default), where both parsers build the same values from every document both
accept. Whatever msgspec refuses goes to ``Response.json()``, so what is accepted or refused, and with which
error, is unchanged: a number beyond a float's range (``1e400``, parsed as infinity), ``NaN``, an escaped
lone surrogate (``"\\ud800"``), a byte order mark, a body in another encoding or not JSON at all.

:func:`response_body` also says whether the body is *plain*: parsed by msgspec, and every float in it one
that msgspec's encoder writes as ``json`` does (zero, or between 1e-4 and 1e16 in magnitude). Every other
value msgspec builds (text, integers of any size, booleans, null, lists, objects with text keys) is written
alike by both encoders, so a plain page can be written back as JSON Lines in one msgspec call, with no walk
over its values (``extract/formats/base.py``, ``json_lines``). The floats are seen as they are parsed, through
msgspec's ``float_hook``, which hands over each float's text: ``float(text)`` is what ``json`` itself builds
from that text.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import requests

_decode = msgspec.json.Decoder().decode
#: Charsets under which ``requests`` reads a body as UTF-8 text (None: it detects UTF-8/16/32 from the
#: bytes; a UTF-16 or UTF-32 body is refused by msgspec and handed to ``requests``).
_UTF8 = frozenset({None, "utf-8", "utf8"})
_INFINITIES = (math.inf, -math.inf)


def response_json(response: requests.Response) -> Any:
    """``response.json()``, faster where the answer is provably the same; raises what it raises."""
    encoding = response.encoding.strip().lower() if response.encoding else None
    if encoding in _UTF8:
        try:
            return _decode(response.content)
        except (msgspec.MsgspecError, ValueError, RecursionError):
            pass  # refused: the standard library decides, as it did before msgspec (see the docstring)
    return response.json()


def response_body(response: requests.Response) -> tuple[Any, bool]:
    """``response_json(response)`` and whether the body is plain (see the module's docstring): False for a
    body msgspec refused (``Response.json()`` parsed it, or raised)."""
    encoding = response.encoding.strip().lower() if response.encoding else None
    if encoding in _UTF8:
        odd = False  # one answer for the page: no list of the odd floats (8 bytes each on a big page)

        def float_hook(text: str) -> float:
            nonlocal odd
            value = float(text)
            # Zero, or 1e-4 <= abs(value) < 1e16, without a call to abs (a NaN fails every test: odd).
            if not (1e-4 <= value < 1e16 or -1e16 < value <= -1e-4 or value == 0.0):
                if value in _INFINITIES:
                    # Past a float's range: msgspec without a hook refuses it, so json decides, as above.
                    raise ValueError(f"number out of range: {text[:40]}")
                odd = True
            return value

        try:
            body = msgspec.json.Decoder(float_hook=float_hook).decode(response.content)
        except (msgspec.MsgspecError, ValueError, RecursionError):
            pass  # refused: the standard library decides, as in response_json
        else:
            return body, not odd
    return response.json(), False
