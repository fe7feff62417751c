"""Where an output or a source is: a URL or a local path as an ``ObjectStoragePath``.

Extraction targets, load sources and rejects files all name their storage this one way.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import ObjectStoragePath

from deyel_provider.exceptions import DeyelConfigError


def as_storage_path(output: str | ObjectStoragePath, conn_id: str | None = None) -> ObjectStoragePath:
    """The output as an ``ObjectStoragePath``; a plain path means a local file (``file://``)."""
    if isinstance(output, ObjectStoragePath):
        return output
    text = str(output).strip()
    if not text:
        raise DeyelConfigError("output must be a URL or path, e.g. file:///data/deyel/CRM_ACCOUNT.jsonl")
    folder = text.endswith("/")
    if "://" not in text:
        # Made absolute without resolving links: a link at the final name must be replaced, not followed.
        text = Path(os.path.abspath(os.path.expanduser(text))).as_uri()
    path = ObjectStoragePath(text, conn_id=conn_id)
    if folder or not path.name:
        raise DeyelConfigError(f"output {text!r} is a folder; end it with a file name, e.g. .../data.jsonl")
    return path
