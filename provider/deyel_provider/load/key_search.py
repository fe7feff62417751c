"""Finding the instances that hold given key values: Deyel's ``in`` operator in batches, within a length cap.

``search=key=in:v1;v2;...`` (documented operator; ``;`` separates the values, assumed and configurable) finds
a batch's instances in one request. A server refuses request lines past a limit (many accept 8 KiB of
headers, Tomcat's default), so a batch is split where its encoded ``search`` value would pass
``max_search_length``. A value holding the separator is looked up alone with ``eq`` (a comma, which starts
another filter, is refused before: :func:`~deyel_provider.load.sources.check_keys`). Matches are checked on
the
client too: an instance without the key, or whose key is not a value asked for, means the server did not
apply the search, a typed error before any write. Both sides go through one normalising function
(:func:`~deyel_provider.load.key_types.normalise`): the keys searched are canonical texts of the key's type
(``7`` for a numeric ``"007"``) and each instance's key is normalised the same way before it is matched.

A key is "missing" (then created) only when the search is proven complete: the pages are walked by
:class:`~deyel_provider.api.page_walker.PageWalker`, which ends a listing only on proof (a page shorter than
asked is not one by itself: a server that caps pages, or drops instances after paging, sends short pages
too; a count header equal to a short page is not one either), so a search cut short fails typed before any
write instead of creating a duplicate.

A search is bounded by what its batch can use (a hostile or broken server may page without end): each page
is checked as it comes; at most :data:`HELD_PER_KEY` instances are kept per key (two already make the
record a reject: the key names more than one instance), the search stops as soon as every key it asked for
holds that many, and it reads at most ``max_matches_per_key`` distinct instances per key asked for (default
:data:`MAX_MATCHES_PER_KEY`), in as many pages plus the walker's bound on runs of repeats: past either, a
:class:`DeyelIncompleteError` naming the form and the bound, before anything of the batch is written.

A wrong separator makes every ``in`` search match nothing (the server reads ``a;b`` as one value), so every
record would be created again on every run. Two checks keep that from writing (the load asks for them):
:meth:`KeySearch.prove_separator` searches, with ``in``, key values of instances known to exist, and
``find(..., confirm_absent=True)`` searches with ``eq`` the last missing key of each ``in`` clause of two or
more keys that found fewer keys than it asked (none: a wrong separator; some: a server that applies only the
first values of an ``in``). Either failing is a :class:`DeyelConfigError` naming ``in_separator``, before any
write; a 400 to the proof's ``in`` (a numeric key field refusing the values read as one text) too.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from deyel_provider.api.instance_ids import (
    DEFAULT_ID_FIELD,
    LINKS,
    MAX_ID_LENGTH,
    id_digest,
    instance_id,
    missing_id,
)
from deyel_provider.api.page_walker import MAX_REPEAT_PAGES, PageWalker
from deyel_provider.api.pagination import Page, Paging, parse_page
from deyel_provider.exceptions import (
    DeyelBadResponseError,
    DeyelConfigError,
    DeyelIncompleteError,
    DeyelRequestError,
)
from deyel_provider.http.redact import Redactor, quoted
from deyel_provider.load.key_types import KeyType, NotAKey, normalise

if TYPE_CHECKING:
    import requests

#: The most encoded characters of one ``search`` value: the request line then stays far below the 8 KiB of
#: headers many servers accept (Tomcat's default), Authorization included.
MAX_SEARCH_LENGTH = 4000
#: The assumed server cap on a page (``deyel-api.md``): the largest page asked for.
MAX_BATCH = 1000
#: Instances kept per key: one is updated, two make the record a reject (the key names several instances).
HELD_PER_KEY = 2
#: Default of ``max_matches_per_key``: a search of N keys reads at most N times this many instances. A form
#: without duplicates answers N at most; the margin is for keys that name several instances.
MAX_MATCHES_PER_KEY = 10


@dataclass(frozen=True)
class SearchSettings:
    """What a key search is bound to: the form, its key and how key values compare, and the search's bounds.

    :param separator: separator of the values of the ``in`` operator.
    :param max_search_length: the most encoded characters of one ``search`` value.
    :param id_field: where listings hold an instance's id (the connection's ``id_field``).
    :param key_type: how key values compare (:mod:`~deyel_provider.load.key_types`): the keys given to
        :meth:`KeySearch.find` are canonical texts of that type, and each instance's key is normalised the
        same way before it is matched (an instance holding ``7``, ``7.0`` or ``"7"`` answers the key ``"7"``).
    :param max_matches_per_key: a search of N keys reads at most N times this many instances, then fails
        typed (see the module docstring).
    """

    form: str
    key: str
    key_type: KeyType = "text"
    separator: str = ";"
    max_search_length: int = MAX_SEARCH_LENGTH
    id_field: str = DEFAULT_ID_FIELD
    max_matches_per_key: int = MAX_MATCHES_PER_KEY


class KeySearch:
    """The instances of a form that have given values of ``key``.

    :param settings: the form, key, key type and bounds (:class:`SearchSettings`).
    :param endpoint: the form's instances endpoint.
    :param paging: the connection's paging, used when a search's matches fill a page.
    :param get: makes one authenticated GET (endpoint or next-page URL, query) and returns the response.
    :param redact: the connection's redactor: server-supplied text (ids, key values) goes through it before
        it is quoted in a message.
    """

    def __init__(
        self,
        settings: SearchSettings,
        endpoint: str,
        *,
        paging: Paging,
        get: Callable[[str, dict[str, Any] | None], requests.Response],
        redact: Redactor | None = None,
    ) -> None:
        self._id_field = settings.id_field
        self._max_per_key = settings.max_matches_per_key
        self._redact = redact or Redactor()
        self.key_type = settings.key_type
        self.form = settings.form
        self.key = settings.key
        self._endpoint = endpoint
        self._paging = paging
        self._get = get
        self._separator = settings.separator
        self._max_length = settings.max_search_length
        #: Whether an ``in`` clause of two or more values matched instances (which proves the separator).
        self.separator_seen = False
        #: Decides when a search's listing has ended; learns the server's cap across the searches of a load.
        self._walker = PageWalker(paging, id_field=settings.id_field)

    def find(
        self, keys: list[str], *, confirm_absent: bool = False, keep: Collection[str] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Each key value with the instances that hold it (none, one, or several: duplicates in Deyel).

        An instance the search returns without the key, or with a key not asked for, is a
        :class:`DeyelBadResponseError` before anything is written: dropping it would count its record as
        missing and create it a second time. With ``confirm_absent``, an ``in`` clause of two or more keys
        that finds fewer keys than it asked is confirmed by an ``eq`` search of its last missing key (one
        request more): an instance found then is a :class:`DeyelConfigError` naming ``in_separator``.
        With ``keep``, each instance returned holds only those fields, with the key, the id and
        ``dtLastUpdate`` (what a load compares and writes back): the rest of what the server sent is not held.
        """
        found: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
        for clause, asked in self.clauses(keys):
            try:
                matches = self._search(clause, asked, keep)
            except DeyelRequestError as refused:
                if len(asked) > 1 and self.key_type == "number":
                    raise self._in_refused(clause, refused) from refused
                raise
            if len(asked) > 1 and matches:
                # Instances matched by an in clause of two or more values: the server split them.
                self.separator_seen = True
            if len(asked) > 1 and confirm_absent and len(matches) < len(asked):
                self._confirm_missing(clause, asked, set(matches))
            found.update(matches)
        return found

    def quoted(self, value: Any) -> str:
        """A server-supplied value as a message may quote it: redacted, then cut to :data:`MAX_QUOTED`."""
        return quoted(value, self._redact)

    def canonical(self, value: Any) -> str | None:
        """A key value as the keys are compared; None when missing or not of the key's type."""
        try:
            return normalise(value, self.key_type)
        except NotAKey:
            return None

    def _confirm_missing(self, clause: str, asked: list[str], held: set[str]) -> None:
        """An ``in`` clause found fewer keys than it asked: its last missing key, searched with ``eq``, must
        match nothing too.

        The last: a server that applies only the first values of an ``in`` (a bound on its lists) misses
        the last ones, and a wrong separator (the values read as one) misses them all. One request per
        clause with a missing key; a rerun that finds every key makes none.
        """
        last = next(v for v in reversed(asked) if v not in held)
        eq = f"{self.key}=eq:{last}"
        if not self._search(eq, [last], keep=()):
            return
        if held:
            raise DeyelConfigError(
                f"searching {self.form} by {self.key}: {self.quoted(clause)} found {len(held)} of its "
                f"{len(asked)} values, but {self.quoted(eq)} found an instance the in search missed, so "
                f"this server's 'in' applies only part of the values (or does not separate them with "
                f"{self._separator!r}: in_separator); every missing record would be created again. Lower "
                f"batch_size (or max_search_length) below the server's bound on 'in' lists, or fix the "
                f"connection's in_separator; nothing of this batch was written"
            )
        raise self._wrong_separator(
            f"{self.quoted(clause)} matched no instance, but {self.quoted(eq)} matched one"
        )

    def prove_separator(self, sample: list[dict[str, Any]]) -> bool:
        """Search, with one ``in`` clause, the key values of instances known to exist (``sample``).

        Two distinct plain values of the sample are searched (the one twice if the sample has only one: a
        made-up value would be of the wrong type for a numeric or date key, a 400): both (or the one) must
        be found, else a :class:`DeyelConfigError` naming ``in_separator``. Returns False, with no request,
        when the sample holds no plain key value (an empty form: nothing a wrong separator could duplicate
        yet).
        """
        values: list[str] = []
        for instance in sample:
            text = self.canonical(instance.get(self.key))
            if text and text not in values and self._separator not in text and "," not in text:
                values.append(text)
        values = values[:2]
        if not values:
            return False
        # One value is searched twice: a made-up second value could be refused by a number or date field.
        asked = values if len(values) == 2 else [values[0], values[0]]
        clause = f"{self.key}=in:" + self._separator.join(asked)
        try:
            held = set(self._search(clause, asked, keep=()))
        except DeyelRequestError as refused:
            raise self._in_refused(clause, refused) from refused
        if set(values) <= held:
            self.separator_seen = True
        else:
            shown = ", ".join(self.quoted(v) for v in values)
            raise self._wrong_separator(
                f"{self.quoted(clause)} did not find the existing instances holding {self.key} {shown}"
            )
        return True

    def _in_refused(self, clause: str, refused: DeyelRequestError) -> DeyelConfigError:
        """A 4xx to an ``in`` search of a numeric key: a wrong separator makes its values one text, which a
        number field refuses (Deyel answers 400), so it is named as such, with the server's answer."""
        return self._wrong_separator(f"the server refused {self.quoted(clause)} ({refused})")

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
            else f"has {self.key}={self.quoted(value)}, a value not asked for"
        )
        ident = self.quoted(instance_id(instance, self._id_field))
        return DeyelBadResponseError(
            f"searching {self.form} with {self.quoted(clause)}: instance {ident} {what}, "
            f"so the server did not apply the search as sent (a listing without field values, a filter "
            f"ignored, another spelling or case of the key); records it cannot match are not written. Check "
            f"that {self.key!r} is a field of the form, key_type (now {self.key_type!r}: a number field "
            f"needs 'number'), and in_separator (or batch_size=1, one eq search per record, for a server "
            f"without 'in')",
            method="GET",
            path=self._endpoint,
        )

    def clauses(self, keys: list[str]) -> list[tuple[str, list[str]]]:
        """Search clauses covering ``keys``, each with its keys: ``in`` groups within the length cap, ``eq``
        for the rest.

        Keys holding a comma never get here (:func:`~deyel_provider.load.sources.check_keys` refuses them).
        """
        clauses: list[tuple[str, list[str]]] = []
        group: list[str] = []
        head = f"{self.key}=in:"
        budget = self._max_length - len(quote(head, safe=""))
        used = 0

        def close() -> None:
            if len(group) == 1:
                clauses.append((f"{self.key}=eq:{group[0]}", group))
            elif group:
                clauses.append((head + self._separator.join(group), group))

        for text in keys:
            # A value holding the separator is looked up alone.
            if self._separator in text:
                clauses.append((f"{self.key}=eq:{text}", [text]))
                continue
            size = len(quote(text + self._separator, safe=""))
            if group and used + size > budget:
                close()
                group, used = [], 0
            group.append(text)
            used += size
        close()
        return clauses

    def _search(
        self, clause: str, asked: list[str], keep: Collection[str] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """The instances the clause matches by key (at most :data:`HELD_PER_KEY` each; keys matched by none
        left out), through as many pages as it takes to prove the end or to decide every key.

        The page size asked is one more than can match, so on a server that serves it a page holding every
        match is short. A short page ends the search only on the walker's proof (the server proved it sends
        pages of at least that size in full, or a total shown to count the search agrees); otherwise the
        search goes on in pages of the short one's size up to an empty page: one request more, never a
        missed instance (which the load would then create a second time). Each page's instances are
        checked against the keys ``asked`` before the next page is asked for: a search the server did not
        apply is told as such, not as a paging problem. The search stops early once every key asked holds
        :data:`HELD_PER_KEY` instances (each record is then a reject, whatever follows), and fails typed
        past ``expected`` times ``max_matches_per_key`` instances (a server paging without end). Its
        memory is bounded in bytes too: an id longer than
        :data:`~deyel_provider.api.instance_ids.MAX_ID_LENGTH`
        is refused typed, the ids seen are kept as 16-byte digests, and with ``keep`` each instance held is
        cut to the fields the load reads.
        """
        paging = self._paging
        expected = len(asked)
        size = min(expected + 1, MAX_BATCH)
        limit = expected * self._max_per_key
        wanted = set(asked)

        def page(index: int, count: int) -> Page:
            return parse_page(
                self._get(self._endpoint, {"search": clause, **paging.params_for(index, count)}), paging
            )

        def follow(url: str) -> Page:
            return parse_page(self._get(url, None), paging)

        held: dict[str, list[dict[str, Any]]] = {}
        seen: set[bytes] = set()  # digests of the ids: their length is the server's
        decided = 0  # keys holding HELD_PER_KEY instances
        # Each page before the end brings a new instance, but for runs of repeats the walker bounds: so a
        # search within its instances needs no more pages than this.
        most_pages = limit + MAX_REPEAT_PAGES + 2
        # A skipped instance would be created a second time: an order that changes between pages is refused.
        walk = self._walker.walk(page(0, size), size, page, follow, stable_order=True)
        for pages, answer in enumerate(walk, start=1):
            if pages > most_pages:
                raise self._too_many(clause, expected, f"{most_pages} pages")
            for instance in answer.records:
                ident = instance_id(instance, self._id_field)
                if ident is None:
                    raise DeyelBadResponseError(
                        f"{self.form}: {missing_id(self._id_field)}", method="GET", path=self._endpoint
                    )
                if len(ident) > MAX_ID_LENGTH:
                    raise self._long_id(clause, ident)
                value = instance.get(self.key)
                text = self.canonical(value)
                if text not in wanted:
                    raise self._not_applied(clause, instance, value)
                digest = id_digest(ident)
                if digest in seen:
                    continue  # a repeat of an earlier page (a server that shortens pages)
                seen.add(digest)
                if len(seen) > limit:
                    raise self._too_many(clause, expected, f"{limit} distinct instances")
                kept = held.setdefault(str(text), [])
                if len(kept) < HELD_PER_KEY:
                    kept.append(instance if keep is None else self._cut(instance, ident, keep))
                    decided += len(kept) == HELD_PER_KEY
            if decided == expected:
                return held  # every key names several instances: each record is a reject, whatever follows
        total = self._walker.last_total
        if total is not None and len(seen) < total:
            raise DeyelIncompleteError(
                f"searching {self.form} by {self.key}: the {paging.total_header} header says "
                f"{total} instances match, but the pages held {len(seen)} and then ended: the "
                f"header does not count the search (it counts the whole form?). Set the connection's "
                f"total_header to none; the load then proves a search's end by its pages alone"
            )
        return held

    def _cut(self, instance: dict[str, Any], ident: str, keep: Collection[str]) -> dict[str, Any]:
        """What a load reads of a matched instance: the ``keep`` fields, the key, the id, ``dtLastUpdate``."""
        names = {*keep, self.key, "dtLastUpdate"}
        cut = {name: instance[name] for name in names if name in instance and name != LINKS}
        if self._id_field == LINKS:
            cut[LINKS] = [{"rel": "self", "href": quote(ident, safe="")}]  # its id alone, not every link
        else:
            cut[self._id_field] = instance[self._id_field]
        return cut

    def _long_id(self, clause: str, ident: str) -> DeyelBadResponseError:
        return DeyelBadResponseError(
            f"searching {self.form} with {self.quoted(clause)}: an instance's id ({self.quoted(ident)}, "
            f"{len(ident)} characters) is longer than {MAX_ID_LENGTH} characters, the bound on an id "
            f"(Deyel's are short numbers): a broken or hostile answer, or the connection's id_field names a "
            f"key that is not the instance id. Nothing of this batch was written; check id_field",
            method="GET",
            path=self._endpoint,
        )

    def _too_many(self, clause: str, expected: int, bound: str) -> DeyelIncompleteError:
        return DeyelIncompleteError(
            f"searching {self.form} with {self.quoted(clause)}: more than {bound} for {expected} key(s) "
            f"(the bound: max_matches_per_key={self._max_per_key} instances per key asked), and the "
            f"pages had not ended: the server does not apply the search as sent (or pages without end), or "
            f"the form holds that many duplicates of these keys (each such record would be a reject). "
            f"Nothing of this batch was written; check the key and in_separator, or raise "
            f"max_matches_per_key if the duplicates are real"
        )
