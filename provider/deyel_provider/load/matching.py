"""Matching a chunk of records with the instances that have their keys: one key search per chunk, and the
proof that an absent key is absent (see :mod:`deyel_provider.load.key_search`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deyel_provider.api.instance_ids import server_keys
from deyel_provider.load.form_sample import SAMPLE_SIZE, sample_instances
from deyel_provider.load.key_search import KeySearch, SearchSettings
from deyel_provider.load.key_types import KeyType, normalise

if TYPE_CHECKING:
    from deyel_provider.hooks.deyel import DeyelHook
    from deyel_provider.load.gate import RequestGate
    from deyel_provider.load.records import Record
    from deyel_provider.load.spec import LoadSpec


class ChunkMatcher:
    """Finds each record's instances, a chunk at a time, through ``gate`` (one search per chunk).

    :param spec: the load (form, key, fields, mode, the search's bounds).
    :param key_type: how keys compare (declared or inferred).
    :param endpoint: the form's instances endpoint.
    :param sample: a few existing instances, if the key's type was inferred from them; else read before the
        first create, to prove the ``in`` separator.
    """

    def __init__(
        self,
        hook: DeyelHook,
        spec: LoadSpec,
        key_type: KeyType,
        endpoint: str,
        gate: RequestGate,
        sample: list[dict[str, Any]] | None = None,
    ) -> None:
        self.hook = hook
        self.key = spec.key
        self.fields = spec.written_fields
        self.creates = spec.mode != "update"
        self.key_type = key_type
        self.endpoint = endpoint
        self._gate = gate
        #: Where listings hold an instance's id (the connection's ``id_field``): the write's path.
        self.id_field = hook.config.id_field
        self._server_keys = server_keys(self.id_field)
        settings = SearchSettings(
            spec.form,
            spec.key,
            key_type=key_type,
            # None: the connection's (read here, inside the load: a bad connection leaves nothing behind).
            separator=spec.in_separator if spec.in_separator is not None else hook.config.in_separator,
            max_search_length=spec.max_search_length,
            id_field=self.id_field,
            max_matches_per_key=spec.max_matches_per_key,
        )
        self.search = KeySearch(
            settings, endpoint, paging=hook.paging(spec.batch_size), get=gate.get, redact=hook.redactor
        )
        #: Whether the ``in`` separator was checked (before the first create: a rerun that creates nothing
        #: costs no request for it).
        self._separator_checked = False
        #: A few existing instances (read for the key's type, else before the first create).
        self._sample = sample

    def compared(self, record: Record) -> list[str]:
        """The fields of ``record`` compared with its instance and written."""
        if self.fields is not None:
            return self.fields
        return [f for f in record.values if f != self.key and f not in self._server_keys]

    def match(self, chunk: list[Record]) -> list[tuple[Record, list[dict[str, Any]]]]:
        """Each record of the chunk with the instances that have its key.

        A key is taken as absent (then created) only when proven so: an ``in`` clause that matched nothing
        is confirmed with ``eq``, and before the load's first create the separator is proven on instances
        that exist (see :mod:`deyel_provider.load.key_search`). Chunks are matched one at a time, so the
        proof runs once.
        """
        # check_keys normalised every key already: none is missing or of another type here.
        keys = [normalise(record.values[self.key], self.key_type) or "" for record in chunk]
        # Only what the writer reads of each instance is held (its other fields may be large).
        compared = {field for record in chunk for field in self.compared(record)}
        found = self.search.find(keys, confirm_absent=self.creates, keep=compared)
        # Once, before the first create; no request when an in clause of this load already found instances.
        if self.creates and not self._separator_checked and any(not found[k] for k in keys):
            self._separator_checked = True
            if not self.search.separator_seen:
                if self._sample is None:  # not read for the key's type
                    self._sample = sample_instances(
                        self._gate.get, self.endpoint, self.hook.paging(SAMPLE_SIZE)
                    )
                # False: no instance has the key yet (an empty form): the eq confirmations stand alone.
                self.search.prove_separator(self._sample)
        return [(record, found[k]) for record, k in zip(chunk, keys, strict=True)]
