"""A few of a form's existing instances: one small listing, no search.

The write-back proves its ``in`` separator on them before its first create (``matching.KeySearch``); the
same sample can tell what a form's key values look like.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deyel_provider.api.pagination import Paging, parse_page

if TYPE_CHECKING:
    import requests

#: Instances asked for: enough to find two with a plain key value on most forms, one small page.
SAMPLE_SIZE = 10


def sample_instances(
    get: Callable[[str, dict[str, Any] | None], requests.Response],
    endpoint: str,
    paging: Paging,
    size: int = SAMPLE_SIZE,
) -> list[dict[str, Any]]:
    """Up to ``size`` instances of the form at ``endpoint``: the first page of ``size``, one GET.

    A server that ignores the page size may send more: only the first ``size`` are kept.
    """
    return parse_page(get(endpoint, paging.params_for(0, size)), paging).records[:size]
