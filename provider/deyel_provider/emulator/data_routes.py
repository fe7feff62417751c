"""The form-instance routes: list (search, paging), read, create, replace, patch, delete."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import Response

from deyel_provider.emulator.forms import write_errors
from deyel_provider.emulator.paging import (
    PagingError,
    Window,
    encode_cursor,
    hidden_after_paging,
    parse_window,
)
from deyel_provider.emulator.records import stamp_in_unit
from deyel_provider.emulator.responses import errors_response, json_response, unauthorized_response
from deyel_provider.emulator.search import Search, SearchError, parse_search
from deyel_provider.emulator.state import EmulatorState
from deyel_provider.emulator.store import UpdateResult


def _instance_id(raw: str) -> int | None:
    # Ids are the decimal strings the server issued; anything else names no instance.
    if not raw.isdigit() or raw.startswith("0") or len(raw) > 18:
        return None
    return int(raw)


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


def register_data_routes(app: FastAPI, state: EmulatorState) -> None:
    settings = state.settings
    store = state.store
    prefix = settings.api_prefix
    collection = prefix + "/forms/{form}/instances"
    item = collection + "/{instance_id}"

    def authorized(request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token.strip()) and state.tokens.check(token.strip())

    def form_missing(form: str) -> Response:
        return errors_response(404, f"Form '{form}' not found", "form")

    def instance_missing(form: str, raw_id: str) -> Response:
        return errors_response(404, f"Instance '{raw_id}' of form '{form}' not found", settings.id_key)

    def shown(instance_id: int, values: dict[str, Any], href: str) -> dict[str, Any]:
        """An instance as this server sends it: its id under ``id_key`` (or only in its self link), and
        dtLastUpdate in ``updated_unit``."""
        body: dict[str, Any] = {} if settings.id_in_links_only else {settings.id_key: str(instance_id)}
        body.update(values)
        if "dtLastUpdate" in values:
            body["dtLastUpdate"] = stamp_in_unit(values["dtLastUpdate"], settings.updated_unit)
        body["links"] = [{"rel": "self", "href": href}]
        return body

    async def json_object(request: Request) -> dict[str, Any] | Response:
        if not _is_json(request):
            return errors_response(415, "Unsupported Media Type: the body must be application/json")
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return errors_response(400, "The body is not valid JSON")
        if not isinstance(body, dict):
            return errors_response(400, "The body must be a JSON object of field values")
        return body

    def refused(form: str, values: dict[str, Any], *, whole: bool) -> Response | None:
        """400 with one Deyel error per field when the form cannot store ``values``."""
        if not settings.validate_writes:
            return None
        errors = write_errors(form, values, whole=whole, v80=settings.version == "8.0")
        return json_response({"errors": errors}, 400) if errors else None

    def render_page(
        request_url: str, base: str, form: str, search: Search, search_text: str, window: Window
    ) -> Response:
        listing = store.select(form, search, search_text)
        ids: Sequence[int] = listing.ids
        if settings.unstable_order:
            ids = random.sample(list(ids), len(ids))
        start, stop = window.bounds(ids, listing.key)
        page_ids = ids[start:stop]
        if settings.drop_after_paging:
            # Permissions checked per page, after paging: the page comes out shorter than asked.
            page_ids = [i for i in page_ids if not hidden_after_paging(settings, i)]
        href = f"{base}{prefix}/forms/{quote(form, safe='')}/instances/"
        body = [shown(i, values, f"{href}{i}") for i, values in store.get_many(form, page_ids)]
        headers: dict[str, str] = {}
        if settings.paging != "none" and settings.send_total:
            counted = store.select(form, Search(clauses=()), "").ids if settings.total_ignores_search else ids
            total = len(page_ids) if settings.total_counts_page else len(counted)  # before drop_after_paging
            headers[settings.total_header] = str(total)
        if settings.paging == "link" and stop < len(ids) and stop > start:
            last_key = listing.key(ids[stop - 1])
            headers["Link"] = f'<{next_url(request_url, window, last_key)}>; rel="next"'
        return json_response(body, 200, headers)

    def next_url(request_url: str, window: Window, last_key: Any) -> str:
        url = URL(request_url).remove_query_params(settings.page_param)
        url = url.include_query_params(
            **{settings.page_size_param: window.size, settings.cursor_param: encode_cursor(last_key)}
        )
        if settings.link_style == "path":
            return f"{url.path}?{url.query}"
        if settings.link_style == "relative":
            return f"{url.path.rsplit('/', 1)[-1]}?{url.query}"
        return str(url)

    async def list_instances(request: Request) -> Response:
        if not authorized(request):
            return unauthorized_response(settings)
        form = request.path_params["form"]
        if not store.exists(form):
            return form_missing(form)
        search_text = "" if settings.ignore_search else request.query_params.get("search", "")
        try:
            search = parse_search(
                search_text,
                in_separator=settings.in_separator,
                date_format=settings.date_format,
                known_fields=store.known_fields(form),
                updated_unit=settings.updated_unit,
            )
            window = parse_window(settings, request.query_params)
        except SearchError as exc:
            return errors_response(400, str(exc), "search")
        except PagingError as exc:
            return errors_response(400, str(exc), exc.attribute)
        state.writer.before_listing()
        base = str(request.base_url).rstrip("/")
        # Building a page (or a first scan of a search) is CPU work: keep the event loop free for others.
        return await run_in_threadpool(render_page, str(request.url), base, form, search, search_text, window)

    async def get_instance(request: Request) -> Response:
        if not authorized(request):
            return unauthorized_response(settings)
        form, raw_id = request.path_params["form"], request.path_params["instance_id"]
        if not store.exists(form):
            return form_missing(form)
        instance_id = _instance_id(raw_id)
        values = None if instance_id is None else store.get(form, instance_id)
        if values is None or instance_id is None:
            return instance_missing(form, raw_id)
        base = str(request.base_url).rstrip("/")
        href = f"{base}{prefix}/forms/{quote(form, safe='')}/instances/{instance_id}"
        return json_response(shown(instance_id, values, href))

    async def create_instance(request: Request) -> Response:
        if not authorized(request):
            return unauthorized_response(settings)
        form = request.path_params["form"]
        body = await json_object(request)
        if isinstance(body, Response):
            return body
        invalid = refused(form, body, whole=True)
        if invalid is not None:
            return invalid
        new_id, stamp = store.create(form, body)
        value = str(new_id)
        # The docs name the id both name/value and idObjectName/idObjectValue: send both pairs (the second
        # under the id_key of this server's listings, none when they hold the id only in links).
        created = {"idObjectName": form, settings.id_key: value, "name": form, "value": value}
        if settings.id_in_links_only:
            del created[settings.id_key]
        created["dtLastUpdate"] = stamp_in_unit(stamp, settings.updated_unit)
        return json_response(created, 201)

    async def update_instance(request: Request) -> Response:
        if not authorized(request):
            return unauthorized_response(settings)
        form, raw_id = request.path_params["form"], request.path_params["instance_id"]
        if not store.exists(form):
            return form_missing(form)
        body = await json_object(request)
        if isinstance(body, Response):
            return body
        instance_id = _instance_id(raw_id)
        if instance_id is None:
            return instance_missing(form, raw_id)
        if store.get(form, instance_id) is None:
            return instance_missing(form, raw_id)
        invalid = refused(form, body, whole=request.method == "PUT")
        if invalid is not None:
            return invalid
        stored = store.get(form, instance_id) or {}
        if settings.updated_unit != "ms" and "dtLastUpdate" in body and "dtLastUpdate" in stored:
            # The client sends back the value it read, in this server's unit: compared in that unit.
            if str(body["dtLastUpdate"]) == str(stamp_in_unit(stored["dtLastUpdate"], settings.updated_unit)):
                body["dtLastUpdate"] = stored["dtLastUpdate"]
        result, current = store.update(form, instance_id, body, partial=request.method == "PATCH")
        if result is UpdateResult.NOT_FOUND:
            return instance_missing(form, raw_id)
        if result is UpdateResult.MISSING_VERSION:
            return errors_response(
                400, "dtLastUpdate is required: send the value read by a prior GET", "dtLastUpdate"
            )
        if result is UpdateResult.STALE:
            return errors_response(
                settings.stale_status,
                f"The instance was modified by another user (current dtLastUpdate "
                f"{stamp_in_unit(current, settings.updated_unit)})",
                "dtLastUpdate",
            )
        return Response(status_code=202)

    async def delete_instance(request: Request) -> Response:
        if not authorized(request):
            return unauthorized_response(settings)
        form, raw_id = request.path_params["form"], request.path_params["instance_id"]
        if not store.exists(form):
            return form_missing(form)
        instance_id = _instance_id(raw_id)
        if instance_id is None or not store.delete(form, instance_id):
            return instance_missing(form, raw_id)
        return Response(status_code=204)

    # The docs show the collection with a trailing slash; clients also call it without one. Serve both.
    for path in (collection, collection + "/"):
        app.add_api_route(path, list_instances, methods=["GET"], include_in_schema=False)
        app.add_api_route(path, create_instance, methods=["POST"], include_in_schema=False)
    app.add_api_route(item, get_instance, methods=["GET"], include_in_schema=False)
    app.add_api_route(item, update_instance, methods=["PUT", "PATCH"], include_in_schema=False)
    app.add_api_route(item, delete_instance, methods=["DELETE"], include_in_schema=False)
