"""The documented token endpoint: POST {token_path}, grants client_credentials, password and refresh_token."""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from deyel_provider.emulator.faults import errors_body
from deyel_provider.emulator.responses import json_response, oauth_error, token_response
from deyel_provider.emulator.state import EmulatorState

GRANTS = ("client_credentials", "password", "refresh_token")


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    """The client id and secret from the Basic header, else from the form body [ASSUMED]."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        client_id, sep, secret = decoded.partition(":")
        return client_id, secret if sep else None
    return form.get("client_id"), form.get("client_secret")


def register_token_routes(app: FastAPI, state: EmulatorState) -> None:
    settings = state.settings
    stats = state.stats

    def fail(response: Response) -> Response:
        stats.incr("token_failures")
        return response

    async def issue(sub: str, grant_type: str, refresh_token: str | None = None) -> Response:
        # Signing costs about a millisecond of CPU: keep it off the event loop.
        issued = await run_in_threadpool(state.tokens.issue, sub, grant_type)
        stats.incr("tokens_issued")
        body: dict[str, object] = {"access_token": issued.token, "token_type": "Bearer"}
        body["expires_in"] = settings.token_ttl
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        return token_response(body)

    @app.post(settings.token_path, include_in_schema=False)
    async def token(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        raw = await request.body()
        # An empty body has no type to get wrong: it is a request without a grant_type.
        if content_type != "application/x-www-form-urlencoded" and (raw or content_type):
            return fail(
                oauth_error(
                    settings.bad_grant_status, "Content-Type must be application/x-www-form-urlencoded"
                )
            )
        try:
            form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return fail(oauth_error(settings.bad_grant_status, "Malformed request body"))
        grant_type = form.get("grant_type", "")
        if not grant_type:
            return fail(oauth_error(settings.bad_grant_status, "Missing grant_type"))
        if grant_type not in GRANTS:
            return fail(oauth_error(settings.bad_grant_status, "Unsupported grant_type"))
        client_id, secret = _client_credentials(request, form)

        if grant_type == "refresh_token":
            # The docs only say the client id goes in the Basic header: accept "id:" and "id:secret" [ASSUMED]
            grant = state.tokens.refresh_grant(form.get("refresh_token", ""))
            client_ok = _same(client_id, settings.client_id) and (
                not secret or _same(secret, settings.client_secret)
            )
            if grant is None or not client_ok or grant.client_id != client_id:
                body = errors_body("Unauthorized")
                body["errors"].append(
                    {"message": "Invalid refresh token.", "attribute-name": "refresh_token"}
                )
                return fail(json_response(body, settings.token_error_status))
            return await issue(grant.username, "refresh_token", form["refresh_token"])

        if not (_same(client_id, settings.client_id) and _same(secret, settings.client_secret)):
            return fail(oauth_error(settings.token_error_status, "Invalid client_id"))
        if grant_type == "client_credentials":
            return await issue(settings.client_id, grant_type)
        username, password = form.get("username", ""), form.get("password")
        expected = settings.users.get(username)
        if expected is None or not _same(password, expected):
            return fail(oauth_error(settings.token_error_status, "Invalid username or password"))
        refresh = state.tokens.new_refresh_token(settings.client_id, username)
        return await issue(username, grant_type, refresh)
