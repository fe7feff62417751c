"""Finding the instances that hold given key values: Deyel's ``in`` operator in batches, within a length cap.

``search=key=in:v1;v2;...`` (documented operator; ``;`` separates the values, assumed and configurable) finds
a batch's instances in one request. A server refuses request lines past a limit (many accept 8 KiB of
headers, Tomcat's default), so a batch is split where its encoded ``search`` value would pass
``max_search_length``. A value holding the separator is looked up alone with ``eq`` (a comma, which starts
another filter, is refused before: :func:`~deyel_provider.sources.check_keys`). Matches are checked on the
client too: an instance without the key, or whose key is not a value asked for, means the server did not
apply the search, a typed error before any write. Both sides go through one normalising function
(:func:`~deyel_provider.key_types.normalise`): the keys searched are canonical texts of the key's type
(``7`` for a numeric ``"007"``) and each instance's key is normalised the same way before it is matched.

A key is "missing" (then created) only when the search is proven complete: the pages are walked by
:class:`~deyel_provider.page_walker.PageWalker`, which ends a listing only on proof (a page shorter than
asked is not one by itself: a server that caps pages, or drops instances after paging, sends short pages
too; a count header equal to a short page is not one either), so a search cut short fails typed before any
write instead of creating a duplicate.

A wrong separator makes every ``in`` search match nothing (the server reads ``a;b`` as one value), so every
record would be created again on every run. Two checks keep that from writing (the load asks for them):
:meth:`KeySearch.prove_separator` searches, with ``in``, key values of instances known to exist, and
``find(..., confirm_absent=True)`` searches with ``eq`` the last missing key of each ``in`` clause of two or
more keys that found fewer keys than it asked (none: a wrong separator; some: a server that applies only the
first values of an ``in``). Either failing is a :class:`DeyelConfigError` naming ``in_separator``, before any
write; a 400 to the proof's ``in`` (a numeric key field refusing the values read as one text) too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from deyel_provider.exceptions import (
    DeyelBadResponseError,
    DeyelConfigError,
    DeyelIncompleteError,
    DeyelRequestError,
)
from deyel_provider.instance_ids import DEFAULT_ID_FIELD, instance_id, missing_id
from deyel_provider.key_types import KeyType, NotAKey, normalise
from deyel_provider.page_walker import PageWalker
from deyel_provider.pagination import Page, Paging, parse_page

if TYPE_CHECKING:
    import requests

#: The most encoded characters of one ``search`` value: the request line then stays far below the 8 KiB of
#: headers many servers accept (Tomcat's default), Authorization included.
MAX_SEARCH_LENGTH = 4000
#: The assumed server cap on a page (``deyel-api.md``): the largest page asked for.
MAX_BATCH = 1000


class KeySearch:
    """The instances of a form that have given values of ``key``.

    :param get: makes one authenticated GET (endpoint or next-page URL, query) and returns the response.
    :param paging: the connection's paging, used when a search's matches fill a page.
    :param separator: separator of the values of the ``in`` operator.
    :param max_search_length: the most encoded characters of one ``search`` value.
    :param id_field: where listings hold an instance's id (the connection's ``id_field``).
    :param key_type: how key values compare (:mod:`~deyel_provider.key_types`): the keys given to
        :meth:`find` are canonical texts of that type, and each instance's key is normalised the same way
        before it is matched (an instance holding ``7``, ``7.0`` or ``"7"`` answers the key ``"7"``).
    """

    def __init__(
        self,
        form: str,
        endpoint: str,
        key: str,
        *,
        paging: Paging,
        get: Callable[[str, dict[str, Any] | None], requests.Response],
        separator: str = ";",
        max_search_length: int = MAX_SEARCH_LENGTH,
        id_field: str = DEFAULT_ID_FIELD,
        key_type: KeyType = "text",
    ) -> None:
        self._id_field = id_field
        self.key_type = key_type
        self.form = form
        self.key = key
        self._endpoint = endpoint
        self._paging = paging
        self._get = get
        self._separator = separator
        self._max_length = max_search_length
        #: Whether an ``in`` clause of two or more values matched instances (which proves the separator).
        self.separator_seen = False
        #: Decides when a search's listing has ended; learns the server's cap across the searches of a load.
        self._walker = PageWalker(paging, id_field=id_field)

    def find(self, keys: list[str], *, confirm_absent: bool = False) -> dict[str, list[dict[str, Any]]]:
        """Each key value with the instances that hold it (none, one, or several: duplicates in Deyel).

        An instance the search returns without the key, or with a key not asked for, is a
        :class:`DeyelBadResponseError` before anything is written: dropping it would count its record as
        missing and create it a second time. With ``confirm_absent``, an ``in`` clause of two or more keys
        that finds fewer keys than it asked is confirmed by an ``eq`` search of its last missing key (one
        request more): an instance found then is a :class:`DeyelConfigError` naming ``in_separator``.
        """
        found: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
        for clause, expected in self.clauses(keys):
            try:
                matches = self._search(clause, expected, found)
            except DeyelRequestError as refused:
                if expected > 1 and self.key_type == "number":
                    raise self._in_refused(clause, refused) from refused
                raise
            held = {str(self.canonical(instance.get(self.key))) for instance in matches}
            if expected > 1 and matches:
                # Instances matched by an in clause of two or more values: the server split them.
                self.separator_seen = True
            if expected > 1 and confirm_absent and len(held) < expected:
                self._confirm_missing(clause, held)
            for instance in matches:
                found[str(self.canonical(instance.get(self.key)))].append(instance)
        return found

    def canonical(self, value: Any) -> str | None:
        """A key value as the keys are compared; None when missing or not of the key's type."""
        try:
            return normalise(value, self.key_type)
        except NotAKey:
            return None

    def _confirm_missing(self, clause: str, held: set[str]) -> None:
        """An ``in`` clause found fewer keys than it asked: its last missing key, searched with ``eq``, must
        match nothing too.

        The last: a server that applies only the first values of an ``in`` (a bound on its lists) misses
        the last ones, and a wrong separator (the values read as one) misses them all. One request per
        clause with a missing key; a rerun that finds every key makes none.
        """
        values = clause[len(f"{self.key}=in:") :].split(self._separator)
        last = next(v for v in reversed(values) if v not in held)
        eq = f"{self.key}=eq:{last}"
        if not self._search(eq, 1, {last: None}):
            return
        if held:
            raise DeyelConfigError(
                f"searching {self.form} by {self.key}: {clause[:80]!r} found {len(held)} of its "
                f"{len(values)} values, but {eq[:80]!r} found an instance the in search missed, so this "
                f"server's 'in' applies only part of the values (or does not separate them with "
                f"{self._separator!r}: in_separator); every missing record would be created again. Lower "
                f"batch_size (or max_search_length) below the server's bound on 'in' lists, or fix the "
                f"connection's in_separator; nothing of this batch was written"
            )
        raise self._wrong_separator(f"{clause[:80]!r} matched no instance, but {eq[:80]!r} matched one")

    def prove_separator(self, sample: list[dict[str, Any]]) -> bool:
        """Search, with one ``in`` clause, the key values of instances known to exist (``sample``).

        Two distinct plain values of the sample are searched (the one twice if the sample has only one: a
        made-up value would be of the wrong type for a numeric or date key, a 400): both (or the one) must
        be found, else a :class:`DeyelConfigError` naming
        ``in_separator``. Returns False, with no request, when the sample holds no plain key value (an empty
        form: nothing a wrong separator could duplicate yet).
        """
        values: list[str] = []
        for instance in sample:
            text = self.canonical(instance.get(self.key))
            if text and text not in values and self._separator not in text and "," not in text:
                values.append(text)
        values = values[:2]
        if not values:
            return False
        asked = values if len(values) == 2 else [values[0], values[0]]
        clause = f"{self.key}=in:" + self._separator.join(asked)
        try:
            matches = self._search(clause, len(asked), dict.fromkeys(asked))
        except DeyelRequestError as refused:
            raise self._in_refused(clause, refused) from refused
        held = {str(self.canonical(i.get(self.key))) for i in matches}
        if set(values) <= held:
            self.separator_seen = True
        else:
            shown = ", ".join(repr(v[:40]) for v in values)
            raise self._wrong_separator(
                f"{clause[:80]!r} did not find the existing instances holding {self.key} {shown}"
            )
        return True

    def _in_refused(self, clause: str, refused: DeyelRequestError) -> DeyelConfigError:
        """A 4xx to an ``in`` search of a numeric key: a wrong separator makes its values one text, which a
        number field refuses (Deyel answers 400), so it is named as such, with the server's answer."""
        return self._wrong_separator(f"the server refused {clause[:80]!r} ({refused})")

    def _wrong_separator(self, seen: str) -> DeyelConfigError:
        return DeyelConfigError(
            f"searching {self.form} by {self.key}: {seen}, so this server's 'in' does not separate values "
            f"with {self._separator!r}; every record would be created again. Set the connection's "
            f"in_separator to the one it uses (deyel-probe reports the separator that works); nothing of "
            f"this batch was written"
        )

    def _not_applied(self, clause: str, instance: dict[str, Any], value: Any) -> DeyelBadResponseError:
        what = (
            f"came without {self.key}"
            if value is None
            else f"has {self.key}={str(value)[:80]!r}, a value not asked for"
        )
        ident = instance_id(instance, self._id_field)
        return DeyelBadResponseError(
            f"searching {self.form} with {clause[:80]!r}: instance {ident} {what}, "
            f"so the server did not apply the search as sent (a listing without field values, a filter "
            f"ignored, another spelling or case of the key); records it cannot match are not written. Check "
            f"that {self.key!r} is a field of the form, key_type (now {self.key_type!r}: a number field "
            f"needs 'number'), and in_separator (or batch_size=1, one eq search per record, for a server "
            f"without 'in')",
            method="GET",
            path=self._endpoint,
        )

    def clauses(self, keys: list[str]) -> list[tuple[str, int]]:
        """Search clauses covering ``keys``: ``in`` groups within the length cap, ``eq`` for the rest.

        Keys holding a comma never get here (:func:`~deyel_provider.sources.check_keys` refuses them).
        """
        clauses: list[tuple[str, int]] = []
        group: list[str] = []
        head = f"{self.key}=in:"
        budget = self._max_length - len(quote(head, safe=""))
        used = 0

        def close() -> None:
            if len(group) == 1:
                clauses.append((f"{self.key}=eq:{group[0]}", 1))
            elif group:
                clauses.append((head + self._separator.join(group), len(group)))

        for text in keys:
            # A value holding the separator is looked up alone.
            if self._separator in text:
                clauses.append((f"{self.key}=eq:{text}", 1))
                continue
            size = len(quote(text + self._separator, safe=""))
            if group and used + size > budget:
                close()
                group, used = [], 0
            group.append(text)
            used += size
        close()
        return clauses

    def _search(self, clause: str, expected: int, asked: dict[str, Any]) -> list[dict[str, Any]]:
        """Every instance the clause matches, through as many pages as it takes to prove the end.

        The page size asked is one more than can match, so on a server that serves it a page holding every
        match is short. A short page ends the search only on the walker's proof (the server proved it sends
        pages of at least that size in full, or a total shown to count the search agrees); otherwise the
        search goes on in pages of the short one's size up to an empty page: one request more, never a
        missed instance (which the load would then create a second time). Each page's instances are
        checked against the keys ``asked`` before the next page is asked for: a search the server did not
        apply is told as such, not as a paging problem.
        """
        paging = self._paging
        size = min(expected + 1, MAX_BATCH)

        def page(index: int, count: int) -> Page:
            return parse_page(
                self._get(self._endpoint, {"search": clause, **paging.params_for(index, count)}), paging
            )

        def follow(url: str) -> Page:
            return parse_page(self._get(url, None), paging)

        instances: dict[str, dict[str, Any]] = {}
        # A skipped instance would be created a second time: an order that changes between pages is refused.
        for answer in self._walker.walk(page(0, size), size, page, follow, stable_order=True):
            for instance in answer.records:
                ident = instance_id(instance, self._id_field)
                if ident is None:
                    raise DeyelBadResponseError(
                        f"{self.form}: {missing_id(self._id_field)}", method="GET", path=self._endpoint
                    )
                value = instance.get(self.key)
                if self.canonical(value) not in asked:
                    raise self._not_applied(clause, instance, value)
                instances[ident] = instance
        total = self._walker.last_total
        if total is not None and len(instances) < total:
            raise DeyelIncompleteError(
                f"searching {self.form} by {self.key}: the {paging.total_header} header says "
                f"{total} instances match, but the pages held {len(instances)} and then ended: the "
                f"header does not count the search (it counts the whole form?). Set the connection's "
                f"total_header to none; the load then proves a search's end by its pages alone"
            )
        return list(instances.values())
