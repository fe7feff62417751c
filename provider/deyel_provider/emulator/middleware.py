"""ASGI middleware in front of the emulator's routes: counting, fault injection, rate limiting and latency.

It works at the ASGI level because some faults (a dropped connection, a truncated body) cannot be expressed
as an ordinary response object.
"""

from __future__ import annotations

import asyncio
import email.utils
import hmac
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deyel_provider.emulator.faults import (
    APPLY_ACTIONS,
    MALFORMED_BODY,
    REQUEST_LIMIT_BODY,
    FaultRule,
    echo_response,
    errors_body,
    html_response,
    status_response,
)
from deyel_provider.emulator.state import EmulatorState

CONTROL_PREFIX = "/_emulator"
#: The header that carries the control token (see :attr:`EmulatorState.control_token`).
CONTROL_TOKEN_HEADER = "X-Emulator-Token"
_CONTROL_REFUSED = json.dumps(
    errors_body(f"The control routes need the {CONTROL_TOKEN_HEADER} header of this emulator", "")
).encode()
_URI_TOO_LONG = json.dumps(
    errors_body("URI Too Long: shorten the query (fewer search values)", "search")
).encode()
#: A request held by a delay rule when the emulator stops (``Holds``).
_STOPPING = json.dumps(errors_body("Service Unavailable: the emulator is stopping", "")).encode()
_DROP_MESSAGE = "ASGI callable returned without completing response."


