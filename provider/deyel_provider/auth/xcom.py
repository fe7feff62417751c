"""A token handed from one task to others through XCom, encrypted with the connection-derived key.

The value is a small JSON-serialisable dict: ``{"deyel_token": "<Fernet ciphertext>", "expires_at": <epoch s>,
"v": 1}``. Without the connection's client secret nothing in it is usable. Only on an explicit opt-in is the
token written in clear (``{"access_token": ..., "expires_at": ..., "v": 1, "conn": <conn id>, "mac": ...}``);
such a value names the connection it was made for and carries a MAC made with that connection's secret, so
a consumer refuses a value made for another connection (whose token would otherwise go to its own host) or
forged by whoever can write XComs.
"""

from __future__ import annotations

import ast
import hmac
import json
import logging
import time
from typing import Any

from deyel_provider.auth.crypto import XCOM_PURPOSE, TokenSealer, UnreadableTokenError, clear_text_mac
from deyel_provider.auth.token import DeyelToken
from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError

log = logging.getLogger(__name__)

XCOM_VERSION = 1
#: A rendered token value is a few hundred bytes; a longer string is not one (and is not parsed).
_MAX_RENDERED = 64 * 1024


def token_to_xcom(
    token: DeyelToken, client_secret: str, key: str, *, clear_text: bool = False, conn_id: str = ""
) -> dict[str, Any]:
    """The XCom value for ``token``; the refresh token never leaves the cache.

    :param conn_id: the connection the token was made for, named in a clear-text value.
    """
    if clear_text:
        value: dict[str, Any] = {
            "access_token": token.access_token,
            "expires_at": token.expires_at,
            "v": XCOM_VERSION,
            "conn": conn_id,
        }
        value["mac"] = clear_text_mac(client_secret, key, _mac_fields(value))
        return value
    handed = DeyelToken(token.access_token, expires_at=token.expires_at, issued_at=token.issued_at)
    sealed = TokenSealer(client_secret, key, XCOM_PURPOSE).seal(handed).decode("ascii")
    return {"deyel_token": sealed, "expires_at": token.expires_at, "v": XCOM_VERSION}


def token_from_xcom(value: Any, client_secret: str, key: str, conn_id: str = "") -> DeyelToken | None:
    """The token in an XCom value from :func:`token_to_xcom`, or None when it is expired or unreadable.

    Accepts the dict itself, or its rendering by a template (``{{ ti.xcom_pull('get_token') }}`` renders a
    dict as its Python repr unless the DAG renders native objects).
    """
    value = _as_dict(value)
    if value.get("v") != XCOM_VERSION:
        raise DeyelConfigError(f"token: unsupported XCom token version {value.get('v')!r} (expected 1)")
    if isinstance(value.get("deyel_token"), str):
        try:
            token = TokenSealer(client_secret, key, XCOM_PURPOSE).open(value["deyel_token"].encode())
        except UnreadableTokenError:
            log.warning(
                "The token passed in 'token' was not sealed for this connection (another connection, or "
                "the client secret was rotated); requesting one the normal way"
            )
            return None
    elif isinstance(value.get("access_token"), str):
        if value.get("conn") != conn_id or not _mac_matches(value, client_secret, key):
            # Sending it would give this connection's host another connection's token (or use a forged one).
            log.warning(
                "The clear-text token passed in 'token' was not made for connection %r (it names %r, or its "
                "MAC does not match this connection's credentials); requesting one the normal way",
                conn_id,
                str(value.get("conn"))[:100],
            )
            return None
        now = time.time()
        try:
            expires_at = float(value.get("expires_at", 0))
        except (TypeError, ValueError):
            expires_at = 0.0
        token = DeyelToken(value["access_token"], expires_at=expires_at, issued_at=now)
    else:
        raise DeyelConfigError("token: expected the XCom value of DeyelTokenOperator ('deyel_token' key)")
    if not token.is_valid():
        log.info("The token passed in 'token' has expired; requesting one the normal way")
        return None
    return token


def _mac_fields(value: dict[str, Any]) -> str:
    return json.dumps([value.get("conn"), value.get("access_token"), value.get("expires_at")])


def _mac_matches(value: dict[str, Any], client_secret: str, key: str) -> bool:
    mac = value.get("mac")
    return isinstance(mac, str) and hmac.compare_digest(
        mac, clear_text_mac(client_secret, key, _mac_fields(value))
    )


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_RENDERED:
            raise DeyelConfigError(
                f"token: a rendered XCom token value is far shorter than {len(text)} chars"
            )
        try:
            value = json.loads(text)
        except RecursionError:
            raise DeyelBadResponseError("token: the value is nested too deeply to be a token") from None
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (RecursionError, MemoryError):
                raise DeyelBadResponseError("token: the value is nested too deeply to be a token") from None
            except (ValueError, SyntaxError, TypeError):
                value = None
    if not isinstance(value, dict):
        raise DeyelConfigError(
            "token: expected the XCom value of DeyelTokenOperator, e.g. "
            "token=\"{{ ti.xcom_pull('get_token') }}\""
        )
    return value
