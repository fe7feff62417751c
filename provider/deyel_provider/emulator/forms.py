"""The forms the emulator knows, and what a write to them must hold: required fields and value types.

Deyel answers a write it cannot store with 400 and its ``errors`` list (one entry per field,
``attribute-name`` naming it) [DOC codigosderetorno.html; the per-field shape is ASSUMED, switch
``validate_writes``]. A field's type follows its Hungarian prefix [EX metodopost.html]: ``cd``/``ds`` text,
``qt``/``nu`` numbers, ``cb`` booleans, ``dt`` dates as epoch-millisecond strings, ``ls`` grids (arrays of
objects). Nulls are allowed except in required fields. Deyel 8.0 sends and takes every scalar as a string.

Two forms are seeded: ``CRM_ACCOUNT`` (the docs' example; open: fields it does not declare are stored as
sent) and ``ERP_CUSTOMER``, an empty form with required fields that accepts only its own fields (the target
of the example load DAG). A form a client creates by POSTing to an unknown name has no schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deyel_provider.emulator.records import FIELD_NAMES, SEEDED_FORM

#: The second seeded form: where the example DAG loads customers made from CRM accounts.
TARGET_FORM = "ERP_CUSTOMER"

_KINDS = (("cd", "text"), ("ds", "text"), ("qt", "number"), ("nu", "number"), ("cb", "boolean"))
_KINDS_MORE = (("dt", "date"), ("ls", "grid"))
#: Keys the server owns: never validated (the store ignores what a client sends under them).
SERVER_KEYS = frozenset({"idObjectValue", "idObjectName", "dtLastUpdate", "links"})


def kind_of(field: str) -> str | None:
    """The value type a field's prefix declares, or None (no rule: anything JSON)."""
    for prefix, kind in (*_KINDS, *_KINDS_MORE):
        if field.startswith(prefix) and field[len(prefix) : len(prefix) + 1].isupper():
            return kind
    return None


@dataclass(frozen=True)
class FormSchema:
    """What a form stores: its fields, those a write must hold, and whether others are refused."""

    fields: frozenset[str]
    required: frozenset[str] = frozenset()
    #: Fields it does not declare are refused (otherwise stored as sent, unchecked).
    closed: bool = False


SCHEMAS: Mapping[str, FormSchema] = {
    SEEDED_FORM: FormSchema(fields=frozenset(FIELD_NAMES) - SERVER_KEYS),
    TARGET_FORM: FormSchema(
        fields=frozenset(
            {
                "cdCustomer",
                "dsName",
                "cdCountry",
                "qtEmployee",
                "cbIsPartner",
                "nuRevenue",
                "dtOpening",
                "dsEmail",
            }
        ),
        required=frozenset({"cdCustomer", "dsName"}),
        closed=True,
    ),
}


def _fits(kind: str, value: Any, v80: bool) -> bool:
    if v80 and kind != "grid":
        # 8.0: every scalar travels as a string.
        return isinstance(value, str)
    if kind == "text":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "date":
        return isinstance(value, str) and value.lstrip("-").isdigit()
    return isinstance(value, list) and all(isinstance(row, dict) for row in value)


_EXPECTED = {
    "text": "a string",
    "number": "a number",
    "boolean": "true or false",
    "date": 'epoch milliseconds as a string, e.g. "1540782000000"',
    "grid": "an array of rows (objects)",
}


def write_errors(
    form: str, values: Mapping[str, Any], *, whole: bool, v80: bool = False
) -> list[dict[str, str]]:
    """Deyel ``errors`` entries for a write of ``values`` to ``form``; empty when it can be stored.

    :param whole: the write sets the whole instance (POST, PUT): every required field must be there. A PATCH
        need not name them, but must not empty one.
    """
    schema = SCHEMAS.get(form)
    if schema is None:
        return []
    errors = []
    for field in sorted(schema.required):
        if (whole and field not in values) or (field in values and values[field] in (None, "")):
            errors.append(_error(f"The field '{field}' is required", field))
    for field, value in values.items():
        if field in SERVER_KEYS:
            continue
        if field not in schema.fields:
            if schema.closed:
                errors.append(_error(f"The form '{form}' has no field '{field}'", field))
            continue
        kind = kind_of(field)
        if value is None or kind is None or _fits(kind, value, v80):
            continue
        expected = "a string" if v80 and kind != "grid" else _EXPECTED[kind]
        errors.append(_error(f"Invalid value for the field '{field}': expected {expected}", field))
    return errors


def _error(message: str, attribute: str) -> dict[str, str]:
    return {"message": message, "attribute-name": attribute}
