"""How a load compares key values: as the key field's type, numbers as numbers and text exactly.

Deyel has no unique constraint, so two source keys that Deyel stores as the same value (``7`` and ``"007"``
in a numeric field) would be two creates of one instance. Every place that compares keys (the duplicate check
of the source, the search clauses, mapping the server's instances back to records) goes through
:func:`normalise`, which gives one canonical text per value:

- ``number``: the value as an exact ``Decimal`` (no float rounding), written without leading zeros, trailing
  fractional zeros or exponent: ``7``, ``7.0``, ``"007"``, ``"7.00"`` and ``"7e0"`` are all ``"7"``; a value
  that is not a number is :class:`NotAKey`;
- ``text``: the value's text, compared exactly (``"007"`` and ``"7"`` are two keys).

The type is declared (``key_type``) or inferred by :func:`infer_key_type`: from the form's existing
instances (JSON numbers: number; texts: text, unless the prefix declares a number and every text is one, as
Deyel 8.0 sends numbers; both: a typed error asking to declare it), then from the key field's Hungarian
prefix (``qt``/``nu`` number, ``cd``/``ds`` text, as :mod:`deyel_provider.load.values` types fields), then
from
the source (every key a JSON number: number; otherwise text). A load
(:func:`~deyel_provider.load.upsert.key_type_of`) lists instances only when the prefix declares no type, so a
prefixed key costs no request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from deyel_provider.exceptions import DeyelConfigError
from deyel_provider.http.redact import Redactor, quoted
from deyel_provider.load.values import deyel_value, field_kind, text_of

KeyType = Literal["number", "text"]
KEY_TYPES: tuple[KeyType, ...] = ("number", "text")

# ASCII digits with an optional point and exponent: Decimal alone would also take "1_000", "NaN", "Infinity"
# and other scripts' digits (U+0667 Arabic-Indic seven, U+FF17 full-width seven), which a server may store
# or search as other texts.
_NUMERIC_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")

#: The most digits a numeric key may have (written out without exponent: 1e999999999 would be a GB of text).
_MAX_DIGITS = 1000
#: Integers below this are written by str() directly (the common case, twice as fast as through Decimal).
_FAST = 10**18


class NotAKey(ValueError):
    """A value that cannot be a key of that type (the caller names the record)."""


def is_number(value: Any) -> bool:
    """A JSON number (not a boolean)."""
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def as_decimal(value: Any) -> Decimal:
    """A number or numeric text as an exact ``Decimal``; anything else is :class:`NotAKey`."""
    if isinstance(value, float):
        value = repr(value)  # the float's shortest text: 0.1, not 0.1000000000000000055...; nan fails below
    elif is_number(value):
        value = Decimal(value)
    if isinstance(value, Decimal) and value.is_finite():
        return value
    if isinstance(value, str) and is_number_like(value):
        return Decimal(value)
    raise NotAKey(f"{str(value)[:80]!r} is not a number")


def is_number_like(text: str) -> bool:
    """Digits with an optional point and exponent (Deyel 8.0 sends numbers as such texts)."""
    return bool(_NUMERIC_TEXT.fullmatch(text))


def canonical_number(number: Decimal) -> str:
    """``number`` without leading zeros, trailing fractional zeros or exponent (``7``, ``12.5``, ``0``)."""
    if number.is_zero():
        return "0"  # 0e-5000 too: no digit to write out
    if abs(number.adjusted()) > _MAX_DIGITS:
        raise NotAKey(f"{number} has more than {_MAX_DIGITS} digits, which no key field holds")
    if number == number.to_integral_value():
        return str(int(number))
    # Not normalize(): it rounds to the context's 28 digits, and a key must keep every digit.
    return format(number, "f").rstrip("0")


def key_text(value: Any) -> str | None:
    """A key value as the text a search compares (``7`` and ``7.0`` are ``"7"``); None when it is missing."""
    if value is None or isinstance(value, (list, dict)):
        return None
    text = text_of(value)
    return text if text.strip() else None


def normalise(value: Any, key_type: KeyType) -> str | None:
    """The canonical text of a key value (see the module docstring); None when the value is missing.

    Raises :class:`NotAKey` for a value that is not a number when ``key_type`` is ``number``.
    """
    if key_type == "number" and type(value) is int:
        return str(value) if -_FAST < value < _FAST else canonical_number(as_decimal(value))
    text = key_text(value)
    if text is None:
        return None
    if key_type == "text":
        return text
    if text.isascii() and text.isdigit() and len(text) < 19:  # the common "007": no Decimal needed
        return str(int(text))
    try:
        return canonical_number(as_decimal(value))
    except InvalidOperation:  # an exponent past Decimal's context
        raise NotAKey(f"{text[:80]!r} is not a number") from None


def written_value(key: str, value: Any, key_type: KeyType) -> Any:
    """What a create sends as the key: the record's own value, except a numeric key given as text (``"007"``)
    or ``Decimal``, sent as its number as Deyel stores it in that field
    (:func:`~deyel_provider.load.values.deyel_value`: a number field takes the number, a text one its text).

    A whole number is sent as an ``int`` (every digit); a fractional one as a float only when the float is
    that number exactly (``12.5``). One a float would round (``"1.00000000000000000001"``, sent as ``1.0``)
    is :class:`NotAKey`: its instance would hold another key than the one searched, so every run would
    create it again (:func:`~deyel_provider.load.sources.check_keys` refuses the record before any write).
    """
    if key_type == "number" and isinstance(value, (str, Decimal)):
        number = as_decimal(value)
        if number == number.to_integral_value():
            return deyel_value(key, int(number))
        sent = float(number)
        if Decimal(repr(sent)) != number:
            raise NotAKey(
                f"a JSON number holds {sent!r}, not every digit of it, so the instance created would not "
                f"hold the key searched and each run would create it again"
            )
        return deyel_value(key, sent)
    return value


def check_key_type(value: Any) -> KeyType | None:
    """``key_type`` as given to a load: ``number``, ``text`` or None (infer); else a typed error."""
    if value is None:
        return None
    for known in KEY_TYPES:
        if value == known:
            return known
    raise DeyelConfigError(
        f"key_type must be one of {list(KEY_TYPES)} or None (inferred: see the loading docs), got {value!r}"
    )


def infer_key_type(
    instances: Iterable[dict[str, Any]],
    key: str,
    source_values: Iterable[Any],
    redact: Redactor | None = None,
) -> tuple[KeyType, str]:
    """The key's type and why (for the log), from existing ``instances`` of the form, the key's prefix, then
    the ``source_values`` (read lazily: only when neither instances nor the prefix tell).

    Raises :class:`DeyelConfigError` when the instances hold both numbers and texts in ``key`` (quoting them
    through ``redact``, the connection's redactor: they are the server's).
    """
    held = [instance.get(key) for instance in instances]
    numbers = [v for v in held if is_number(v)]
    texts = [v for v in held if isinstance(v, str)]
    prefix = field_kind(key)
    if numbers and texts:
        raise DeyelConfigError(
            f"the form's instances hold both numbers ({quoted(numbers[0], redact)}) and texts "
            f"({quoted(texts[0], redact)}) in "
            f"{key!r}, the key: pass key_type='number' (7 and '007' are one key) or key_type='text' "
            f"(compared exactly)"
        )
    if numbers:
        return "number", f"the form's instances hold numbers in {key}"
    if texts:
        if prefix == "number" and all(is_number_like(t) for t in texts):
            return "number", f"{key}'s prefix declares a number, and the instances hold numeric texts"
        return "text", f"the form's instances hold texts in {key}"
    for known in KEY_TYPES:
        if prefix == known:
            return known, f"{key}'s prefix declares a {known}"
    if all(is_number(v) for v in source_values):
        return "number", "the form has no instance to tell, and every source key is a number"
    return "text", "the form has no instance to tell, and the source's keys are not all numbers"
