"""Server error bodies read into Deyel's ``errors`` list and one short, redacted, printable line.

Whatever the body (either documented error shape, HTML, empty, truncated or hostile JSON), the time spent is
linear in a bounded prefix and the text kept is bounded: an error page can be large, nested or adversarial.
"""

from __future__ import annotations

import json
from typing import Any

from deyel_provider.http.redact import Redactor

#: Longest server-provided text kept in a message, so a huge or hostile error body stays readable.
MAX_DETAIL = 300
#: Characters of a non-JSON error body looked at: the cleanup's time is linear in this, whatever the body.
SCAN = 64 * 1024
#: Deyel errors kept on an exception (and in the refusal file), and the length kept of each text in them.
_MAX_ERRORS = 50
_MAX_ERROR_TEXT = 1000


def parse_errors(
    body: bytes | str | None, redact: Redactor | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Read a Deyel error body into (``errors`` list, one readable message), whatever its shape.

    Understands the documented shapes: ``{"errors": [{"message", "attribute-name"}]}`` (data calls and the
    refresh grant), ``{"error", "error_description"}`` (token endpoint), and ``{"errorCode", "message"}``.
    Anything else (HTML, empty, truncated JSON) yields no list and a short excerpt of the text, so the
    caller can still say something useful. Every text kept has ``redact``'s values replaced by ``***``.
    """
    if not body:
        return [], None
    redact = redact or Redactor()
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return [], _excerpt(text, redact)
    if not isinstance(data, dict):
        return [], _excerpt(text, redact)
    raw_errors = data.get("errors")
    errors = (
        [_clean_error(e, redact) for e in raw_errors[:_MAX_ERRORS] if isinstance(e, dict)]
        if isinstance(raw_errors, list)
        else []
    )
    parts: list[str] = []
    for error in errors:
        message, attribute = error.get("message"), error.get("attribute-name")
        if message:
            parts.append(f"{message} [{attribute}]" if attribute else str(message))
    for key in ("error", "errorCode"):
        if isinstance(data.get(key), str):
            parts.append(data[key])
    for key in ("error_description", "message"):
        if isinstance(data.get(key), str):
            parts.append(data[key])
    joined = "; ".join(dict.fromkeys(str(part) for part in parts))
    return errors, readable(redact(joined, SCAN)) or None


def _clean_error(error: dict[Any, Any], redact: Redactor) -> dict[str, Any]:
    """One Deyel error with its texts redacted and bounded; nested values are dropped (never shown)."""
    clean: dict[str, Any] = {}
    for key, value in list(error.items())[:20]:
        if isinstance(value, str):
            clean[redact(str(key), 100)] = redact(value, _MAX_ERROR_TEXT)
        elif value is None or isinstance(value, (bool, int, float)):
            clean[redact(str(key), 100)] = value
    return clean


def _excerpt(text: str, redact: Redactor) -> str:
    """The start of a non-JSON body on one line, with HTML tags dropped, so messages stay readable.

    Linear in a bounded prefix (``SCAN``): a hostile body of a million ``<`` costs what 64 KiB costs.
    """
    return readable(_strip_tags(redact(text, SCAN)))


def _strip_tags(text: str) -> str:
    """``<...>`` runs replaced by a blank, scanning each character once (a regex would backtrack)."""
    out: list[str] = []
    pos = 0
    while True:
        start = text.find("<", pos)
        end = text.find(">", start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            out.append(text[pos:])
            return "".join(out)
        out += [text[pos:start], " "]
        pos = end + 1


def readable(text: str, limit: int = MAX_DETAIL) -> str:
    """One printable line of at most ``limit`` characters: control characters and runs of blanks collapse."""
    text = text[:SCAN]
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."
