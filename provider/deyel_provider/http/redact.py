"""The provider's own redaction of a connection's credentials from text built out of server answers.

Airflow's masker only covers task logs, and only values registered in the same process: an error page that
echoes the request would still put the ``Authorization: Basic`` value, a token or the resource owner's
password into an exception message, the Test button's answer, ``airflow dags test`` output or the refusal
file. So every such text goes through a :class:`Redactor` first, which replaces the client secret, its Basic
value, the user password and this connection's tokens (as typed, form-encoded, percent-encoded, JSON- and
HTML-escaped) with ``***``.
"""

from __future__ import annotations

import base64
import html
import json
import re
import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, quote_plus

if TYPE_CHECKING:
    import requests

    from deyel_provider.connection.settings import DeyelConfig

MASK = "***"
#: The longest server-supplied value (an id, a key value) quoted in a message or a rejects file, after
#: redaction.
MAX_QUOTED = 80
#: Tokens remembered per connection: renewals add one a day, so the set stays small in a long-lived process.
MAX_TOKENS = 16
#: Form fields of a request whose values are credentials (the token POST's body).
_SECRET_FIELDS = ("client_secret", "password", "refresh_token")


def basic_value(client_id: str, client_secret: str) -> str:
    """The ``Authorization: Basic`` value requests sends for these credentials (latin-1, else UTF-8)."""
    raw = f"{client_id}:{client_secret}"
    try:
        encoded = raw.encode("latin-1")
    except UnicodeEncodeError:
        encoded = raw.encode("utf-8")
    return base64.b64encode(encoded).decode("ascii")


def _variants(secret: str) -> set[str]:
    """The ways a server may echo a value: as sent, form- or percent-encoded, JSON- or HTML-escaped."""
    return {
        secret,
        quote_plus(secret),
        quote(secret, safe=""),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
    }


class Redactor:
    """Replaces known credentials with ``***`` in any text, in time linear in the text it looks at.

    :param secrets: fixed values (client secret, its Basic value, user password).
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._fixed = {v for s in secrets if s for v in _variants(s) if v}
        self._tokens: deque[str] = deque(maxlen=MAX_TOKENS)
        self._guard = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self._longest = 0

    def __repr__(self) -> str:
        return f"Redactor(values={len(self._fixed) + len(self._tokens)})"

    @classmethod
    def for_config(cls, config: DeyelConfig) -> Redactor:
        return cls(
            (
                config.client_secret,
                basic_value(config.client_id, config.client_secret),
                config.user_password,
            )
        )

    def add(self, *secrets: str | None) -> None:
        """Also redact these values from now on (tokens as they are obtained); the oldest are forgotten."""
        with self._guard:
            for secret in secrets:
                if secret and secret not in self._tokens:
                    self._tokens.append(secret)
                    self._pattern = None

    def with_values(self, *secrets: str | None) -> Redactor:
        """A copy that also redacts ``secrets`` (the credentials a given request carried)."""
        copy = Redactor()
        copy._fixed = self._fixed | {v for s in secrets if s for v in _variants(s) if v}
        copy._tokens = deque(self._tokens, maxlen=MAX_TOKENS)
        return copy

    def _compiled(self) -> re.Pattern[str] | None:
        with self._guard:
            if self._pattern is None:
                values = self._fixed | {v for t in self._tokens for v in _variants(t) if v}
                if not values:
                    return None
                # Longest first, so a value holding another is replaced whole; literals only: no backtracking.
                alternatives = sorted(values, key=len, reverse=True)
                self._longest = len(alternatives[0])
                self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))
            return self._pattern

    def __call__(self, text: str, limit: int | None = None) -> str:
        """``text`` (its first ``limit`` characters, when given) with every known value replaced.

        A value that starts within the limit is replaced whole even if it runs past it, so a cut never
        leaves the start of a secret behind.
        """
        pattern = self._compiled()
        if limit is not None and len(text) > limit:
            window = text[: limit + self._longest]
        else:
            window, limit = text, len(text)
        if pattern is None:
            return window[:limit]
        out: list[str] = []
        pos = 0
        for match in pattern.finditer(window):
            if match.start() >= limit:
                break
            out += [window[pos : match.start()], MASK]
            pos = match.end()
        if pos < limit:
            out.append(window[pos:limit])
        return "".join(out)


def sent_credentials(response: requests.Response) -> list[str]:
    """The credentials the request behind ``response`` carried (and those of the responses it followed)."""
    found: list[str] = []
    for answer in (*response.history, response):
        request = answer.request
        if request is None:
            continue
        value = request.headers.get("Authorization")
        if isinstance(value, str) and value:
            found.append(value.partition(" ")[2].strip() or value)
        body = request.body
        if isinstance(body, bytes):
            body = body.decode("latin-1")
        if isinstance(body, str) and "=" in body and len(body) < 65536:
            found += [v for k, v in parse_qsl(body) if k in _SECRET_FIELDS and v]
    return found


def quoted(value: Any, redact: Redactor | None = None) -> str:
    """A server-supplied value for a message: redacted (the connection's credentials and tokens), then cut
    to :data:`MAX_QUOTED` characters and, for a text, quoted; a cut is marked. Linear in what is kept,
    whatever its size."""
    text = value if isinstance(value, str) else str(value)
    kept = (redact or Redactor())(text, MAX_QUOTED) + ("..." if len(text) > MAX_QUOTED else "")
    # A text is quoted (its control characters escaped); a number or None is shown as it is.
    return repr(kept) if isinstance(value, str) else kept
