"""Loading records into a form: each matched on a key, then created, updated or left alone; safe to rerun.

For each chunk of ``batch_size`` records (:mod:`deyel_provider.load.sources`), one search ``key=in:v1;v2;...``
(documented operator; split where the query would pass ``max_search_length`` characters) returns the
instances that exist, with their values and ``dtLastUpdate``. Then each record is:

- **created** (POST) when no instance has its key (modes ``upsert`` and ``insert``), proven so: an ``in``
  search that found nothing is confirmed with ``eq``, and the separator is proven before the first create
  (:meth:`_Loader._match`; a wrong one is a :class:`DeyelConfigError` naming ``in_separator``);
- **updated** (PATCH of the fields that differ, with the ``dtLastUpdate`` the search returned) when a
  compared field differs (modes ``upsert`` and ``update``); a 409 (another user saved it meanwhile) re-reads
  the instance and tries once more, then the record is rejected;
- **left alone** when every compared field already holds its value (and, in mode ``insert``, whenever the
  instance exists): nothing is sent.

Keys are compared as the key field's type (:mod:`deyel_provider.load.key_types`: ``key_type``, or inferred
from
the key's prefix, a listing of a few instances, or the source): for a number, ``7`` and ``"007"`` are one key
in the duplicate check, the search and the matching.

Idempotent: a rerun of the same source finds every instance holding its values and writes nothing.
A create whose answer was lost (a 5xx, a dropped connection, an unreadable answer) may have been applied, so
it is never replayed blindly: after the backoff the key is searched; an instance holding the values sent is
that create; one holding others is updated; none means the POST is sent again (up to ``retry_attempts``).
A replayed PATCH is settled by :meth:`DeyelHook.update_instance`. A record Deyel refuses (400 and its
``errors``) is a reject, not a failure: the load goes on, lists it in the rejects file, and fails at the end
when there are more than ``max_rejects``.

One load of a form at a time: before any request (the key type's sample too) a load takes the form's lease
(:mod:`deyel_provider.load.lease`: a Redis lock with ``cache=redis``, else a file lock on this host), waiting
up to ``lock_timeout`` for another load to end, and checks it before each write; two loads of the same keys
would otherwise both search, find nothing and both create.

Requests run on up to ``max_workers`` threads under the extraction's concurrency control
(:class:`~deyel_provider.http.concurrency.Concurrency`: ``auto`` grows while it pays, halves on rate limits
and
paces). Memory holds about two chunks of records.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from deyel_provider.api.instance_ids import instance_id, missing_id, names_a_segment, server_keys
from deyel_provider.exceptions import (
    DeyelBadResponseError,
    DeyelConfigError,
    DeyelConflictError,
    DeyelConnectionError,
    DeyelError,
    DeyelNotFoundError,
    DeyelRejectedError,
    DeyelRequestError,
    DeyelServerError,
)
from deyel_provider.http.concurrency import Concurrency
from deyel_provider.load.form_sample import SAMPLE_SIZE, sample_instances
from deyel_provider.load.key_search import (
    HELD_PER_KEY,
    MAX_BATCH,
    MAX_MATCHES_PER_KEY,
    MAX_SEARCH_LENGTH,
    KeySearch,
)
from deyel_provider.load.key_types import (
    KEY_TYPES,
    KeyType,
    check_key_type,
    infer_key_type,
    key_text,
    normalise,
    written_value,
)
from deyel_provider.load.lease import DEFAULT_LOCK_TIMEOUT, LoadLease, load_lease
from deyel_provider.load.rejects import Reject, RejectsFile
from deyel_provider.load.sources import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    Record,
    Source,
    check_keys,
)
from deyel_provider.load.values import SERVER_KEYS, differences, field_kind

if TYPE_CHECKING:
    import requests
    from airflow.sdk import ObjectStoragePath

    from deyel_provider.hooks.deyel import DeyelHook

log = logging.getLogger(__name__)

T = TypeVar("T")

MODES: tuple[str, ...] = ("upsert", "insert", "update")
#: Rejects logged one by one (the rest are in the rejects file and the count).
_LOGGED_REJECTS = 10

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
_DELETED = "the instance with this key was deleted while the load ran (mode 'update' creates none)"


@dataclass(frozen=True)
class UpsertResult:
    """What a load did: small enough for XCom."""

    created: int
    updated: int
    unchanged: int
    rejected: int
    seconds: float
    records: int
    #: Where the rejects were published (None: no ``rejects`` target was given).
    rejects_path: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def upsert(
    hook: DeyelHook,
    form: str,
    source: Any,
    key: str,
    *,
    fields: Sequence[str] | None = None,
    mode: str = "upsert",
    max_workers: int | str = 1,
    max_workers_ceiling: int = 8,
    batch_size: int = 100,
    max_search_length: int = MAX_SEARCH_LENGTH,
    in_separator: str | None = None,
    key_type: str | None = None,
    max_rejects: int = 0,
    rejects: str | ObjectStoragePath | None = None,
    rejects_conn_id: str | None = None,
    source_format: str | None = None,
    source_conn_id: str | None = None,
    progress_interval: float = 30.0,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    max_matches_per_key: int = MAX_MATCHES_PER_KEY,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    logger: Any = log,
) -> UpsertResult:
    """Load ``source`` into ``form``, matching records to instances on ``key`` (see the module docstring).

    :param hook: the Deyel connection to write through.
    :param form: the form's identifier, e.g. ``ERP_CUSTOMER``.
    :param source: a JSON Lines, CSV or Parquet file (path, URL or ``ObjectStoragePath``), or a list of dicts.
    :param key: the field that names an instance, e.g. ``cdCustomer``; every record needs one, no two alike.
    :param fields: the fields compared and written; default: each record's own fields.
    :param mode: ``upsert`` (create or update), ``insert`` (create missing ones only) or ``update`` (update
        existing ones only; a record without an instance is rejected).
    :param max_workers: requests in flight, or ``"auto"``.
    :param max_workers_ceiling: the most requests ``"auto"`` keeps in flight.
    :param batch_size: records matched by one search, at most 1000 (a server whose pages are smaller is
        paged through: see :meth:`KeySearch._search`).
    :param max_search_length: the most encoded characters of one ``search`` value (a batch is split past it).
    :param in_separator: separator of the values of Deyel's ``in`` operator; default: the connection's
        ``in_separator`` extra (``;`` assumed).
    :param key_type: how keys compare: ``number`` (``7``, ``7.0`` and ``"007"`` are one key), ``text``
        (exactly), or None: inferred (:func:`key_type_of`).
    :param max_rejects: rejects tolerated; past it the load still finishes, then raises
        :class:`DeyelRejectedError`.
    :param rejects: where to publish the rejects (JSON Lines); None: only logged and counted.
    :param rejects_conn_id: the rejects' object store connection, if it needs one.
    :param source_format: ``jsonl``, ``csv`` or ``parquet``; default: from the file's suffix.
    :param source_conn_id: the source's object store connection, if it needs one.
    :param progress_interval: seconds between progress lines in the log.
    :param lock_timeout: seconds to wait for another load of ``form`` on the same server to end (one load
        of a form at a time: :mod:`deyel_provider.load.lease`); then :class:`DeyelBusyError`, nothing
        written. 0: fail at once.
    :param max_matches_per_key: a key search of N keys reads at most N times this many instances; past it,
        :class:`DeyelIncompleteError` before anything of the batch is written (a server paging without
        end, or that many duplicates of the keys in the form). See :mod:`deyel_provider.load.key_search`.
    :param max_record_bytes: the most bytes of one source record (a line, a CSV record, a Parquet row's
        decoded values); a larger one is a :class:`DeyelSourceError` before any request (:mod:`.sources`).
    :param max_batch_bytes: the most bytes of the records of one batch (a batch ends before it would pass
        it), and of the Parquet rows decoded at once.
    """
    started = time.monotonic()
    if mode not in MODES:
        raise DeyelConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
    check_field_name("key", key)
    if fields is not None:
        if isinstance(fields, str) or not isinstance(fields, Sequence):
            raise DeyelConfigError(f"fields must be a list of field identifiers, got {fields!r}")
        for name in fields:
            check_field_name("fields", name)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= MAX_BATCH:
        raise DeyelConfigError(f"batch_size must be a whole number from 1 to {MAX_BATCH}, got {batch_size!r}")
    if not isinstance(max_rejects, int) or isinstance(max_rejects, bool) or max_rejects < 0:
        raise DeyelConfigError(f"max_rejects must be a whole number >= 0, got {max_rejects!r}")
    if (
        not isinstance(max_matches_per_key, int)
        or isinstance(max_matches_per_key, bool)
        or max_matches_per_key < HELD_PER_KEY
    ):
        raise DeyelConfigError(
            f"max_matches_per_key must be a whole number >= {HELD_PER_KEY}, got {max_matches_per_key!r}"
        )
    if in_separator is not None and (not in_separator or not isinstance(in_separator, str)):
        raise DeyelConfigError("in_separator must be a non-empty string (Deyel's is assumed to be ';')")
    if progress_interval <= 0:
        raise DeyelConfigError(f"progress_interval must be > 0 seconds, got {progress_interval!r}")
    declared = check_key_type(key_type)
    if (
        not isinstance(lock_timeout, int | float)
        or isinstance(lock_timeout, bool)
        or not 0 <= lock_timeout < math.inf
    ):
        raise DeyelConfigError(f"lock_timeout must be a number of seconds >= 0, got {lock_timeout!r}")
    from deyel_provider.hooks.deyel import instances_endpoint

    endpoint = instances_endpoint(form)
    concurrency = Concurrency(max_workers, ceiling=max_workers_ceiling, logger=logger)
    records = Source(
        source,
        format=source_format,
        conn_id=source_conn_id,
        max_record_bytes=max_record_bytes,
        max_batch_bytes=max_batch_bytes,
    )
    sink: RejectsFile | None = None
    try:
        # Before any request (the key type's sample too): a sample or search read before another load's
        # creates, or before a user clears the form, is stale once this load gets the lease.
        with load_lease(hook.config, form, timeout=lock_timeout, logger=logger) as lease:
            sample: list[dict[str, Any]] | None = None
            if declared:
                compared = declared
            else:
                compared, sample = key_type_of(hook, form, endpoint, key, records, logger)
            total = check_keys(records, key, compared)
            logger.info(
                "loading %d records of %s into %s (key %s, mode %s)", total, records.name, form, key, mode
            )
            # Inside the try: a loader that cannot start (a connection's bad paging) leaves no temporary file.
            sink = RejectsFile(rejects, rejects_conn_id, logger) if rejects is not None else None
            loader = _Loader(
                hook,
                form,
                endpoint,
                key,
                fields=[f for f in fields if f != key] if fields is not None else None,
                mode=mode,
                concurrency=concurrency,
                batch_size=batch_size,
                max_search_length=max_search_length,
                in_separator=in_separator,
                key_type=compared,
                sample=sample,
                max_matches_per_key=max_matches_per_key,
                logger=logger,
            )
            loader.started = started  # the key check counts too
            counts = loader.run(records, sink, progress_interval, lease)
    except BaseException:
        if sink is not None:
            sink.discard()
        raise
    path = sink.publish() if sink is not None else None
    result = UpsertResult(
        created=counts[CREATED],
        updated=counts[UPDATED],
        unchanged=counts[UNCHANGED],
        rejected=loader.rejected,
        seconds=round(time.monotonic() - loader.started, 3),
        records=sum(counts.values()) + loader.rejected,
        rejects_path=path,
    )
    logger.info(
        "loaded %s: %d created, %d updated, %d unchanged, %d rejected in %.1f s%s",
        form,
        result.created,
        result.updated,
        result.unchanged,
        result.rejected,
        result.seconds,
        f"; rejects in {path}" if path else "",
    )
    if result.rejected > max_rejects:
        where = f"; {path} lists each with Deyel's errors" if path else " (pass rejects=... to keep them)"
        raise DeyelRejectedError(
            f"{result.rejected} records of {records.name} were rejected, more than max_rejects={max_rejects}"
            f"{where}; every other record was written. First: {loader.first_reject}"
        )
    return result


def key_type_of(
    hook: DeyelHook, form: str, endpoint: str, key: str, records: Source, logger: Any
) -> tuple[KeyType, list[dict[str, Any]] | None]:
    """The key's type when the load does not declare it, logged with why; and the sample it read, if any.

    The key's prefix tells it without a request (``qt``/``nu`` number, ``cd``/``ds`` text: Deyel's naming
    convention); otherwise one listing of ``SAMPLE_SIZE`` instances does (the same sample later proves the
    ``in`` separator), and an empty form leaves it to the source's values
    (:func:`~deyel_provider.load.key_types.infer_key_type`).
    """
    sample: list[dict[str, Any]] | None = None
    if field_kind(key) not in KEY_TYPES:
        sample = sample_instances(
            lambda url, query: hook.request("GET", url, params=query), endpoint, hook.paging(SAMPLE_SIZE)
        )
    values = (record.values.get(key) for record in records.records())
    # The redactor only with a sample to quote: it reads the connection, which a bad one fails later.
    found, why = infer_key_type(sample or [], key, values, hook.redactor if sample else None)
    logger.info("%s: keys of %s compared as %s: %s (pass key_type to say otherwise)", form, key, found, why)
    return found, sample


def check_field_name(what: str, name: Any) -> None:
    """A field identifier that can be put in a search clause (no ``,``, ``=`` or ``:``)."""
    if not isinstance(name, str) or not name.strip() or any(c in name for c in ",=:") or name in SERVER_KEYS:
        raise DeyelConfigError(f"{what} must name a field of the form, such as 'cdCustomer'; got {name!r}")


def _maybe_applied(error: DeyelError) -> bool:
    """Whether a POST that failed this way may have been applied by the server (its answer lost)."""
    if isinstance(error, DeyelBadResponseError):
        return True  # the answer came, unreadable: the create was made
    if isinstance(error, DeyelServerError):
        return error.transient
    return isinstance(error, DeyelConnectionError) and error.transient and error.request_sent


def _names(error: DeyelError, attribute: str) -> bool:
    return any(e.get("attribute-name") == attribute for e in error.errors)


class _Loader:
    """One load: the pipeline of searches and writes, and its counts."""

    def __init__(
        self,
        hook: DeyelHook,
        form: str,
        endpoint: str,
        key: str,
        *,
        fields: list[str] | None,
        mode: str,
        concurrency: Concurrency,
        batch_size: int,
        max_search_length: int,
        in_separator: str | None,
        key_type: KeyType,
        sample: list[dict[str, Any]] | None = None,
        max_matches_per_key: int = MAX_MATCHES_PER_KEY,
        logger: Any,
    ) -> None:
        self.hook = hook
        self.key_type = key_type
        self.form = form
        self.endpoint = endpoint
        self.key = key
        self.fields = fields
        self.mode = mode
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.log = logger
        #: Where listings hold an instance's id (the connection's ``id_field``): the write's path.
        self.id_field = hook.config.id_field
        self._server_keys = server_keys(self.id_field)
        self.search = KeySearch(
            form,
            endpoint,
            key,
            paging=hook.paging(batch_size),
            get=self._get_counted,
            # None: the connection's (read here, inside the load: a bad connection leaves nothing behind).
            separator=in_separator if in_separator is not None else hook.config.in_separator,
            max_search_length=max_search_length,
            id_field=self.id_field,
            key_type=key_type,
            max_matches_per_key=max_matches_per_key,
            redact=hook.redactor,
        )
        self.started = time.monotonic()
        #: Held by :meth:`run`; checked before each write.
        self.lease: LoadLease | None = None
        self.rejected = 0
        self.first_reject = ""
        #: Whether the ``in`` separator was checked (before the first create: a rerun that creates nothing
        #: costs no request for it).
        self._separator_checked = False
        #: A few existing instances (read for the key's type, else before the first create).
        self._sample = sample

    # -- the pipeline ------------------------------------------------------------------------------------

    def run(
        self, source: Source, sink: RejectsFile | None, progress_interval: float, lease: LoadLease
    ) -> dict[str, int]:
        """Search chunk after chunk and write their records, ``concurrency.limit`` requests at a time."""
        self.lease = lease
        counts = {CREATED: 0, UPDATED: 0, UNCHANGED: 0}
        chunks = source.chunks(self.batch_size)
        ready: deque[tuple[Record, list[dict[str, Any]]]] = deque()
        pending: dict[Future[Any], bool] = {}  # future -> is a search
        more, searching = True, False
        next_report = time.monotonic() + progress_interval
        pool = ThreadPoolExecutor(max_workers=self.concurrency.ceiling, thread_name_prefix="deyel-upsert")
        try:
            while True:
                limit = self.concurrency.limit
                while len(pending) < limit:
                    # The next chunk is searched while the last records of this one are written.
                    if more and not searching and len(ready) < 2 * limit:
                        chunk = next(chunks, None)
                        if chunk is None:
                            more = False
                            continue
                        pending[pool.submit(self._match, chunk)] = True
                        searching = True
                    elif ready:
                        pending[pool.submit(self._place, *ready.popleft())] = False
                    else:
                        break
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    if pending.pop(future):
                        searching = False
                        ready.extend(future.result())
                        continue
                    outcome = future.result()
                    if isinstance(outcome, Reject):
                        self._count_reject(outcome, sink)
                    else:
                        counts[outcome] += 1
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + progress_interval
                    self._report(counts)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return counts

    def _report(self, counts: dict[str, int]) -> None:
        elapsed = time.monotonic() - self.started
        done = sum(counts.values()) + self.rejected
        self.log.info(
            "progress: %d records (%d created, %d updated, %d unchanged, %d rejected), %.0f records/s, "
            "%.1f s elapsed",
            done,
            counts[CREATED],
            counts[UPDATED],
            counts[UNCHANGED],
            self.rejected,
            done / elapsed if elapsed > 0 else 0.0,
            elapsed,
        )

    def _count_reject(self, reject: Reject, sink: RejectsFile | None) -> None:
        self.rejected += 1
        if self.rejected == 1:
            self.first_reject = reject.summary()
        if self.rejected <= _LOGGED_REJECTS:
            self.log.warning("rejected %s", reject.summary())
        elif self.rejected == _LOGGED_REJECTS + 1:
            self.log.warning("more rejects: counted, and listed in the rejects file if one was asked for")
        if sink is not None:
            sink.add(reject)

    def _call(self, send: Callable[[], T]) -> T:
        """One request (and its retries) under the concurrency control."""
        self.concurrency.before_request()
        result = send()
        self.concurrency.note_done()
        return result

    def _write(self, send: Callable[[], T]) -> T:
        """A create or update, sent only while the load's lease holds (else ``DeyelLeaseLostError``)."""
        lease = self.lease
        assert lease is not None

        def guarded() -> T:
            lease.check()  # after the concurrency control's wait, right before sending
            return send()

        return self._call(guarded)

    # -- matching ----------------------------------------------------------------------------------------

    def _match(self, chunk: list[Record]) -> list[tuple[Record, list[dict[str, Any]]]]:
        """Each record of the chunk with the instances that have its key.

        A key is taken as absent (then created) only when proven so: an ``in`` clause that matched nothing
        is confirmed with ``eq``, and before the load's first create the separator is proven on instances
        that exist (see :mod:`deyel_provider.load.key_search`). Chunks are matched one at a time, so the
        proof runs
        once.
        """
        # check_keys normalised every key already: none is missing or of another type here.
        keys = [normalise(record.values[self.key], self.key_type) or "" for record in chunk]
        creates = self.mode != "update"
        # Only what _place reads of each instance is held (its other fields may be large).
        compared = {field for record in chunk for field in self._compared(record)}
        found = self.search.find(keys, confirm_absent=creates, keep=compared)
        # Once, before the first create; no request when an in clause of this load already found instances.
        if creates and not self._separator_checked and any(not found[k] for k in keys):
            self._separator_checked = True
            if not self.search.separator_seen:
                if self._sample is None:  # not read for the key's type
                    self._sample = sample_instances(
                        self._get_counted, self.endpoint, self.hook.paging(SAMPLE_SIZE)
                    )
                # False: no instance has the key yet (an empty form): the eq confirmations stand alone.
                self.search.prove_separator(self._sample)
        return [(record, found[k]) for record, k in zip(chunk, keys, strict=True)]

    def _get_counted(self, url: str, query: dict[str, Any] | None) -> requests.Response:
        """A GET under the concurrency control."""
        return self._call(partial(self._get, url, query))

    def _get(self, url: str, query: dict[str, Any] | None) -> requests.Response:
        return self.hook.request("GET", url, params=query, on_retry=self.concurrency.note_retry)

    def _compared(self, record: Record) -> list[str]:
        if self.fields is not None:
            return self.fields
        return [f for f in record.values if f != self.key and f not in self._server_keys]

    def _place(self, record: Record, found: list[dict[str, Any]]) -> str | Reject:
        """Create, update or leave alone the instance of one record; a refusal is returned as a Reject."""
        if len(found) > 1:
            # The search keeps two (matching.HELD_PER_KEY): enough to know the key names several.
            ids = ", ".join(self.search.quoted(instance_id(i, self.id_field)) for i in found)
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
        changes = differences(record.values, instance, self._compared(record))
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
                f"the instance of {self.form} with this {self.key} has the id {self.search.quoted(ident)}, "
                f"which cannot name it in a URL (blank, '.' or '..'): fix the instance in Deyel, or check "
                f"the connection's id_field",
                self.key,
            )
        values = {**changes, "dtLastUpdate": instance.get("dtLastUpdate")}
        try:
            self._write(
                lambda: self.hook.update_instance(
                    self.form, ident, values, on_retry=self.concurrency.note_retry
                )
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
            fresh = self._call(
                lambda: self.hook.get_instance(self.form, ident, on_retry=self.concurrency.note_retry)
            )
        except DeyelNotFoundError:
            return self._create(record) if self.mode != "update" else self._reject(record, _DELETED, self.key)
        return self._update(record, fresh, again=True, ident=ident)

    def _create(self, record: Record) -> str | Reject:
        values = record.values
        written = written_value(self.key, values[self.key], self.key_type)
        body = {self.key: written, **{f: values[f] for f in self._compared(record) if f in values}}
        key = normalise(values[self.key], self.key_type) or ""
        policy = self.hook.retry_policy
        attempt = 1
        while True:
            try:
                self._write(
                    lambda: self.hook.create_instance(self.form, body, on_retry=self.concurrency.note_retry)
                )
                return CREATED
            except DeyelRequestError as refused:
                return self._reject(record, refused)
            except DeyelError as error:
                if not _maybe_applied(error) or attempt >= policy.attempts:
                    raise
                wait_s = policy.wait(attempt, error)
                self.log.warning(
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
            found = self.search.find([key], keep=self._compared(record))[key]
            if len(found) == 1 and not differences(body, found[0], body):
                return CREATED
            if found:
                return self._place(record, found)
