"""Writing pages the way an extraction does (parts, temporary files, rewrite pass, publish), without HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deyel_provider.extract.formats.base import RecordWriter
from deyel_provider.extract.formats.writers import make_writer
from deyel_provider.extract.parts import OutputFiles
from deyel_provider.storage.paths import as_storage_path


def write_pages(
    path: Path,
    fmt: str,
    pages: list[list[dict[str, Any]]],
    fields: list[str] | None = None,
    *,
    compression: str | None = None,
    max_file_bytes: int | None = None,
    **options: Any,
) -> tuple[RecordWriter, list[Path]]:
    """Write ``pages`` to ``path`` (or its numbered parts); returns the writer and the files published."""
    files = OutputFiles(
        as_storage_path(str(path)),
        split=max_file_bytes is not None,
        codec=None if fmt == "parquet" else compression,
    )
    if fmt == "parquet" and compression is not None:
        options["compression"] = compression
    writer = make_writer(fmt, files.open, fields, max_file_bytes=max_file_bytes, **options)
    try:
        for page in pages:
            writer.write_page(page)
        writer.close()
        written = files.finish(writer)
        files.publish(written)
    except BaseException:
        files.discard()
        raise
    return writer, [Path(str(part.target.path)) for part in written]
