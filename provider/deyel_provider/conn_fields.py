"""The ``deyel`` connection's extra fields: the single source of truth for the form, the docs and the parser.

Kept free of Airflow imports: Airflow calls ``get_provider_info()`` while it is itself being imported.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    def conn_field(self) -> dict[str, Any]:
        """The ``conn-fields`` entry Airflow 3 renders in the connection form."""
        schema: dict[str, Any] = {"type": [self.type, "null"]}
        if self.default is not None:
            schema["default"] = self.default
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.secret:
            schema["format"] = "password"
        return {"label": self.label, "description": self.description, "schema": schema}


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
        "refresh_margin",
        "Token refresh margin (s)",
        "Renew a token this many seconds before it expires (never more than half its lifetime).",
        "number",
        300,
    ),
)
