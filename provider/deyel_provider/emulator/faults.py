"""Fault injection: rules that turn chosen requests into errors, delays, broken or dropped responses.

Rules are deterministic: each has its own seeded RNG and counters, so the same rules and the same request
sequence inject the same faults.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

#: Actions that let the request through to the routes (so a write is applied), then lose the answer: a gateway
#: that times out after the server committed (``apply_status``, 504 unless ``status`` says otherwise), or a
#: connection that breaks once the work is done (``apply_drop``): a replayed write meets its first attempt.
APPLY_ACTIONS = frozenset({"apply_status", "apply_drop"})
#: ``edit``: another user saves the instance the request names (its ``body``, an object, merged in) just
#: before the request is served: an update carrying the dtLastUpdate read before meets a 409.
ACTIONS = frozenset(
    {"status", "delay", "drop", "truncate", "html", "malformed", "revoke", "expire", "echo", "edit"}
    | APPLY_ACTIONS
)
ROUTES = frozenset({"token", "data", "*"})

REQUEST_LIMIT_BODY = {
    "errors": [{"message": "REQUEST_LIMIT_EXCEEDED", "attribute-name": ""}],
    "errorCode": "REQUEST_LIMIT_EXCEEDED",
}


def errors_body(message: str, attribute: str = "") -> dict[str, Any]:
    return {"errors": [{"message": message, "attribute-name": attribute}]}


@dataclass
class FaultRule:
    action: str
    route: str = "*"
    method: str | None = None
    path_contains: str | None = None
    status: int | None = None
    retry_after: int | str | None = None
    body: Any = None
    raw_body: str | bytes | None = None
    headers: dict[str, str] | None = None
    delay_ms: float = 0
    probability: float = 1.0
    after: int = 0
    count: int | None = None
    seed: int = 0
    # Runtime state.
    seen: int = field(default=0, repr=False)
    applied: int = field(default=0, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_dict(cls, raw: Any) -> FaultRule:
        if not isinstance(raw, dict):
            raise ValueError("each fault rule must be a JSON object")
        known = {
            "action", "route", "method", "path_contains", "status", "retry_after", "body", "raw_body",
            "headers", "delay_ms", "probability", "after", "count", "seed",
        }  # fmt: skip
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown fault rule keys: {sorted(unknown)}")
        rule = cls(**raw)
        if rule.action not in ACTIONS:
            raise ValueError(f"action must be one of {sorted(ACTIONS)}")
        if rule.route not in ROUTES:
            raise ValueError(f"route must be one of {sorted(ROUTES)}")
        if not 0 <= float(rule.probability) <= 1:
            raise ValueError("probability must be between 0 and 1")
        if rule.status is not None and not 100 <= int(rule.status) <= 599:
            raise ValueError("status must be an HTTP status code")
        if int(rule.after) < 0 or (rule.count is not None and int(rule.count) < 0):
            raise ValueError("after and count must be >= 0")
        if rule.raw_body is not None and not isinstance(rule.raw_body, (str, bytes)):
            raise ValueError("raw_body must be a string or bytes")
        if rule.headers is not None and not (
            isinstance(rule.headers, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in rule.headers.items())
        ):
            raise ValueError("headers must be an object of strings")
        rule.method = rule.method.upper() if rule.method else None
        rule.rng = random.Random(rule.seed)
        return rule

    def _matches(self, route: str, method: str, path: str) -> bool:
        return (
            (self.route == "*" or self.route == route)
            and (self.method is None or self.method == method)
            and (self.path_contains is None or self.path_contains in path)
        )

    def fires(self, route: str, method: str, path: str) -> bool:
        if not self._matches(route, method, path):
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        if self.count is not None and self.applied >= self.count:
            return False
        # Draw only for eligible requests, so the sequence depends on nothing but the matching requests.
        if self.probability < 1 and self.rng.random() >= self.probability:
            return False
        self.applied += 1
        return True


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def set_rules(self, rules: list[Any]) -> None:
        parsed = [FaultRule.from_dict(raw) for raw in rules]
        with self._lock:
            self._rules = parsed

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"action": r.action, "route": r.route, "seen": r.seen, "applied": r.applied}
                for r in self._rules
            ]

    def choose(self, route: str, method: str, path: str) -> tuple[list[FaultRule], FaultRule | None]:
        """The delay rules that fire, then the first other rule that fires (which ends the evaluation)."""
        delays: list[FaultRule] = []
        with self._lock:
            for rule in self._rules:
                if rule.fires(route, method, path):
                    if rule.action != "delay":
                        return delays, rule
                    delays.append(rule)
        return delays, None


def status_response(rule: FaultRule) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The rule's status with its body: ``raw_body`` as is, else ``body`` as JSON, else a Deyel error body.

    ``headers`` are added as given (they replace the default content type), e.g. a ``Location`` for a
    redirect or odd headers for property-based tests.
    """
    status = int(rule.status or (504 if rule.action == "apply_status" else 503))
    headers = [(b"content-type", b"application/json")]
    if rule.retry_after is not None:
        headers.append((b"retry-after", str(rule.retry_after).encode("latin-1")))
    if rule.headers:
        given = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in rule.headers.items()]
        names = {name for name, _ in given}
        headers = [h for h in headers if h[0] not in names] + given
    if rule.raw_body is not None:
        raw = rule.raw_body.encode() if isinstance(rule.raw_body, str) else rule.raw_body
        return status, headers, raw
    if rule.body is not None:
        body = rule.body
    elif status == 403:
        body = REQUEST_LIMIT_BODY
    else:
        body = errors_body(_phrase(status))
    return status, headers, json.dumps(body).encode()


