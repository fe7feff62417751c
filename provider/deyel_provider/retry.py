"""Deprecated: moved to :mod:`deyel_provider.http.retry` (kept for one minor release)."""

from __future__ import annotations

import warnings

from deyel_provider.http.retry import *  # noqa: F403
from deyel_provider.http.retry import RetryPolicy, is_replay_safe  # noqa: F401

warnings.warn(
    "deyel_provider.retry moved to deyel_provider.http.retry; this path goes away in the next minor release",
    DeprecationWarning,
    stacklevel=2,
)
