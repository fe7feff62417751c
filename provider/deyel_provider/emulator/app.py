"""The emulator's ASGI application."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from deyel_provider.emulator.control_routes import register_control_routes
from deyel_provider.emulator.data_routes import register_data_routes
from deyel_provider.emulator.middleware import DROP_FILTER, EmulatorMiddleware
from deyel_provider.emulator.responses import errors_response
from deyel_provider.emulator.settings import EmulatorSettings
from deyel_provider.emulator.state import EmulatorState
from deyel_provider.emulator.token_routes import register_token_routes

logger = logging.getLogger(__name__)


def create_app(settings: EmulatorSettings | None = None, *, control_token: str | None = None) -> FastAPI:
    """Build a fresh emulator (its own tokens, data and counters; the process's signing key, see
    ``tokens._signing_key``); ``app.state.emulator`` holds it.

    :param control_token: what the control routes require in the ``X-Emulator-Token`` header (None: nothing).
    """
    settings = settings or EmulatorSettings()
    state = EmulatorState(settings, control_token)
    # No OpenAPI or docs routes: Deyel serves none, and unknown paths must answer 404.
    app = FastAPI(
        title="Deyel emulator", openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False
    )
    app.state.emulator = state

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return errors_response(exc.status_code, str(exc.detail), headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.exception("Emulator error on %s %s", request.method, request.url.path)
        return errors_response(500, "Internal server error")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, server_error)

    register_token_routes(app, state)
    register_data_routes(app, state)
    register_control_routes(app, state)
    app.add_middleware(EmulatorMiddleware, state=state)
    logging.getLogger("uvicorn.error").addFilter(DROP_FILTER)
    return app
