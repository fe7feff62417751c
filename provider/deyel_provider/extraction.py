"""Deprecated: moved to :mod:`deyel_provider.extract.run` (kept for one minor release)."""

from __future__ import annotations

import warnings

from deyel_provider.extract.run import ExtractResult, extract  # noqa: F401

warnings.warn(
    "deyel_provider.extraction moved to deyel_provider.extract.run; this path goes away in the next minor "
    "release",
    DeprecationWarning,
    stacklevel=2,
)
