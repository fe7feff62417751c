"""A sliced reader over a test's own fetch (one that counts or holds requests), on the emulator's clock."""

from __future__ import annotations

from typing import Any

from deyel_provider.api.instance_ids import DEFAULT_ID_FIELD
from deyel_provider.api.instances import instances_endpoint
from deyel_provider.api.pagination import Fetch
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.concurrency import Concurrency, Workers
from deyel_provider.read.slicing import SlicedReader, SliceSettings


def reader_for(
    emulator: Any, fetch: Fetch, page_size: int, max_workers: int = 1, form: str = "CRM_ACCOUNT"
) -> SlicedReader:
    """The reader ``DeyelHook.sliced_reader`` would make, with ``fetch`` for its GETs; its waits move the
    emulator's clock."""
    return SlicedReader(
        fetch,
        instances_endpoint(form),
        None,
        DeyelHook().paging(page_size),
        SliceSettings(id_field=DEFAULT_ID_FIELD, clock=emulator.state.clock.now, sleep=emulator.advance),
        concurrency=Concurrency(Workers(max_workers)),
    )