def html_response(rule: FaultRule) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status = int(rule.status or 200)
    phrase = _phrase(status)
    # What a reverse proxy or a servlet container error page looks like to a JSON client.
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {phrase}</title></head>"
        f"<body><h1>{status} {phrase}</h1><p>The server encountered a problem. Please try again later.</p>"
        "<hr><address>Apache Tomcat</address></body></html>\n"
    )
    headers = [(b"content-type", b"text/html; charset=utf-8")]
    if rule.retry_after is not None:
        headers.append((b"retry-after", str(rule.retry_after).encode("latin-1")))
    return status, headers, page.encode()


MALFORMED_BODY = b'{"errors": [{"message": "Internal error", "attribute-name": '


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def echo_response(
    rule: FaultRule, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A debug error page that prints the request back, headers and body included (as some servlet
    containers and proxies do): the client's credentials come back in the answer. ``body: "json"`` puts
    the echo in a Deyel ``errors`` message instead of an HTML page."""
    status = int(rule.status or 500)
    lines = [f"{method} {path}"] + [f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in headers]
    text = "\n".join(lines) + "\n\n" + body.decode("latin-1")
    if rule.body == "json":
        return status, [(b"content-type", b"application/json")], json.dumps(errors_body(text)).encode()
    page = f"<html><body><h1>{status} {_phrase(status)}</h1><pre>{text}</pre></body></html>"
    return status, [(b"content-type", b"text/html")], page.encode("latin-1", "replace")


class Holds:
    """The waits of delay rules, ended at once when the emulator stops.

    Held to its end, a request kept uvicorn's shutdown waiting (``timeout_graceful_shutdown``, 5 s), which
    then cancelled it and logged the cancellation as an application error with a traceback. A released
    request is answered 503 (the server is going away), like a server that drains before it stops.
    """

    def __init__(self) -> None:
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._released: asyncio.Event | None = None

    def open(self) -> None:
        """The emulator (re)starts: delays hold again (a new server loop is learnt at the first)."""
        self._stopping, self._loop, self._released = False, None, None

    async def wait(self, seconds: float) -> bool:
        """Wait ``seconds``; False if the emulator stopped meanwhile (or had stopped)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._released is None:
            self._loop, self._released = loop, asyncio.Event()
        # Read after the event is published: a release() that ran before this line is seen here, one after
        # it finds the event (release sets the flag first, then reads the event).
        if self._stopping:
            return False
        try:
            await asyncio.wait_for(self._released.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def release(self) -> None:
        """End every hold, now and until :meth:`open`; callable from any thread."""
        self._stopping = True
        loop, released = self._loop, self._released
        if loop is None or released is None:
            return
        try:
            loop.call_soon_threadsafe(released.set)
        except RuntimeError:
            pass  # the loop has closed: nothing is held
