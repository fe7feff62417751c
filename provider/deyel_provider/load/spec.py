"""What a load is asked to do, validated once: where the records are (:class:`SourceSpec`), how they are
matched and written (:class:`LoadSpec`) and where the rejects go (:class:`RejectsSpec`).

The operator's flat, templated arguments grouped by job; each group checks its values when it is built, and
its errors name the operator's argument (``batch_size``, ``max_rejects``...), which is what a user fixes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.http.concurrency import Concurrency, Workers
from deyel_provider.load.key_search import HELD_PER_KEY, MAX_BATCH, MAX_MATCHES_PER_KEY, MAX_SEARCH_LENGTH
from deyel_provider.load.key_types import KeyType, check_key_type
from deyel_provider.load.lease import DEFAULT_LOCK_TIMEOUT
from deyel_provider.load.values import SERVER_KEYS

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

MODES: tuple[str, ...] = ("upsert", "insert", "update")
#: Default ``max_record_bytes``: far above a form instance's fields (a few KB; a grid of hundreds of rows).
DEFAULT_MAX_RECORD_BYTES = 1 << 20
#: Default ``max_batch_bytes``: the default ``max_response_bytes``, which a batch's search answer must fit.
DEFAULT_MAX_BATCH_BYTES = 16 << 20


def check_field_name(what: str, name: Any) -> None:
    """A field identifier that can be put in a search clause (no ``,``, ``=`` or ``:``)."""
    if not isinstance(name, str) or not name.strip() or any(c in name for c in ",=:") or name in SERVER_KEYS:
        raise DeyelConfigError(f"{what} must name a field of the form, such as 'cdCustomer'; got {name!r}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_byte_limits(max_record_bytes: Any, max_batch_bytes: Any) -> None:
    """``max_record_bytes`` and ``max_batch_bytes``: whole numbers of bytes, a record within a batch."""
    for name, value in (("max_record_bytes", max_record_bytes), ("max_batch_bytes", max_batch_bytes)):
        if not _whole(value) or not 1 <= value <= 1 << 40:
            raise DeyelConfigError(f"{name} must be a whole number of bytes, 1 to 2**40; got {value!r}")
    if max_record_bytes > max_batch_bytes:
        raise DeyelConfigError(
            f"max_record_bytes ({max_record_bytes}) must not pass max_batch_bytes ({max_batch_bytes}): "
            f"a batch holds at least one record"
        )


@dataclass(frozen=True)
class SourceSpec:
    """Where the records are (:class:`~deyel_provider.load.sources.Source`) and the bounds of reading them.

    ``source``: a path or URL of a JSON Lines, CSV or Parquet file, an ``ObjectStoragePath``, or a list of
    dicts; ``source_format``: ``jsonl``, ``csv`` or ``parquet`` (default: from the suffix).
    """

    source: Any
    source_format: str | None = None
    source_conn_id: str | None = None
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES

    def __post_init__(self) -> None:
        check_byte_limits(self.max_record_bytes, self.max_batch_bytes)


@dataclass(frozen=True)
class LoadSpec:
    """Which form, how records are matched to its instances (``key``, ``key_type``, the search's bounds) and
    written (``mode``, ``fields``, concurrency, the lease's wait). ``key_type`` is kept as checked
    (``number``, ``text`` or None: inferred by the load)."""

    form: str
    key: str
    fields: Sequence[str] | None = None
    mode: str = "upsert"
    key_type: str | None = None
    batch_size: int = 100
    max_search_length: int = MAX_SEARCH_LENGTH
    in_separator: str | None = None
    max_workers: int | str = 1
    max_workers_ceiling: int = 8
    max_matches_per_key: int = MAX_MATCHES_PER_KEY
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    progress_interval: float = 30.0
    #: max_workers and max_workers_ceiling, checked (built by __post_init__).
    workers: Workers = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DeyelConfigError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        check_field_name("key", self.key)
        fields = self.fields
        if fields is not None:
            if isinstance(fields, str) or not isinstance(fields, Sequence):
                raise DeyelConfigError(f"fields must be a list of field identifiers, got {fields!r}")
            for name in fields:
                check_field_name("fields", name)
            object.__setattr__(self, "fields", tuple(fields))
        if not _whole(self.batch_size) or not 1 <= self.batch_size <= MAX_BATCH:
            raise DeyelConfigError(
                f"batch_size must be a whole number from 1 to {MAX_BATCH}, got {self.batch_size!r}"
            )
        most = self.max_matches_per_key
        if not _whole(most) or most < HELD_PER_KEY:
            raise DeyelConfigError(
                f"max_matches_per_key must be a whole number >= {HELD_PER_KEY}, got {most!r}"
            )
        separator = self.in_separator
        if separator is not None and (not separator or not isinstance(separator, str)):
            raise DeyelConfigError("in_separator must be a non-empty string (Deyel's is assumed to be ';')")
        if self.progress_interval <= 0:
            raise DeyelConfigError(f"progress_interval must be > 0 seconds, got {self.progress_interval!r}")
        object.__setattr__(self, "key_type", check_key_type(self.key_type))
        timeout = self.lock_timeout
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 <= timeout < math.inf:
            raise DeyelConfigError(f"lock_timeout must be a number of seconds >= 0, got {timeout!r}")
        # Checked once, here (its errors name both settings); each run's Concurrency takes it as is.
        object.__setattr__(self, "workers", Workers(self.max_workers, self.max_workers_ceiling))

    @property
    def declared_key_type(self) -> KeyType | None:
        """``key_type`` as a key type (checked when the spec was built), or None: inferred by the load."""
        return check_key_type(self.key_type)

    @property
    def written_fields(self) -> list[str] | None:
        """The fields compared and written besides the key; None: each record's own."""
        return [f for f in self.fields if f != self.key] if self.fields is not None else None

    def concurrency(self) -> Concurrency:
        """A fresh concurrency control for one run of the load."""
        return Concurrency(self.workers)


@dataclass(frozen=True)
class RejectsSpec:
    """Where the rejects are published as JSON Lines (None: only logged and counted), and how many a load
    tolerates before it fails (after writing every other record)."""

    rejects: str | ObjectStoragePath | None = None
    rejects_conn_id: str | None = None
    max_rejects: int = 0

    def __post_init__(self) -> None:
        if not _whole(self.max_rejects) or self.max_rejects < 0:
            raise DeyelConfigError(f"max_rejects must be a whole number >= 0, got {self.max_rejects!r}")


def upsert_specs(
    form: str, source: Any, key: str, **options: Any
) -> tuple[SourceSpec, LoadSpec, RejectsSpec]:
    """The three specs of a load from the operator's flat options (``batch_size=10``, ``rejects=...``), each
    option given to the spec that has a field of its name; an unknown one is a ``TypeError``. For scripts
    and tests: the operator builds its specs itself."""
    given = dict(options)
    owned: dict[type, dict[str, Any]] = {}
    for spec in (LoadSpec, RejectsSpec, SourceSpec):
        names = {field.name for field in dataclasses.fields(spec)}
        owned[spec] = {name: given.pop(name) for name in list(given) if name in names}
    if given:
        raise TypeError(f"unknown load options: {sorted(given)}")
    load = LoadSpec(form, key, **owned[LoadSpec])
    rejects = RejectsSpec(**owned[RejectsSpec])
    return SourceSpec(source, **owned[SourceSpec]), load, rejects
