"""Deterministic, on-demand generation of the seeded CRM_ACCOUNT instances.

Each field of record ``i`` comes from its own 64-bit hash of (seed, i, field), so a record (or a single field
of it, for a search) is computed in microseconds without touching any other record and without holding the
collection in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

SEEDED_FORM = "CRM_ACCOUNT"

_MASK = (1 << 64) - 1

OWNERS = (
    "JPerez", "MGarcia", "LRodriguez", "AFernandez", "CLopez", "RMartinez", "SGonzalez", "PSanchez",
    "DRomero", "NDiaz", "ETorres", "FAlvarez", "GRuiz", "HMoreno", "IMunoz", "JJimenez", "KNavarro",
    "LDominguez", "MVazquez", "OCastro",
)  # fmt: skip
_COMPANY_HEADS = (
    "Tenaris", "Andes", "Pampa", "Austral", "Río de la Plata", "Patagonia", "Quilmes", "Mercurio",
    "Compañía Atlántica", "Société Générale", "Müller", "São Paulo", "Ñandú", "Cordillera", "Litoral",
    "Bahía", "Nordeste", "Horizonte", "Puerto", "Sierra",
)  # fmt: skip
_COMPANY_TAILS = (
    "S.A.", "SRL", "Holdings", "Logística", "Energía", "Software", "Alimentos", "Seguros", "Consultores",
    "Industrias", "Transportes", "Servicios",
)  # fmt: skip
_DOMAINS = ("example.com", "example.org", "mail.example.net", "correo.example.com.ar")
_COUNTRIES = ("AR", "BR", "UY", "CL", "MX", "ES", "US", "CO", "PE", "PY")
_NOTES = (
    "Key account",
    "Call back next quarter",
    "Prefers e-mail; no calls before 10:00",
    'Signed the "premium" plan',
    "Pending credit check, see ticket #4411",
    "Renewal in progress\nsecond line of notes",
)
_STREETS = ("Della Paolera", "Av. Corrientes", "Florida", "Av. Libertador", "Rua Augusta", "Calle Mayor")
_CITIES = ("buenos aires", "Córdoba", "Rosario", "Montevideo", "São Paulo", "Santiago", "Madrid")

# The docs' example dtOpening (1540782000000) is 03:00 UTC, i.e. midnight in Buenos Aires.
_OPENING_BASE_MS = 946684800000 + 3 * 3600 * 1000
_DAY_MS = 86_400_000


def mix64(x: int) -> int:
    """splitmix64 finaliser: cheap, well distributed, and stable across Python versions and platforms."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _company(h: int, i: int) -> str:
    name = f"{_COMPANY_HEADS[h % len(_COMPANY_HEADS)]} {_COMPANY_TAILS[(h >> 8) % len(_COMPANY_TAILS)]}"
    # Now and then a name that a careless CSV writer would break.
    quirk = (h >> 20) % 40
    if quirk == 0:
        return name.replace(" ", ", ", 1)
    if quirk == 1:
        return f'{name} "Grupo {i % 97}"'
    if quirk == 2:
        return f"{name}\nSucursal {i % 13}"
    return name


def _address(h: int, i: int) -> list[dict[str, Any]]:
    rows = []
    for row in range(h % 4):
        rh = mix64(h + row)
        rows.append(
            {
                "lsAddress/dsAddress": f"{_STREETS[rh % len(_STREETS)]} {1 + (rh >> 8) % 4000}",
                "lsAddress/dsCity": _CITIES[(rh >> 24) % len(_CITIES)],
            }
        )
    return rows


# (field name, generator of its 8.4 value from the field hash and the record index), in output order.
_FIELDS: tuple[tuple[str, Callable[[int, int], Any]], ...] = (
    ("cdInstanceOwner", lambda h, i: OWNERS[h % len(OWNERS)]),
    ("dsCompany", _company),
    ("qtEmployee", lambda h, i: 1 + h % 50_000),
    ("cbIsPartner", lambda h, i: bool(h & 8)),
    ("nuRevenue", lambda h, i: (h % 100_000_000_00) / 100),
    ("dtOpening", lambda h, i: str(_OPENING_BASE_MS + (h % 9000) * _DAY_MS)),
    ("dsEmail", lambda h, i: f"info{i + 1}@{_DOMAINS[h % len(_DOMAINS)]}"),
    ("cdCountry", lambda h, i: _COUNTRIES[h % len(_COUNTRIES)]),
    ("dsNotes", lambda h, i: None if h % 4 == 0 else _NOTES[(h >> 4) % len(_NOTES)]),
    ("lsAddress", _address),
)
_FIELD_INDEX = {name: (k, gen) for k, (name, gen) in enumerate(_FIELDS)}
FIELD_NAMES: tuple[str, ...] = (*(name for name, _ in _FIELDS), "dtLastUpdate")


#: Units finer than the millisecond (``updated_unit``): how many of them make one millisecond.
FINER_UNITS = {"us": 1000, "ns": 1_000_000}


def stamp_in_unit(stamp: Any, unit: str) -> Any:
    """A dtLastUpdate kept in epoch ms as the server sends it (``updated_unit``: ms, s, iso, us or ns)."""
    if unit == "ms" or stamp is None:
        return stamp
    ms = int(stamp)
    if unit == "s":
        return str(ms // 1000)
    if unit in FINER_UNITS:
        return str(ms * FINER_UNITS[unit])
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_v80(value: Any) -> Any:
    """Deyel 8.0 sends every scalar as a string and grid keys without the grid prefix."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return [{key.rsplit("/", 1)[-1]: to_v80(v) for key, v in row.items()} for row in value]
    return value


class RecordGenerator:
    """Field values of seeded record ``i`` (0-based; its id is ``i + 1``).

    dtLastUpdate: records are taken in groups of ``burst`` (a bulk import writes a group in one millisecond);
    group ``g`` of ``groups`` lies at ``start + g * step`` in id order, or at a hashed point of
    ``[start, start + groups * step)`` when shuffled, so the listing order says nothing about the update time.
    """

    def __init__(
        self,
        *,
        seed: int,
        updated_start_ms: int,
        updated_step_ms: int,
        v80: bool,
        records: int = 0,
        updated_order: str = "id",
        updated_burst: int = 1,
    ) -> None:
        self._seed_key = mix64(seed & _MASK)
        self._start = updated_start_ms
        self._step = updated_step_ms
        self._v80 = v80
        self._burst = updated_burst
        self._shuffled = updated_order == "random"
        self._span = max(1, -(-records // updated_burst)) * updated_step_ms

    def updated_ms(self, i: int) -> int:
        group = i // self._burst
        if self._shuffled:
            return self._start + mix64(self._seed_key ^ (group | 1 << 62)) % self._span
        return self._start + group * self._step

    def fields(self, i: int) -> dict[str, Any]:
        base = mix64(self._seed_key ^ i)
        values = {name: gen(mix64(base + k), i) for k, (name, gen) in enumerate(_FIELDS)}
        if self._v80:
            values = {name: to_v80(value) for name, value in values.items()}
        values["dtLastUpdate"] = str(self.updated_ms(i))
        return values

    def field(self, i: int, name: str) -> Any:
        """One field only: searches scan with this so they do not build whole records."""
        if name == "dtLastUpdate":
            return str(self.updated_ms(i))
        entry = _FIELD_INDEX.get(name)
        if entry is None:
            return None
        k, gen = entry
        value = gen(mix64(mix64(self._seed_key ^ i) + k), i)
        return to_v80(value) if self._v80 else value
