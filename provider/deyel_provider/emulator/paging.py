"""The paging strategies of the instances collection (parameter names and limits come from the settings)."""

from __future__ import annotations

import base64
import bisect
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deyel_provider.emulator.settings import EmulatorSettings


class PagingError(ValueError):
    def __init__(self, message: str, attribute: str) -> None:
        super().__init__(message)
        self.attribute = attribute


@dataclass(frozen=True)
class Window:
    """Where a page starts and how long it is; ``size`` None means everything."""

    start: int = 0
    size: int | None = None
    #: The sort key of the last instance of the previous page (link paging).
    after: Any = None

    def bounds(self, ids: Sequence[int], key: Callable[[int], Any]) -> tuple[int, int]:
        start = self.start
        if self.after is not None:
            # Keyset continuation: robust to records created or deleted between pages.
            start = bisect.bisect_right(ids, self.after, key=key)
        stop = len(ids) if self.size is None else min(len(ids), start + self.size)
        return min(start, len(ids)), stop


def _int_param(query: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise PagingError(f"'{name}' must be an integer", name) from None
    if value < minimum:
        raise PagingError(f"'{name}' must be >= {minimum}", name)
    return value


def encode_cursor(last_key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(["after", last_key]).encode()).decode().rstrip("=")


def _decode_cursor(raw: str, name: str) -> Any:
    try:
        prefix, key = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if prefix != "after":
            raise ValueError(prefix)
        return tuple(key) if isinstance(key, list) else int(key)
    except (ValueError, TypeError):
        raise PagingError(f"Invalid '{name}'", name) from None


def parse_window(settings: EmulatorSettings, query: Mapping[str, str]) -> Window:
    strategy = settings.paging
    if strategy == "none":
        return Window()
    size_name = settings.limit_param if strategy == "offset" else settings.page_size_param
    # Oversized pages are served at the maximum, as the docs' servers do, rather than refused.
    size = min(_int_param(query, size_name, settings.page_size_default, 1), settings.page_size_max)
    if settings.ignore_page_size:
        size = settings.page_size_default
    if strategy == "offset":
        start = _int_param(query, settings.offset_param, 0, 0)
        return Window(start=0 if settings.ignore_page_param else start, size=size)
    if strategy == "link" and query.get(settings.cursor_param) and not settings.ignore_page_param:
        return Window(size=size, after=_decode_cursor(query[settings.cursor_param], settings.cursor_param))
    page = 1 if settings.ignore_page_param else _int_param(query, settings.page_param, 1, 1)
    return Window(start=(page - 1) * size, size=size)


def hidden_after_paging(settings: EmulatorSettings, instance_id: int) -> bool:
    """Whether ``drop_after_paging`` removes this instance from every page that holds it (same seed, same
    answer: tests compute the instances a user of that server can see)."""
    share = settings.drop_after_paging
    return share > 0 and zlib.crc32(f"{settings.seed}/{instance_id}".encode()) < share * 2**32
