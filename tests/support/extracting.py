"""Records written the two honest ways: by a real extraction, or by a writer as the unit under test.

- :func:`extract_pages`: an emulator serving exactly the records given (ids, ``dtLastUpdate`` and ``links``
  are the server's), read by :func:`deyel_provider.extract.run.extract` into ``path``: temporary files,
  the rewrite pass and publishing are the run's own.
- :func:`write_unit`: one writer (:func:`~deyel_provider.extract.formats.writers.make_writer`) writing pages
  into one local file, for what the writer alone decides (types, values, row groups, refusals). It never
  stands in for the run: a writer that would need the run's rewrite pass fails the test instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deyel_provider.emulator import run_emulator
from deyel_provider.extract.formats.base import RecordWriter
from deyel_provider.extract.formats.writers import make_writer
from deyel_provider.extract.run import ExtractResult, extract
from deyel_provider.extract.spec import OutputSpec, ReadSpec
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.storage.compression import EncodedFile
from tests.support.helpers import FAST_RETRY, connection_json

FORM = "PAGES_FORM"
CONN_ID = "deyel_pages"


def extract_pages(
    path: Path, fmt: str, pages: list[list[dict[str, Any]]], **options: Any
) -> tuple[ExtractResult, list[Path]]:
    """Serve ``pages`` (the records in order, a server page as long as the longest page given) and extract
    them to ``path`` with ``options`` (``OutputSpec``'s); returns the result and the files published."""
    page_size = max((len(page) for page in pages), default=1) or 1
    variable = f"AIRFLOW_CONN_{CONN_ID.upper()}"
    with run_emulator(records=0) as emulator:
        for page in pages:
            for record in page:
                emulator.state.store.create(FORM, record)
            emulator.advance(1)
        emulator.advance(3600)  # every record settled: the run reads them without waiting
        os.environ[variable] = connection_json(
            emulator.url, **FAST_RETRY, cache="memory", page_size=page_size, settle_seconds=0
        )
        try:
            result = extract(DeyelHook(CONN_ID), ReadSpec(FORM), OutputSpec(str(path), format=fmt, **options))
        finally:
            del os.environ[variable]
    return result, [Path(part["path"].removeprefix("file:")) for part in result.parts]


def types_of(result: ExtractResult) -> dict[str, str]:
    """The run's columns and their types, as its result reports them."""
    return {column["name"]: column["type"] for column in result.columns}


def write_unit(
    path: Path, fmt: str, pages: list[list[dict[str, Any]]], fields: list[str] | None = None, **options: Any
) -> RecordWriter:
    """The writer of ``fmt`` writing ``pages`` into the one file ``path``; returns it, closed."""
    with path.open("wb") as raw:
        writer = make_writer(fmt, lambda number: EncodedFile(raw, None), fields, **options)
        for page in pages:
            writer.write_page(page)
        writer.close()
    assert len(writer.parts) == 1, "several parts are the run's: use extract_pages"
    assert not writer.needs_rewrite(writer.parts[0]), "this writes a rewrite pass: use extract_pages"
    return writer