class _DropFilter(logging.Filter):
    """Hide uvicorn's error line for connections that the drop fault cuts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _DROP_MESSAGE


DROP_FILTER = _DropFilter()


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


async def _send_whole(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Send a whole response; with a ``transfer-encoding`` header, in chunks of unannounced total length."""
    if any(name == b"transfer-encoding" for name, _ in headers):
        # The server frames it (chunked) when no length is given: the client cannot size it in advance.
        headers = [(k, v) for k, v in headers if k not in (b"transfer-encoding", b"content-length")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for start in range(0, len(body), 16384):
            await send({"type": "http.response.body", "body": body[start : start + 16384], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    headers = [(k, v) for k, v in headers if k != b"content-length"]
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class EmulatorMiddleware:
    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    def _route_kind(self, path: str) -> str:
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            return "control"
        if path == self.state.settings.token_path:
            return "token"
        # Anything else a client calls is an API request, including paths that turn out not to exist.
        return "data"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._dated(send)
        kind = self._route_kind(scope["path"])
        if kind == "control":
            if not self._control_allowed(scope):
                # Nothing else is said: /_emulator/settings would hand out the client secret.
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"EmulatorToken")]
                await _send_whole(send, 401, headers, _CONTROL_REFUSED)
                return
            await self.app(scope, receive, send)
            return
        if kind == "token":
            await self._handle(kind, scope, receive, send)
            return
        self.state.stats.enter()
        try:
            await self._handle(kind, scope, receive, send)
        finally:
            self.state.stats.leave()

    def _control_allowed(self, scope: Scope) -> bool:
        """Without a control token (an emulator on loopback) every client may; with one, only a request
        that presents it."""
        expected = self.state.control_token
        if expected is None:
            return True
        wanted = CONTROL_TOKEN_HEADER.lower().encode()
        given = next((value for name, value in scope.get("headers", ()) if name == wanted), b"")
        return hmac.compare_digest(given, expected.encode())

    async def _handle(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        method = scope["method"]
        raw_send = send
        if kind == "token":
            if method == "POST":
                state.stats.incr("token_requests")
        else:
            state.stats.incr("api_requests")
            state.stats.record_method(method)
            send = self._counting(send)

        if kind == "data" and self._too_long(scope):
            await _send_whole(send, 414, [(b"content-type", b"application/json")], _URI_TOO_LONG)
            return

        delays, rule = state.faults.choose(kind, method, scope["path"])
        for delay in delays:
            state.stats.incr("faults_injected")
            if not await state.holds.wait(float(delay.delay_ms) / 1000):
                await _send_whole(send, 503, [(b"content-type", b"application/json")], _STOPPING)
                return
        if rule is not None:
            state.stats.incr("faults_injected")
            if rule.action == "drop":
                # Sent unwrapped: a dropped response has no status for the counters.
                await self._drop(raw_send)
                return
            if rule.action in APPLY_ACTIONS:
                await self._apply_then_lose(rule, scope, receive, send, raw_send)
                return
            if await self._apply_fault(rule, scope, receive, send):
                return

        if kind == "data":
            if not state.limiter.allow():
                state.stats.incr("rate_limited")
                await self._rate_limited(send)
                return
            if state.settings.latency_ms > 0:
                # An await, not a sleep in the endpoint, so concurrent clients overlap their waits.
                await asyncio.sleep(state.settings.latency_ms / 1000)
        await self.app(scope, receive, send)

    def _too_long(self, scope: Scope) -> bool:
        limit = self.state.settings.max_url_length
        if limit is None:
            return False
        target = scope.get("raw_path") or scope["path"].encode("latin-1", "replace")
        query = scope.get("query_string", b"")
        return len(target) + (len(query) + 1 if query else 0) > limit

    def _dated(self, send: Send) -> Send:
        offset = self.state.settings.date_offset_ms / 1000

        async def dated_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                now = self.state.clock.now() + offset
                date = email.utils.formatdate(now, usegmt=True).encode("latin-1")
                message = {**message, "headers": [*message.get("headers", []), (b"date", date)]}
            await send(message)

        return dated_send

    def _counting(self, send: Send) -> Send:
        stats = self.state.stats

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                stats.record_status(message["status"])
            await send(message)

        return counting_send

    async def _rate_limited(self, send: Send) -> None:
        settings = self.state.settings
        headers = [(b"content-type", b"application/json")]
        if settings.rate_limit_status == 429:
            headers.append((b"retry-after", str(settings.rate_retry_after).encode()))
            body: dict[str, Any] = errors_body("REQUEST_LIMIT_EXCEEDED")
            body["errorCode"] = "REQUEST_LIMIT_EXCEEDED"
        else:
            body = REQUEST_LIMIT_BODY
        await _send_whole(send, settings.rate_limit_status, headers, json.dumps(body).encode())

    async def _apply_fault(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request as the rule says; False when the request should then proceed normally."""
        action = rule.action
        if action == "status":
            await _send_whole(send, *status_response(rule))
        elif action == "html":
            await _send_whole(send, *html_response(rule))
        elif action == "malformed":
            await _send_whole(
                send, int(rule.status or 200), [(b"content-type", b"application/json")], MALFORMED_BODY
            )
        elif action == "truncate":
            await self._truncate(scope, receive, send)
        elif action == "echo":
            body = bytearray()
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            echoed = echo_response(
                rule, scope["method"], scope["path"], scope.get("headers", []), bytes(body)
            )
            await _send_whole(send, *echoed)
        elif action == "edit":
            self._edit_target(rule, scope["path"])
            return False
        elif action in ("revoke", "expire"):
            token = bearer_token(scope)
            if token is not None:
                if action == "revoke":
                    self.state.tokens.revoke(token)
                else:
                    self.state.tokens.expire(token)
            return False
        return True

    def _edit_target(self, rule: FaultRule, path: str) -> None:
        """Another user saves the instance the request names, just before the request is served."""
        prefix = self.state.settings.api_prefix + "/forms/"
        form, _, rest = path.removeprefix(prefix).partition("/instances/")
        if not path.startswith(prefix) or not rest.strip("/").isdigit():
            return
        values = rule.body if isinstance(rule.body, dict) else None
        self.state.store.touch(form, int(rest.strip("/")), values)

    async def _apply_then_lose(
        self, rule: FaultRule, scope: Scope, receive: Receive, send: Send, raw_send: Send
    ) -> None:
        """Run the request through the routes (a write is applied), then answer as if the answer was lost."""

        async def discard(message: Message) -> None:
            return None

        await self.app(scope, receive, discard)
        if rule.delay_ms:
            # The answer is late as well as lost: a client killed meanwhile never learns of the write.
            await self.state.holds.wait(float(rule.delay_ms) / 1000)
        if rule.action == "apply_drop":
            await self._drop(raw_send)
        else:
            await _send_whole(send, *status_response(rule))

    async def _drop(self, send: Send) -> None:
        # Promise more bytes than are sent, then return: uvicorn closes the connection mid-body, which the
        # client sees as a broken connection rather than a server error response.
        partial = b'[{"idObjectValue": "1", "dsCompany": '
        headers = [(b"content-type", b"application/json"), (b"content-length", b"65536")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": partial, "more_body": True})

    async def _truncate(self, scope: Scope, receive: Receive, send: Send) -> None:
        captured: dict[str, Any] = {"status": 200, "headers": [], "body": bytearray()}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                captured["body"].extend(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = bytes(captured["body"])
        status = captured["status"] if 200 <= captured["status"] < 300 else 200
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != b"content-length"]
        await _send_whole(send, status, headers, body[: len(body) // 2])
