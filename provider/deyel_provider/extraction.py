"""Deprecated: moved to :mod:`deyel_provider.extract.run` (kept for one minor release).

``extract`` here still takes the keyword arguments it took before the engine took spec objects
(:mod:`deyel_provider.extract.spec`); it builds them and warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from deyel_provider.extract import run
from deyel_provider.extract.formats.base import FORMATS
from deyel_provider.extract.formats.writers import make_writer
from deyel_provider.extract.progress import Progress
from deyel_provider.extract.run import ExtractResult, epoch_ms
from deyel_provider.extract.spec import ON_EMPTY, OutputSpec, ReadSpec, WindowSpec, check_output_options
from deyel_provider.storage.paths import as_storage_path

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from deyel_provider.hooks.deyel import DeyelHook

__all__ = [
    "FORMATS",
    "ON_EMPTY",
    "ExtractResult",
    "as_storage_path",
    "check_output_options",
    "epoch_ms",
    "extract",
    "make_writer",
]

warnings.warn(
    "deyel_provider.extraction moved to deyel_provider.extract.run; this path goes away in the next minor "
    "release",
    DeprecationWarning,
    stacklevel=2,
)


def extract(
    hook: DeyelHook,
    form: str,
    output: str | ObjectStoragePath,
    *,
    search: str | None = None,
    fields: Sequence[str] | None = None,
    format: str = "jsonl",
    compression: str | None = None,
    schema: dict[str, str] | None = None,
    on_empty: str = "write",
    max_file_bytes: int | None = None,
    row_group_bytes: int | None = None,
    max_columns: int = 2000,
    page_size: int | None = None,
    max_workers: int | str = 1,
    max_workers_ceiling: int = 8,
    field: str = "dtLastUpdate",
    start: int | None = None,
    end: int | None = None,
    end_at_server_time: bool = False,
    output_conn_id: str | None = None,
    progress_interval: float = 30.0,
    logger: Any = None,
    before_publish: Callable[[int | None], None] | None = None,
) -> ExtractResult:
    """Deprecated: :func:`deyel_provider.extract.run.extract` with ``ReadSpec``, ``OutputSpec`` and
    ``WindowSpec`` (docs/extraction.md, "The engine from Python"). Same arguments and result as before."""
    warnings.warn(
        "deyel_provider.extraction.extract(hook, form, output, **options) is deprecated: call "
        "deyel_provider.extract.run.extract(hook, ReadSpec(...), OutputSpec(...), WindowSpec(...)) "
        "(docs/extraction.md)",
        DeprecationWarning,
        stacklevel=2,
    )
    output_spec = OutputSpec(
        output,
        format=format,
        compression=compression,
        fields=fields,
        schema=schema,
        on_empty=on_empty,
        max_file_bytes=max_file_bytes,
        row_group_bytes=row_group_bytes,
        max_columns=max_columns,
        output_conn_id=output_conn_id,
    )
    return run.extract(
        hook,
        ReadSpec(
            form,
            search=search,
            field=field,
            page_size=page_size,
            max_workers=max_workers,
            max_workers_ceiling=max_workers_ceiling,
        ),
        output_spec,
        WindowSpec(start, end, end_at_server_time=end_at_server_time),
        progress=Progress(progress_interval) if logger is None else Progress(progress_interval, logger),
        before_publish=before_publish,
    )
