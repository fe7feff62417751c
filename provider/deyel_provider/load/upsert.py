"""Loading records into a form: each matched on a key, then created, updated or left alone; safe to rerun.

For each chunk of ``batch_size`` records (:mod:`deyel_provider.load.sources`), one search ``key=in:v1;v2;...``
(documented operator; split where the query would pass ``max_search_length`` characters) returns the
instances that exist, with their values and ``dtLastUpdate``. Then each record is:

- **created** (POST) when no instance has its key (modes ``upsert`` and ``insert``), proven so: an ``in``
  search that found nothing is confirmed with ``eq``, and the separator is proven before the first create
  (:meth:`~deyel_provider.load.matching.ChunkMatcher.match`; a wrong one is a :class:`DeyelConfigError`
  naming ``in_separator``);
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
and paces; :mod:`deyel_provider.load.pipeline`). Memory holds about two chunks of records.

The parts: :mod:`~deyel_provider.load.spec` (the options, checked), :mod:`~deyel_provider.load.sources` (the
records), :mod:`~deyel_provider.load.matching` (a chunk's instances), :mod:`~deyel_provider.load.writing`
(one record's create or update), :mod:`~deyel_provider.load.pipeline` (chunks run concurrently, counted).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from deyel_provider.exceptions import DeyelRejectedError
from deyel_provider.load.form_sample import SAMPLE_SIZE, sample_instances
from deyel_provider.load.gate import RequestGate
from deyel_provider.load.key_types import KEY_TYPES, KeyType, infer_key_type
from deyel_provider.load.lease import load_lease
from deyel_provider.load.matching import ChunkMatcher
from deyel_provider.load.pipeline import Tally, run_chunks
from deyel_provider.load.rejects import RejectsFile
from deyel_provider.load.sources import Source, check_keys
from deyel_provider.load.spec import MODES, LoadSpec, RejectsSpec, SourceSpec, check_field_name, upsert_specs
from deyel_provider.load.values import field_kind
from deyel_provider.load.writing import CREATED, UNCHANGED, UPDATED, RecordWriter

if TYPE_CHECKING:
    from deyel_provider.hooks.deyel import DeyelHook

__all__ = ["MODES", "UpsertResult", "check_field_name", "key_type_of", "load_records", "upsert"]

log = logging.getLogger(__name__)


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
    hook: DeyelHook, source: SourceSpec, load: LoadSpec, rejects: RejectsSpec | None = None
) -> UpsertResult:
    """Load ``source`` into ``load.form``, matching records to instances on ``load.key`` (see the module
    docstring); the specs (:mod:`deyel_provider.load.spec`) say each option's meaning and checked it.

    :param hook: the Deyel connection to write through.
    :param source: where the records are, and the bounds of a record and a batch.
    :param load: the form, the key, the mode and fields, the search's bounds, concurrency, the lease's wait.
    :param rejects: where to publish the rejects and how many are tolerated (default: none, unpublished).
    """
    started = time.monotonic()
    rejects = rejects if rejects is not None else RejectsSpec()
    from deyel_provider.hooks.deyel import instances_endpoint

    form, key = load.form, load.key
    endpoint = instances_endpoint(form)
    concurrency = load.concurrency()
    records = Source(source)
    sink: RejectsFile | None = None
    try:
        # Before any request (the key type's sample too): a sample or search read before another load's
        # creates, or before a user clears the form, is stale once this load gets the lease.
        with load_lease(hook.config, form, timeout=load.lock_timeout) as lease:
            sample: list[dict[str, Any]] | None = None
            declared = load.declared_key_type
            if declared:
                compared: KeyType = declared
            else:
                compared, sample = key_type_of(hook, form, endpoint, key, records)
            total = check_keys(records, key, compared)
            log.info(
                "loading %d records of %s into %s (key %s, mode %s)",
                total,
                records.name,
                form,
                key,
                load.mode,
            )
            # Inside the try: a loader that cannot start (a connection's bad paging) leaves no temporary file.
            sink = (
                RejectsFile(rejects.rejects, rejects.rejects_conn_id) if rejects.rejects is not None else None
            )
            gate = RequestGate(hook, concurrency, lease)
            matcher = ChunkMatcher(hook, load, compared, endpoint, gate, sample)
            writer = RecordWriter(hook, load, matcher, gate)
            tally = Tally(sink, started)  # the key check counts too
            chunks = records.chunks(load.batch_size)
            run_chunks(chunks, matcher, writer, concurrency, tally, load.progress_interval)
    except BaseException:
        if sink is not None:
            sink.discard()
        raise
    path = sink.publish() if sink is not None else None
    return _finish(tally, records, form, rejects.max_rejects, path)


def load_records(hook: DeyelHook, form: str, source: Any, key: str, **options: Any) -> UpsertResult:
    """:func:`upsert` with the operator's flat options (``batch_size=10``, ``rejects=...``): for scripts and
    tests (:func:`~deyel_provider.load.spec.upsert_specs` builds the specs)."""
    return upsert(hook, *upsert_specs(form, source, key, **options))


def _finish(tally: Tally, records: Source, form: str, max_rejects: int, path: str | None) -> UpsertResult:
    """The load's result, logged; a :class:`DeyelRejectedError` past ``max_rejects``."""
    counts = tally.counts
    result = UpsertResult(
        created=counts[CREATED],
        updated=counts[UPDATED],
        unchanged=counts[UNCHANGED],
        rejected=tally.rejected,
        seconds=round(time.monotonic() - tally.started, 3),
        records=sum(counts.values()) + tally.rejected,
        rejects_path=path,
    )
    log.info(
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
            f"{where}; every other record was written. First: {tally.first_reject}"
        )
    return result


def key_type_of(
    hook: DeyelHook, form: str, endpoint: str, key: str, records: Source
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
    log.info("%s: keys of %s compared as %s: %s (pass key_type to say otherwise)", form, key, found, why)
    return found, sample
