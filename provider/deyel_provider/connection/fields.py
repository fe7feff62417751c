"""The ``deyel`` connection's extra fields: the single source of truth for the form, the docs and the parser.

Kept free of Airflow imports: Airflow calls ``get_provider_info()`` while it is itself being imported.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ExtraField:
    """One option of the ``deyel`` connection, stored in the connection's extra JSON."""

    name: str
    label: str
    description: str
    type: str  # JSON-schema type: "string", "integer", "number" or "boolean"
    default: Any = None
    enum: tuple[str, ...] | None = None
    secret: bool = False
    #: Numbers only: the smallest value accepted; ``above`` makes it exclusive (a timeout of 0 is no timeout).
    minimum: float = 0
    above: bool = False
    #: Numbers only: the largest value accepted (past it, a number is a typo, and sockets, sleeps and
    #: timestamps overflow on huge ones).
    maximum: float = 10**12
    #: Numbers only: why a value below the minimum means nothing, for the message that refuses it.
    below_minimum: str = ""
    #: Rarely changed: the form shows it under the "Advanced" heading, apart from what most connections set.
    advanced: bool = False

    def conn_field(self) -> dict[str, Any]:
        """The ``conn-fields`` entry Airflow 3 renders in the connection form.

        No ``minimum``/``maximum``: Airflow's number input clamps a value outside them when it loses focus,
        so a ``0`` typed into Page size was saved as ``1``; the parser refuses what is out of bounds with a
        message naming the field instead (the Test button shows it). No ``default`` either, except for
        check boxes (an unticked box would read as false): the form saves every field's value, so a
        default shown in it would be written into every connection; an empty field means the default,
        which the description names.
        """
        schema: dict[str, Any] = {"type": [self.type, "null"]}
        if self.default is not None and self.type == "boolean":
            schema["default"] = self.default
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.secret:
            schema["format"] = "password"
        if self.advanced:
            schema["section"] = ADVANCED_SECTION
        return {"label": self.label, "description": self.form_description(), "schema": schema}

    def form_description(self) -> str:
        """The description, with the default an empty field means and the bounds the parser enforces."""
        notes = []
        if self.type in ("integer", "number"):
            low = f"{'above' if self.above else 'at least'} {_number_text(self.minimum)}"
            notes.append(f"Allowed: {low}, at most {_number_text(self.maximum)}.")
        if self.default not in (None, "") and self.type != "boolean":
            notes.append(f"Empty: {self.default}.")
        return " ".join([self.description, *notes])


