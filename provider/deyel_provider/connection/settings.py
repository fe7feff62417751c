"""The ``deyel`` connection parsed into one validated settings object (fields declared in ``conn_fields``)."""

from __future__ import annotations

import difflib
import ipaddress
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from deyel_provider.connection.fields import ALIASES, EXTRA_FIELDS, RETIRED, ExtraField
from deyel_provider.exceptions import DeyelConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow.sdk import Connection


_FIELDS_BY_NAME = {f.name: f for f in EXTRA_FIELDS}
#: The default ``request_deadline`` in request timeouts: room for a large page on a slow link.
DEADLINE_PER_TIMEOUT = 4
#: The shortest Redis lock lease: its holder extends it every third of it.
MIN_LOCK_LEASE = 1.0
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}


@dataclass(frozen=True)
class DeyelConfig:
    """Everything the hook needs from a ``deyel`` connection, validated once (defaults: ``EXTRA_FIELDS``)."""

    conn_id: str
    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    token_path: str
    api_prefix: str
    timeout: float
    #: Total seconds of one request (connect + whole answer): the extra, else DEADLINE_PER_TIMEOUT x timeout.
    request_deadline: float
    verify: bool | str
    refresh_margin: float
    # Resilience (see deyel_provider.http.retry).
    retry_attempts: int
    retry_backoff: float
    retry_max_backoff: float
    retry_after_max: float
    auth_failure_ttl: float
    max_response_bytes: int
    cache: str
    cache_dir: str | None
    cache_url: str | None = field(repr=False)
    cache_conn_id: str | None
    cache_lock_lease: float
    grant_type: str
    username: str | None
    user_password: str | None = field(repr=False)
    # Paging of the instances collection (assumed; see pagination.py).
    paging: str
    page_size: int
    page_param: str
    page_size_param: str
    offset_param: str
    limit_param: str
    total_header: str
    # The server's clock (issue 20): see the extras' descriptions in conn_fields.
    settle_seconds: float
    max_clock_skew_seconds: float
    # Undocumented keys and literals (id_field, date_literal, in_separator; see conn_fields).
    id_field: str
    date_literal: str
    in_separator: str
    # The Test button's form (None: the docs' example form) and whether unknown extras are refused.
    test_form: str | None
    strict_extras: bool

    @property
    def token_url(self) -> str:
        return self.base_url + _as_path(self.token_path)

    @property
    def api_url(self) -> str:
        """Base of every data call: base URL plus API prefix, without a trailing slash."""
        return self.base_url + _as_path(self.api_prefix).rstrip("/")

    def url_for(self, endpoint: str) -> str:
        """The absolute URL of ``endpoint``; absolute URLs must stay on the configured server.

        The host is decided by urllib3's parser, the one requests connects with; a URL that parsers may
        read differently (a backslash, user-info before the host) is refused outright.
        """
        parts = urlsplit(endpoint)
        absolute = bool(parts.scheme and parts.netloc)  # "://" inside a query leaves an endpoint relative
        url = endpoint if absolute else self.api_url + "/" + endpoint.lstrip("/")
        if _ambiguous(url):
            raise DeyelConfigError(
                f"an endpoint with a backslash or user-info (user@) is refused: parsers disagree on its "
                f"host, and the provider sends its token only to the configured Deyel server "
                f"(connection {self.conn_id!r})"
            )
        if not _same_origin(url, self.base_url):
            raise DeyelConfigError(
                f"endpoint {_origin_text(url)!r} is not the connection's host "
                f"{_origin_text(self.base_url)!r}; the provider sends its token only to the configured "
                f"Deyel server (connection {self.conn_id!r})"
            )
        return url

    def is_own_url(self, url: str) -> bool:
        """True when ``url`` is on the configured server: only those requests get the Bearer token."""
        return not _ambiguous(url) and _same_origin(url, self.base_url)

    @classmethod
    def from_connection(cls, conn: Connection) -> DeyelConfig:
        conn_id = conn.conn_id or "?"
        if not conn.login:
            raise DeyelConfigError(f"connection {conn_id!r} has no Login: set it to the Deyel Client ID")
        if not conn.password:
            raise DeyelConfigError(
                f"connection {conn_id!r} has no Password: set it to the Deyel Client Secret"
            )
        extras = _read_extras(conn_id, conn.extra_dejson)
        verify: bool | str = extras.pop("verify")
        ca_bundle = extras.pop("ca_bundle")
        token_path = extras.pop("oauth_path")
        allow_insecure_http = extras.pop("allow_insecure_http")
        if ca_bundle and not verify:
            raise DeyelConfigError(
                f"connection {conn_id!r}: 'verify' is false but 'ca_bundle' is set; a CA bundle is only "
                f"used to verify: remove one of the two"
            )
        if ca_bundle:
            verify = ca_bundle
        user_password = extras.pop("password")
        if extras["grant_type"] == "password" and not (extras["username"] and user_password):
            raise DeyelConfigError(
                f"connection {conn_id!r}: grant_type 'password' needs the resource owner's "
                f"'username' and 'password' extras"
            )
        if extras["cache"] == "redis" and extras["cache_lock_lease"] < MIN_LOCK_LEASE:
            raise DeyelConfigError(
                f"connection {conn_id!r}: extra field 'cache_lock_lease' must be at least "
                f"{MIN_LOCK_LEASE:g} s (the renewal lock's holder extends its lease every third of it), "
                f"got {extras['cache_lock_lease']!r}"
            )
        _check_keys(conn_id, extras)
        if extras["request_deadline"] is None:
            extras["request_deadline"] = DEADLINE_PER_TIMEOUT * extras["timeout"]
        if extras["cache"] == "redis" and not (extras["cache_url"] or extras["cache_conn_id"]):
            raise DeyelConfigError(
                f"connection {conn_id!r}: cache 'redis' needs the 'cache_url' extra "
                f"(redis://host:6379/0) or 'cache_conn_id' (an Airflow redis connection)"
            )
        return cls(
            conn_id=conn_id,
            base_url=_base_url(conn_id, conn.host, conn.port, allow_insecure_http=allow_insecure_http),
            client_id=conn.login,
            client_secret=conn.password,
            verify=verify,
            user_password=user_password,
            token_path=token_path,
            **extras,
        )


