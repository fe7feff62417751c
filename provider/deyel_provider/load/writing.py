"""Writing one record: create its instance, update the fields that differ, or leave it alone; a record Deyel
refuses is a :class:`~deyel_provider.load.rejects.Reject`, not a failure.

An update sends the ``dtLastUpdate`` the search returned; a 409 (another user saved it meanwhile) re-reads
the instance and tries once more, then the record is rejected. A create whose answer was lost (a 5xx, a
dropped connection, an unreadable answer) may have been applied, so it is never replayed blindly: after the
backoff the key is searched; an instance holding the values sent is that create; one holding others is
updated; none means the POST is sent again (up to ``retry_attempts``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from deyel_provider.api.instance_ids import instance_id, missing_id, names_a_segment
from deyel_provider.exceptions import (
    DeyelBadResponseError,
    DeyelConflictError,
    DeyelConnectionError,
    DeyelError,
    DeyelNotFoundError,
    DeyelRequestError,
    DeyelServerError,
)
from deyel_provider.load.key_types import key_text, normalise, written_value
from deyel_provider.load.rejects import Reject
from deyel_provider.load.values import differences

if TYPE_CHECKING:
    from deyel_provider.hooks.deyel import DeyelHook
    from deyel_provider.load.gate import RequestGate
    from deyel_provider.load.matching import ChunkMatcher
    from deyel_provider.load.records import Record
    from deyel_provider.load.spec import LoadSpec

log = logging.getLogger(__name__)

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
_DELETED = "the instance with this key was deleted while the load ran (mode 'update' creates none)"


class RecordWriter:
    """Places each record with the instances its key matched (:meth:`place`), through ``gate``."""

    def __init__(self, hook: DeyelHook, spec: LoadSpec, matcher: ChunkMatcher, gate: RequestGate) -> None:
        self.hook = hook
        self.form = spec.form
        self.key = spec.key
        self.mode = spec.mode
        self.key_type = matcher.key_type
        self.endpoint = matcher.endpoint
        self.id_field = matcher.id_field
        self._matcher = matcher
        self._gate = gate
        self._note_retry = gate.concurrency.note_retry
        self._quoted = matcher.search.quoted

    def place(self, record: Record, found: list[dict[str, Any]]) -> str | Reject:
        """Create, update or leave alone the instance of one record; a refusal is returned as a Reject."""
        if len(found) > 1:
            # The search keeps two (matching.HELD_PER_KEY): enough to know the key names several.
            ids = ", ".join(self._quoted(instance_id(i, self.id_field)) for i in found)
            return self._reject(
                record,
                f"more than one instance of {self.form} has this {self.key} (ids {ids}): the key must name "
                f"one instance; merge or delete the others",
                self.key,
            )
        if not found:
            if self.mode == "update":
                return self._reject(
                    record,
                    f"no instance of {self.form} has this {self.key} (mode 'update' creates none)",
                    self.key,
                )
            return self._create(record)
        if self.mode == "insert":
            return UNCHANGED
        return self._update(record, found[0])

    def _reject(
        self, record: Record, message: str | DeyelError, attribute: str = "", status: int | None = None
    ) -> Reject:
        if isinstance(message, DeyelError):
            errors = message.errors or [{"message": message.detail, "attribute-name": attribute}]
            status = message.status
        else:
            errors = [{"message": message, "attribute-name": attribute}]
        key = key_text(record.values.get(self.key)) or ""
        return Reject(key=key, where=record.where, errors=errors, status=status, record=record.values)

    def _update(
        self, record: Record, instance: dict[str, Any], *, again: bool = False, ident: str | None = None
    ) -> str | Reject:
        changes = differences(record.values, instance, self._matcher.compared(record))
        if not changes:
            return UNCHANGED
        # The id from the listing: a re-read instance (GET of one) may not repeat it.
        ident = ident or instance_id(instance, self.id_field)
        if ident is None:  # the key search refuses instances without one
            raise DeyelBadResponseError(missing_id(self.id_field), method="GET", path=self.endpoint)
        if not names_a_segment(ident):
            # The server's id, not the load's setting: this record cannot be updated, the others can.
            return self._reject(
                record,
                f"the instance of {self.form} with this {self.key} has the id {self._quoted(ident)}, "
                f"which cannot name it in a URL (blank, '.' or '..'): fix the instance in Deyel, or check "
                f"the connection's id_field",
                self.key,
            )
        values = {**changes, "dtLastUpdate": instance.get("dtLastUpdate")}
        try:
            self._gate.write(
                lambda: self.hook.update_instance(self.form, ident, values, on_retry=self._note_retry)
            )
            return UPDATED
        except DeyelNotFoundError:
            # Deleted since it was read: the record still wants an instance.
            return self._create(record) if self.mode != "update" else self._reject(record, _DELETED, self.key)
        except (DeyelConflictError, DeyelRequestError) as refused:
            stale = isinstance(refused, DeyelConflictError) or _names(refused, "dtLastUpdate")
            if not stale or again:
                return self._reject(record, refused)
        # Another user saved it since it was read: read it again and write what still differs, once.
        try:
            fresh = self._gate.call(
                lambda: self.hook.get_instance(self.form, ident, on_retry=self._note_retry)
            )
        except DeyelNotFoundError:
            return self._create(record) if self.mode != "update" else self._reject(record, _DELETED, self.key)
        return self._update(record, fresh, again=True, ident=ident)

    def _create(self, record: Record) -> str | Reject:
        values = record.values
        written = written_value(self.key, values[self.key], self.key_type)
        body = {self.key: written, **{f: values[f] for f in self._matcher.compared(record) if f in values}}
        key = normalise(values[self.key], self.key_type) or ""
        policy = self.hook.retry_policy
        attempt = 1
        while True:
            try:
                self._gate.write(
                    lambda: self.hook.create_instance(self.form, body, on_retry=self._note_retry)
                )
                return CREATED
            except DeyelRequestError as refused:
                return self._reject(record, refused)
            except DeyelError as error:
                if not _maybe_applied(error) or attempt >= policy.attempts:
                    raise
                wait_s = policy.wait(attempt, error)
                log.warning(
                    "%s: creating %s=%r may have been applied (%s); searching the key in %.2f s before "
                    "sending it again",
                    self.form,
                    self.key,
                    key,
                    f"HTTP {error.status}" if error.status else type(error).__name__,
                    wait_s,
                )
            # Wait first: a gateway may have given up while the server was still writing.
            time.sleep(wait_s)
            attempt += 1
            found = self._matcher.search.find([key], keep=self._matcher.compared(record))[key]
            if len(found) == 1 and not differences(body, found[0], body):
                return CREATED
            if found:
                return self.place(record, found)


def _maybe_applied(error: DeyelError) -> bool:
    """Whether a POST that failed this way may have been applied by the server (its answer lost)."""
    if isinstance(error, DeyelBadResponseError):
        return True  # the answer came, unreadable: the create was made
    if isinstance(error, DeyelServerError):
        return error.transient
    return isinstance(error, DeyelConnectionError) and error.transient and error.request_sent


def _names(error: DeyelError, attribute: str) -> bool:
    return any(e.get("attribute-name") == attribute for e in error.errors)
