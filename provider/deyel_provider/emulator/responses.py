"""Response helpers: JSON serialised straight to bytes, and the Deyel error shapes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from deyel_provider.emulator.faults import errors_body
from deyel_provider.emulator.settings import EmulatorSettings


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # json.dumps straight into the body: FastAPI's jsonable_encoder is far too slow for pages of 1000 records.
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(content=body, status_code=status, headers=headers, media_type="application/json")


def errors_response(
    status: int, message: str, attribute: str = "", headers: Mapping[str, str] | None = None
) -> Response:
    return json_response(errors_body(message, attribute), status, headers)


def unauthorized_response(settings: EmulatorSettings) -> Response:
    if settings.unauthorized_style == "errorCode":
        return json_response({"errorCode": "UNAUTHORIZED", "message": "Unauthorized"}, 401)
    return errors_response(401, "Unauthorized")


def oauth_error(status: int, description: str) -> Response:
    # Key order and the capital I follow the documented example byte for byte.
    return json_response({"error_description": description, "error": "Invalid_request"}, status, _NO_STORE)


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def token_response(content: dict[str, Any]) -> Response:
    return json_response(content, 200, _NO_STORE)
