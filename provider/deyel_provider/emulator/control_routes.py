"""Control and observability routes under /_emulator/, not counted as API requests. They need no Deyel token;
an emulator that may be reached from other hosts requires its control token (the middleware checks it)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from deyel_provider.emulator.middleware import CONTROL_PREFIX
from deyel_provider.emulator.responses import errors_response, json_response
from deyel_provider.emulator.state import EmulatorState


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    return json.loads(raw) if raw.strip() else {}


def register_control_routes(app: FastAPI, state: EmulatorState) -> None:
    @app.get(CONTROL_PREFIX + "/stats", include_in_schema=False)
    async def stats() -> Response:
        return json_response(state.stats_snapshot())

    @app.get(CONTROL_PREFIX + "/stats/methods", include_in_schema=False)
    async def methods() -> Response:
        return json_response(state.stats.methods())

    @app.post(CONTROL_PREFIX + "/reset", include_in_schema=False)
    async def reset() -> Response:
        state.stats.reset()
        return json_response(state.stats_snapshot())

    @app.post(CONTROL_PREFIX + "/revoke", include_in_schema=False)
    async def revoke(request: Request) -> Response:
        try:
            body = await _json_body(request)
        except ValueError:
            return errors_response(400, "The body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("token"), (str, type(None))):
            return errors_response(400, 'Expected {"token": "<token>"} or {}', "token")
        return json_response({"revoked": state.tokens.revoke(body.get("token"))})

    @app.get(CONTROL_PREFIX + "/tokens", include_in_schema=False)
    async def tokens() -> Response:
        return json_response(state.issued_tokens())

    @app.get(CONTROL_PREFIX + "/faults", include_in_schema=False)
    async def list_faults() -> Response:
        return json_response({"rules": state.faults.rules()})

    @app.post(CONTROL_PREFIX + "/faults", include_in_schema=False)
    async def set_faults(request: Request) -> Response:
        try:
            body = await _json_body(request)
            rules = body.get("rules") if isinstance(body, dict) else None
            if not isinstance(rules, list):
                raise ValueError('expected {"rules": [...]}')
            state.faults.set_rules(rules)
        except (ValueError, TypeError) as exc:
            return errors_response(400, f"Invalid fault rules: {exc}", "rules")
        return json_response({"rules": state.faults.rules()})

    @app.delete(CONTROL_PREFIX + "/faults", include_in_schema=False)
    async def clear_faults() -> Response:
        state.faults.clear()
        return json_response({"rules": []})

    @app.get(CONTROL_PREFIX + "/mutations", include_in_schema=False)
    async def mutations() -> Response:
        return json_response({"mutations": state.writer.log()})

    @app.get(CONTROL_PREFIX + "/settings", include_in_schema=False)
    async def settings() -> Response:
        return json_response(dataclasses.asdict(state.settings))
