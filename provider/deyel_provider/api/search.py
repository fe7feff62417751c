"""The ``search`` filter's shape, checked before the first request: ``field=op:value[,field=op:value...]``.

Deyel documents clauses separated by ``,`` (ANDed) and the operators ``eq neq like sw nsw ew new gt gte lt
lte in nin`` (``docs/deyel-api.md``). A server reads a clause it does not expect as part of the previous
clause's value: ``cdCountry=eq:AR;cdStatus=eq:OPEN`` asks for the country ``AR;cdStatus=eq:OPEN``, matches
nothing, and an extraction publishes an empty file with an Asset event. Those mistakes are a typed
:class:`~deyel_provider.exceptions.DeyelConfigError` here, before anything is read or written.

Values are not checked: they are the server's business (dates, numbers, the ``in`` separator), and a
value may hold any character, ``;`` included, as long as no clause follows it.
"""

from __future__ import annotations

import re

from deyel_provider.exceptions import DeyelConfigError

#: Deyel's documented search operators.
OPERATORS: frozenset[str] = frozenset(
    {"eq", "neq", "like", "sw", "nsw", "ew", "new", "gt", "gte", "lt", "lte", "in", "nin"}
)
_FIELD = r"[A-Za-z_][\w/.-]*"
# A comma starts a new clause only when "field=op:" follows (as the server splits), so a comma inside a
# value (an ``in`` list written with commas, a text) stays in it.
_CLAUSE_SPLIT = re.compile(rf",(?=\s*{_FIELD}=[A-Za-z]+:)")
_CLAUSE = re.compile(rf"\s*(?P<field>{_FIELD})\s*=\s*(?P<op>[A-Za-z]+):(?P<value>.*)", re.DOTALL)
# Another separator followed by a clause: a second clause the server would read as part of a value. Only
# "field=op:" with a KNOWN operator counts (any letter case), so a value such as "0;url=https://x" or a URL
# carrying "&next=https://..." stays one clause, as the server reads it. A comma counts only when spaces
# around '=' keep the server from splitting there (a plain ",field=op:" was split above).
_OPERATOR_ALTERNATION = "|".join(sorted(OPERATORS, key=len, reverse=True))
_WRONG_SEPARATOR = re.compile(
    rf"(?P<sep>[;&|,\r\n]|\s+and\s+|\s)\s*(?P<clause>{_FIELD}\s*=\s*(?:{_OPERATOR_ALTERNATION}):)",
    re.IGNORECASE,
)
_SEPARATOR_NAMES = {"\n": "a line break", "\r": "a line break", " ": "a space", "\t": "a tab"}


def check_search(search: str | None, *, parameter: str = "search") -> str | None:
    """Return ``search`` unchanged when its clauses have Deyel's shape; else a typed error naming the fix.

    :param search: the filter as the user wrote it (None or blank: no filter).
    :param parameter: the argument's name in messages (the user's, e.g. ``search``).
    :raises DeyelConfigError: a clause that is not ``field=op:value``, an unknown operator, or a clause
        joined to the one before by ``;``, ``&``, ``|``, ``and`` (any case), a line break or a space instead
        of ``,``, or by a ``,`` the server does not split at (spaces around ``=``).
    """
    if search is None or not str(search).strip():
        return search
    text = str(search)
    for part in _CLAUSE_SPLIT.split(text):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            raise DeyelConfigError(
                f"{parameter}={text!r}: the clause {part.strip()!r} is not field=operator:value "
                f"(e.g. cdCountry=eq:AR); separate clauses with ','"
            )
        op = match["op"].lower()
        if op not in OPERATORS:
            raise DeyelConfigError(
                f"{parameter}={text!r}: unknown operator {match['op']!r} in {part.strip()!r}; Deyel's "
                f"operators are {', '.join(sorted(OPERATORS))}"
            )
        wrong = _WRONG_SEPARATOR.search(match["value"])
        if wrong is not None:
            sep = wrong["sep"]
            separator = _SEPARATOR_NAMES.get(sep, repr(sep.strip() or sep))
            clause = re.sub(r"\s+", "", wrong["clause"])
            if sep == ",":
                hint = f"write that clause without spaces around '=' ({clause})"
            else:
                hint = "use , between clauses"
            raise DeyelConfigError(
                f"{parameter}={text!r}: {separator} joins the clause {wrong['clause']!r} to the value of "
                f"{match['field']}, and the server would read it as part of that value (matching nothing); "
                f"{hint} (e.g. {match['field']}={match['op']}:{match['value'][: wrong.start()]},{clause}...)"
            )
    return search