def _check_keys(conn_id: str, extras: dict[str, Any]) -> None:
    """The id key is named in search clauses and error messages: it cannot hold what splits a clause."""
    id_field = extras["id_field"] = extras["id_field"].strip()
    if not id_field or any(c in id_field for c in ",=:"):
        raise DeyelConfigError(
            f"connection {conn_id!r}: extra field 'id_field' must be the key holding an instance's id (e.g. "
            f"idObjectValue, id) or 'links', got {extras['id_field']!r}"
        )


def _read_extras(conn_id: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Declared extras converted to their types (the UI and env vars may send strings), defaults filled in."""
    renamed = sorted(old for old in raw if old in ALIASES)
    if renamed:
        warnings.warn(
            f"connection {conn_id!r}: extra field(s) {renamed} are read as "
            f"{[ALIASES[old] for old in renamed]}; rename them: Airflow masks the value of any extra whose "
            f"name contains 'token'",
            UserWarning,
            stacklevel=3,
        )
        raw = {ALIASES.get(name, name): value for name, value in raw.items() if ALIASES.get(name) not in raw}
    retired = sorted(name for name in raw if name in RETIRED)
    if retired:
        reasons = "; ".join(dict.fromkeys(RETIRED[name] for name in retired))
        warnings.warn(
            f"connection {conn_id!r}: extra field(s) {retired} are no longer used and are ignored: "
            f"{reasons}; remove them",
            UserWarning,
            stacklevel=3,
        )
        raw = {name: value for name, value in raw.items() if name not in RETIRED}
    values: dict[str, Any] = {}
    for spec in EXTRA_FIELDS:
        value = raw.get(spec.name)
        values[spec.name] = spec.default if value is None or value == "" else _convert(conn_id, spec, value)
    _check_unknown(conn_id, raw, strict=values["strict_extras"])
    return values


def _check_unknown(conn_id: str, raw: Mapping[str, Any], *, strict: bool) -> None:
    """Unknown keys are typos until proven otherwise: each is named with the closest known key; a warning,
    or an error under ``strict_extras``."""
    unknown = sorted(str(name) for name in set(raw) - set(_FIELDS_BY_NAME))
    if not unknown:
        return
    described = ", ".join(_unknown_key(name) for name in unknown[:20])
    more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
    text = f"connection {conn_id!r}: unknown extra field(s) {described}{more}"
    if strict:
        raise DeyelConfigError(f"{text}; fix or remove them (strict_extras is true)")
    warnings.warn(
        f"{text}; they are ignored (set strict_extras to true to refuse them)", UserWarning, stacklevel=4
    )


def _unknown_key(name: str) -> str:
    shown = repr(name[:80] + ("..." if len(name) > 80 else ""))
    close = difflib.get_close_matches(name.strip().lower(), _FIELDS_BY_NAME, n=1, cutoff=0.6)
    return f"{shown} (did you mean {close[0]!r}?)" if close else f"{shown} (no known field is close)"


def _convert(conn_id: str, spec: ExtraField, value: Any) -> Any:
    def bad(expected: str) -> DeyelConfigError:
        # A secret's value is never repeated, whatever its type (a numeric password is still a password).
        kind = type(value).__name__
        got = f"got a {kind}" if spec.secret else f"got {value!r} ({kind})"
        default = "" if spec.default is None else f"; remove it to use the default, {spec.default!r}"
        return DeyelConfigError(
            f"connection {conn_id!r}: extra field {spec.name!r} must be {expected}, {got}{default}"
        )

    if spec.type == "boolean":
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise bad("true or false")
    if spec.type in ("integer", "number"):
        return _number(spec, value, bad)
    if spec.enum and value not in spec.enum:
        raise bad(f"one of {list(spec.enum)}")
    if not isinstance(value, str):
        raise bad("a string")
    return value


def _number(spec: ExtraField, value: Any, bad: Callable[[str], DeyelConfigError]) -> float | int:
    """A finite number within the field's bounds; never rounded (2.7 attempts is a mistake, not 2)."""
    whole = spec.type == "integer"
    bound = f"{'greater than' if spec.above else 'at least'} {spec.minimum:g}"
    why = f" ({spec.below_minimum})" if spec.below_minimum else ""
    expected = f"{'a whole number' if whole else 'a number'} {bound}{why}"
    if isinstance(value, bool):  # a bool is an int to Python, never to a user
        raise bad(expected)
    number: float | int
    try:
        text = value.strip() if isinstance(value, str) else value
        # Whole numbers stay ints: float() would round 2**53 + 1.
        number = int(text) if isinstance(text, int) or _is_whole_text(text) else float(text)
    except (TypeError, ValueError, OverflowError):
        raise bad(expected) from None
    if isinstance(number, float) and not math.isfinite(number):
        raise bad(expected)
    if number < spec.minimum or (spec.above and number == spec.minimum):
        raise bad(expected)
    if number > spec.maximum:
        raise bad(f"{expected} and at most {spec.maximum:g}")
    if whole:
        if isinstance(number, float) and not number.is_integer():
            raise bad(expected)
        return int(number)
    return number


def _is_whole_text(text: Any) -> bool:
    return isinstance(text, str) and text.lstrip("+-").isdigit()


def _base_url(conn_id: str, host: str | None, port: int | None, *, allow_insecure_http: bool = False) -> str:
    if not host:
        raise DeyelConfigError(
            f"connection {conn_id!r} has no Host: set it to the Deyel base URL, e.g. https://tenant.deyel.com"
        )
    parts = urlsplit(host.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeyelConfigError(
            f"connection {conn_id!r}: Host {host!r} is not a base URL; write it with its scheme, "
            f"e.g. https://tenant.deyel.com"
        )
    if _ambiguous(host.strip()) or parts.username is not None:
        raise DeyelConfigError(
            f"connection {conn_id!r}: Host must be a plain base URL, without user-info or backslashes "
            f"(the Client ID and secret go in Login and Password)"
        )
    if parts.query or parts.fragment:
        raise DeyelConfigError(
            f"connection {conn_id!r}: Host {host!r} must not carry a query or fragment; "
            f"put a path prefix in the 'API path prefix' extra instead"
        )
    netloc = parts.netloc if parts.port or not port else f"{parts.netloc}:{port}"
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        if not allow_insecure_http:
            raise DeyelConfigError(
                f"connection {conn_id!r} uses plain http to {parts.hostname}: the client secret and tokens "
                f"would travel unencrypted; use https, or set the 'allow_insecure_http' extra to true"
            )
        warnings.warn(
            f"connection {conn_id!r} uses plain http to {parts.hostname}: the client secret and tokens "
            f"travel unencrypted (allow_insecure_http); use https",
            UserWarning,
            stacklevel=3,
        )
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _as_path(path: str) -> str:
    return "/" + path.strip("/") if path.strip("/") else ""


def _ambiguous(url: str) -> bool:
    """A URL whose host parsers disagree on: a backslash anywhere, or user-info (``user@``) in front."""
    if "\\" in url:
        return True
    try:
        return parse_url(url).auth is not None
    except LocationParseError:
        return True


def _origin(url: str) -> tuple[str | None, str | None, int | None]:
    """(scheme, host, port) as urllib3 reads them: requests connects to exactly this host."""
    try:
        parts = parse_url(url)
    except LocationParseError:
        return (None, None, None)
    scheme = (parts.scheme or "").lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return (scheme, (parts.host or "").lower() or None, port)


def _same_origin(url: str, base_url: str) -> bool:
    mine = _origin(base_url)
    return mine[1] is not None and _origin(url) == mine


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}" if host else "?"
