"""A load's requests: each under the concurrency control; a write sent only while the load's lease holds."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import requests

    from deyel_provider.hooks.deyel import DeyelHook
    from deyel_provider.http.concurrency import Concurrency
    from deyel_provider.load.lease import LoadLease

T = TypeVar("T")


class RequestGate:
    """Where every request of a load passes: :meth:`call` (a search, a read), :meth:`write` (a create or an
    update: checks the lease right before sending) and :meth:`get` (a counted GET, for the key search)."""

    def __init__(self, hook: DeyelHook, concurrency: Concurrency, lease: LoadLease) -> None:
        self.hook = hook
        self.concurrency = concurrency
        self.lease = lease

    def call(self, send: Callable[[], T]) -> T:
        """One request (and its retries) under the concurrency control."""
        self.concurrency.before_request()
        result = send()
        self.concurrency.note_done()
        return result

    def write(self, send: Callable[[], T]) -> T:
        """A create or update, sent only while the load's lease holds (else ``DeyelLeaseLostError``)."""
        lease = self.lease

        def guarded() -> T:
            lease.check()  # after the concurrency control's wait, right before sending
            return send()

        return self.call(guarded)

    def get(self, url: str, query: dict[str, Any] | None) -> requests.Response:
        """A GET under the concurrency control."""
        return self.call(partial(self._get, url, query))

    def _get(self, url: str, query: dict[str, Any] | None) -> requests.Response:
        return self.hook.request("GET", url, params=query, on_retry=self.concurrency.note_retry)