def _number_text(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


#: The heading of the rarely changed options in Airflow's connection form (``schema.section``; 3.2+).
ADVANCED_SECTION = "Advanced"

# Airflow hides the value of every extra whose name contains a sensitive word ("token", "secret", "password",
# "key"...): the UI shows and saves "***" in its place. Only secret fields may have such names.
EXTRA_FIELDS: tuple[ExtraField, ...] = (
    ExtraField(
        "oauth_path",
        "Token path",
        "Path of the OAuth2 token endpoint, relative to the base URL (documented: /oauth/token).",
        "string",
        "/oauth/token",
    ),
    ExtraField(
        "api_prefix",
        "API path prefix",
        "Prefix between the base URL and /forms, e.g. /DeyelWeb/api. Empty by default (assumed).",
        "string",
        "",
    ),
    ExtraField(
        "timeout",
        "Request timeout (s)",
        "Seconds to wait for the server to connect or answer, for token and API calls.",
        "number",
        30,
        above=True,
        maximum=3600,
    ),
    ExtraField(
        "request_deadline",
        "Request deadline (s)",
        "Total seconds one request may take: connecting, then the whole answer (headers and body), "
        "however slowly the server sends it; past it the request fails with DeyelConnectionError (and is "
        "retried like a timeout). Empty: 4 x the request timeout (120 s by default).",
        "number",
        None,
        above=True,
        maximum=86400,
    ),
    ExtraField(
        "verify",
        "Verify TLS",
        "Verify the server's TLS certificate. Turn off only for a test server.",
        "boolean",
        True,
    ),
    ExtraField(
        "ca_bundle",
        "CA bundle path",
        "Path to a PEM file of trusted CA certificates, for a server with a private CA.",
        "string",
    ),
    ExtraField(
        "allow_insecure_http",
        "Allow plain http",
        "Accept a plain http base URL to a host other than this machine. The client secret and tokens then "
        "travel unencrypted: only for a test server on a trusted network.",
        "boolean",
        False,
    ),
    ExtraField(
        "refresh_margin",
        "Token refresh margin (s)",
        "Renew a token this many seconds before it expires (never more than half its lifetime).",
        "number",
        300,
        maximum=86400,
    ),
    # Shared tokens: the cache that makes one token serve every task, and the grants.
    ExtraField(
        "cache",
        "Token cache",
        "Where tokens are shared: file (one host, the default), redis (many hosts), memory (this process "
        "only) or none (fetch every time, for debugging). Also where the lease that lets one load of a form "
        "run at a time lives: redis across hosts, any other value a file lock on one host.",
        "string",
        "file",
        enum=("file", "redis", "memory", "none"),
    ),
    ExtraField(
        "cache_dir",
        "Token cache folder",
        "Folder of the file cache (one encrypted 0600 file per credential). Loads' lease files live in one "
        "per-user folder instead (~/.cache/deyel-locks, or $DEYEL_LOCK_DIR). Default: "
        "$AIRFLOW_HOME/deyel-token-cache.",
        "string",
    ),
    ExtraField(
        "cache_url",
        "Token cache Redis URL",
        "Redis URL of the redis cache, e.g. redis://redis:6379/1. For a Redis with a password use Token "
        "cache Redis connection instead (a password in this URL is masked in logs, not hidden in the UI).",
        "string",
    ),
    ExtraField(
        "cache_conn_id",
        "Token cache Redis connection",
        "Id of an Airflow redis connection to use for the redis cache, instead of a URL.",
        "string",
    ),
    ExtraField(
        "cache_lock_lease",
        "Token lock lease (s)",
        "A renewal lock, or a load's lease on its form, held by a process that died is freed after this many "
        "seconds (redis; at least 1). A live holder keeps extending it, however long its renewal or load "
        "takes.",
        "number",
        30,
        above=True,
        maximum=3600,
    ),
    ExtraField(
        "grant_type",
        "Grant type",
        "OAuth2 grant: client_credentials (the default), or password (resource owner Username/Password; "
        "renewed with the refresh token).",
        "string",
        "client_credentials",
        enum=("client_credentials", "password"),
    ),
    ExtraField(
        "username",
        "Username",
        "Resource owner's user name, for the password grant.",
        "string",
    ),
    ExtraField(
        "password",
        "User password",
        "Resource owner's password, for the password grant. Masked in logs.",
        "string",
        secret=True,
    ),
    # Resilience: the retry policy (deyel_provider.http.retry), refused-credential memory, response size cap.
    ExtraField(
        "retry_attempts",
        "Retry attempts",
        "Attempts in all for a call that fails transiently (429, 502-504, dropped connection...); "
        "1 = no retry.",
        "integer",
        5,
        minimum=1,
        maximum=100,
    ),
    ExtraField(
        "retry_backoff",
        "Retry backoff (s)",
        "Base of the exponential backoff with full jitter: the n-th retry waits up to backoff * 2^(n-1) s.",
        "number",
        1,
        maximum=3600,
    ),
    ExtraField(
        "retry_max_backoff",
        "Retry max backoff (s)",
        "Ceiling of one backoff wait.",
        "number",
        30,
        maximum=3600,
    ),
    ExtraField(
        "retry_after_max",
        "Retry-After cap (s)",
        "Longest wait honoured when the server sends Retry-After (in seconds or as an HTTP date).",
        "number",
        120,
        maximum=86400,
    ),
    ExtraField(
        "auth_failure_ttl",
        "Refused credentials memory (s)",
        "After the token endpoint refuses the credentials, fail at once without asking it again for "
        "this many seconds (0 turns it off).",
        "number",
        60,
        maximum=86400,
    ),
    ExtraField(
        "max_response_bytes",
        "Max response size (bytes)",
        "Largest response body read into memory (decoded); a larger one fails with DeyelBadResponseError. "
        "Parsed JSON takes about 26 times its size: the 16 MiB default allows about 420 MiB per page held, "
        "times (max_workers + 1) pages in flight during an extraction.",
        "integer",
        16 * 1024 * 1024,
        minimum=1,
        maximum=2**40,
    ),
    # Paging of the instances collection (extractions); not documented by Deyel: every name is an assumption.
    ExtraField(
        "paging",
        "Paging strategy",
        "How the instances collection pages: page (page number + page size, the assumed default), "
        "offset (offset + limit), link (follow the next link of the Link header) or none (one response).",
        "string",
        "page",
        enum=("page", "offset", "link", "none"),
    ),
    ExtraField(
        "page_size",
        "Page size",
        "Instances requested per page (assumed server cap: 1000); operators can override it.",
        "integer",
        100,
        minimum=1,
        below_minimum="a page of 0 instances reads nothing",
        maximum=10**6,
    ),
    ExtraField(
        "page_param", "Page parameter", "Query parameter of the 1-based page number.", "string", "page"
    ),
    ExtraField(
        "page_size_param",
        "Page size parameter",
        "Query parameter of the page size (page and link paging).",
        "string",
        "pageSize",
    ),
    ExtraField(
        "offset_param", "Offset parameter", "Query parameter of the 0-based offset.", "string", "offset"
    ),
    ExtraField(
        "limit_param",
        "Limit parameter",
        "Query parameter of the page size (offset paging).",
        "string",
        "limit",
    ),
    ExtraField(
        "total_header",
        "Total count header",
        "Response header with the number of matching instances: it proves a slice whole. none: the "
        "server sends none, or one that does not count the search.",
        "string",
        "X-Total-Count",
    ),
    # The server's clock, as extractions and the change trigger trust it (settle margin, clock bound).
    ExtraField(
        "settle_seconds",
        "Settle margin (s)",
        "How long after its dtLastUpdate stamp a change is surely visible in listings and the server's Date "
        "header is trusted: incremental windows end this long before the server's present, and a window "
        "ending later is waited for. Covers a Date header ahead of the stamping clock plus the commit lag.",
        "number",
        10,
        maximum=3600,
    ),
    ExtraField(
        "max_clock_skew_seconds",
        "Max server clock skew (s)",
        "A server Date header further than this from the worker's clock is not trusted to end a window, "
        "move a watermark or the change trigger (a typed error, or a skipped poll).",
        "number",
        300,
        above=True,
        maximum=10**8,
    ),
    # Keys and literals Deyel does not document (issue 20): every one a setting; deyel-probe finds them.
    ExtraField(
        "id_field",
        "Instance id key",
        "Key holding an instance's id in listings (assumed: idObjectValue). links: the server sends the id "
        "only in the instance's self link; the id is the last segment of its href.",
        "string",
        "idObjectValue",
    ),
    ExtraField(
        "date_literal",
        "Date literal in search",
        "How dates are written in search values: epoch_ms (milliseconds since the epoch, assumed) or iso "
        "(ISO 8601 in UTC, e.g. 2026-01-01T00:00:00.000Z).",
        "string",
        "epoch_ms",
        enum=("epoch_ms", "iso"),
    ),
    ExtraField(
        "in_separator",
        "Separator of in values",
        "Separator of the values of the search operator in (assumed: ;): the write-back's key search.",
        "string",
        ";",
    ),
    # The Test button and the extras themselves (issue 27).
    ExtraField(
        "test_form",
        "Test button's form",
        "A form this client may read (e.g. CRM_ACCOUNT): the Test button reads one instance of it through "
        "the API prefix, as tasks will. Empty: the docs' example form CRM_ACCOUNT, where a 404 naming the "
        "form still proves the prefix.",
        "string",
    ),
    ExtraField(
        "strict_extras",
        "Refuse unknown extras",
        "An unknown extra key (a typo such as page_sise) is an error instead of a warning.",
        "boolean",
        False,
    ),
)

#: Options most connections leave alone: the form groups them under the "Advanced" heading.
_ADVANCED = frozenset(
    {
        "request_deadline",
        "allow_insecure_http",
        "refresh_margin",
        "cache_dir",
        "cache_lock_lease",
        "retry_attempts",
        "retry_backoff",
        "retry_max_backoff",
        "retry_after_max",
        "auth_failure_ttl",
        "max_response_bytes",
        "page_param",
        "page_size_param",
        "offset_param",
        "limit_param",
        "total_header",
        "settle_seconds",
        "max_clock_skew_seconds",
        "date_literal",
        "in_separator",
        "strict_extras",
    }
)
EXTRA_FIELDS = tuple(replace(spec, advanced=spec.name in _ADVANCED) for spec in EXTRA_FIELDS)

#: API prefixes common in Deyel deployments (context roots): the Test button tries them after a 404 to name
#: the fix; ``deyel-probe`` tries the same and more.
API_PREFIX_CANDIDATES: tuple[str, ...] = (
    "",
    "/api",
    "/rest",
    "/DeyelWeb/api",
    "/DeyelWeb/rest",
    "/deyel/api",
    "/api/v1",
)

#: Older spellings, still read. Airflow hides the value of any extra whose name holds "token" (the UI form
#: shows and saves "***", and task logs mask every occurrence of the value), so the declared names avoid it.
#: Each option's default, for the code that also runs without a connection (Paging(), RetryPolicy()).
DEFAULTS: dict[str, Any] = {spec.name: spec.default for spec in EXTRA_FIELDS}

ALIASES: dict[str, str] = {
    "token_path": "oauth_path",
    "token_cache": "cache",
    "token_cache_dir": "cache_dir",
    "token_cache_url": "cache_url",
    "token_cache_conn_id": "cache_conn_id",
    "token_cache_lock_lease": "cache_lock_lease",
}

_LOCK_WAIT_RETIRED = (
    "a process now waits for another's token renewal while that renewal's holder is alive, up to the budget "
    "of one renewal derived from the retry_* extras and timeout (see docs/tokens.md)"
)

#: Options no longer read, and why: a warning names them, their value is ignored.
RETIRED: dict[str, str] = {
    "cache_lock_wait": _LOCK_WAIT_RETIRED,
    "token_cache_lock_wait": _LOCK_WAIT_RETIRED,
}
