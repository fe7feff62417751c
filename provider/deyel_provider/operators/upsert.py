"""DeyelUpsertOperator: records from a file or XCom into a form, matched on a key; safe to run again."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.http.concurrency import Workers
from deyel_provider.load.key_search import MAX_MATCHES_PER_KEY, MAX_SEARCH_LENGTH
from deyel_provider.load.key_types import check_key_type
from deyel_provider.load.lease import DEFAULT_LOCK_TIMEOUT
from deyel_provider.load.spec import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    MODES,
    LoadSpec,
    RejectsSpec,
    SourceSpec,
    check_field_name,
)
from deyel_provider.load.upsert import upsert

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath


class DeyelUpsertOperator(BaseOperator):
    """Load records into a Deyel form: create missing instances, update the ones that differ, skip the rest.

    Each record is matched to an instance by ``key`` (searched in batches with Deyel's ``in`` operator). A
    record without an instance is created; one whose compared fields differ is updated with a PATCH of those
    fields, under Deyel's ``dtLastUpdate`` lock (a 409 re-reads the instance and tries once more); one that
    already holds its values is not written. Rerunning the same source writes nothing; a create whose answer
    was lost is settled by searching its key, never replayed blindly. Records Deyel refuses (400 and its
    ``errors``) are rejects: listed in ``rejects``, and the task fails when there are more than
    ``max_rejects`` (after writing every other record). Bad input fails before anything is written: an
    unknown mode, a record without a key, two records with the same key (no last-wins rule; for a numeric
    key ``7`` and ``"007"`` are the same key), an unreadable source. One load of a form runs at a time: a
    second one waits for the first (``lock_timeout``), then finds what the first wrote.

    Returns ``{"created", "updated", "unchanged", "rejected", "seconds", "records", "rejects_path"}``.

    :param form: the target form's identifier, e.g. ``ERP_CUSTOMER`` (templated).
    :param source: where the records are: a JSON Lines, CSV or Parquet file (local path, URL of any fsspec
        protocol, or ``ObjectStoragePath``), or a list of dicts for small loads, e.g. a ``@task``'s output
        (templated).
    :param key: the field that names an instance, e.g. ``cdCustomer`` (templated).
    :param fields: the fields compared and written, besides the key; default: each record's own (templated).
    :param mode: ``upsert`` (create or update), ``insert`` (create missing instances, never update) or
        ``update`` (update existing ones; a record without an instance is a reject) (templated).
    :param max_workers: requests in flight, or ``"auto"``: grows while throughput grows, halves on a rate
        limit (429, ``REQUEST_LIMIT_EXCEEDED``).
    :param max_workers_ceiling: the most requests ``"auto"`` keeps in flight.
    :param max_rejects: rejects tolerated before the task fails.
    :param rejects: where to publish the rejects as JSON Lines, one per record with Deyel's ``errors``
        (published atomically, replacing an older file) (templated).
    :param batch_size: records matched by one search, at most 1000 (a server whose pages are smaller is
        paged through).
    :param max_search_length: the most encoded characters of one ``search`` value; a longer batch is split.
    :param in_separator: separator of the values of Deyel's ``in`` operator; default: the connection's
        ``in_separator`` extra (``;`` assumed, undocumented).
    :param key_type: how keys compare (templated): ``number`` (``7``, ``7.0``, ``"007"`` and ``"7.00"`` are
        one key, searched as ``7``; a non-number key is an error naming its record), ``text`` (exactly:
        ``"007"`` and ``"7"`` are two keys), or None: inferred from the key's prefix (``qt``/``nu`` number,
        ``cd``/``ds`` text), else from a listing of a few of the form's instances (numbers or texts; both is
        an error asking for ``key_type``), else, on an empty form, from the source (all numbers: number).
        The task log says which type was taken and why.
    :param source_format: ``jsonl``, ``csv`` or ``parquet``; default: from the file's suffix (templated).
    :param source_conn_id: Airflow connection of the source's object store, if it needs one.
    :param rejects_conn_id: Airflow connection of the rejects' object store, if it needs one.
    :param progress_interval: seconds between progress lines in the task log.
    :param lock_timeout: seconds to wait while another load of the same form (same Deyel server) runs: one
        load of a form at a time, so that two never both create a key (across hosts with the connection's
        ``cache=redis``, else across the processes of one host). Then ``DeyelBusyError``, nothing written;
        0: fail at once.
    :param max_matches_per_key: a key search of N records reads at most N times this many instances (then
        ``DeyelIncompleteError``, nothing of the batch written): bounds what a server that pages without
        end, or a form full of duplicates, costs. Raise it only for a form with that many duplicates of a
        key (each such record is a reject anyway).
    :param max_record_bytes: the most bytes of one source record (a JSON Lines line, a CSV record, a
        Parquet row's decoded values; default 1 MiB); a larger record, or a value nested deeper than 64
        levels, fails the task with ``DeyelSourceError`` naming its line or row, before any request.
    :param max_batch_bytes: the most bytes of the records of one batch (default 16 MiB: a batch ends before
        it would pass it) and of the Parquet rows decoded at once.
    :param token: the XCom value of a ``DeyelTokenOperator`` (templated, encrypted); see ``DeyelOperator``.
    :param deyel_conn_id: the ``deyel`` connection (templated).
    """

    template_fields: Sequence[str] = (
        "form",
        "source",
        "key",
        "fields",
        "mode",
        "key_type",
        "rejects",
        "source_format",
        "token",
        "deyel_conn_id",
    )

    def __init__(
        self,
        *,
        form: str,
        source: str | ObjectStoragePath | list[dict[str, Any]],
        key: str,
        fields: Sequence[str] | None = None,
        mode: str = "upsert",
        max_workers: int | str = 1,
        max_workers_ceiling: int = 8,
        max_rejects: int = 0,
        rejects: str | ObjectStoragePath | None = None,
        batch_size: int = 100,
        max_search_length: int = MAX_SEARCH_LENGTH,
        in_separator: str | None = None,
        key_type: str | None = None,
        source_format: str | None = None,
        source_conn_id: str | None = None,
        rejects_conn_id: str | None = None,
        progress_interval: float = 30.0,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        max_matches_per_key: int = MAX_MATCHES_PER_KEY,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        token: Any = None,
        deyel_conn_id: str = DeyelHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        # What can be checked at parse time is (templated values are checked again when the task runs).
        if isinstance(mode, str) and mode not in MODES and "{" not in mode:
            raise DeyelConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if isinstance(key, str) and "{" not in key:
            check_field_name("key", key)
        if not (isinstance(key_type, str) and "{" in key_type):
            check_key_type(key_type)
        Workers(max_workers, max_workers_ceiling)
        super().__init__(**kwargs)
        self.form = form
        self.source = source
        self.key = key
        self.fields = fields
        self.mode = mode
        self.max_workers = max_workers
        self.max_workers_ceiling = max_workers_ceiling
        self.max_rejects = max_rejects
        self.rejects = rejects
        self.batch_size = batch_size
        self.max_search_length = max_search_length
        self.in_separator = in_separator
        self.key_type = key_type
        self.source_format = source_format
        self.source_conn_id = source_conn_id
        self.rejects_conn_id = rejects_conn_id
        self.progress_interval = progress_interval
        self.lock_timeout = lock_timeout
        self.max_matches_per_key = max_matches_per_key
        self.max_record_bytes = max_record_bytes
        self.max_batch_bytes = max_batch_bytes
        self.token = token
        self.deyel_conn_id = deyel_conn_id

    @cached_property
    def hook(self) -> DeyelHook:
        return DeyelHook(deyel_conn_id=self.deyel_conn_id, token=self.token or None)

    def execute(self, context: Context) -> dict[str, Any]:
        # Checked here, once, with the templates rendered (in the order the load once checked them).
        load = LoadSpec(
            form=self.form,
            key=self.key,
            fields=self.fields or None,
            mode=self.mode,
            key_type=self.key_type or None,
            batch_size=self.batch_size,
            max_search_length=self.max_search_length,
            in_separator=self.in_separator,
            max_workers=self.max_workers,
            max_workers_ceiling=self.max_workers_ceiling,
            max_matches_per_key=self.max_matches_per_key,
            lock_timeout=self.lock_timeout,
            progress_interval=self.progress_interval,
        )
        rejects = RejectsSpec(
            rejects=self.rejects or None, rejects_conn_id=self.rejects_conn_id, max_rejects=self.max_rejects
        )
        source = SourceSpec(
            source=self.source,
            source_format=self.source_format or None,
            source_conn_id=self.source_conn_id,
            max_record_bytes=self.max_record_bytes,
            max_batch_bytes=self.max_batch_bytes,
        )
        return upsert(self.hook, source, load, rejects).as_dict()
