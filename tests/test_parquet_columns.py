"""The Parquet writer's columns built at C speed (itemgetter columns, msgspec JSON cells, pyarrow.compute
for integer and timestamp text) give the bytes the cell-by-cell conversion gave: same schema, types, values,
row groups and errors, over generated pages (missing keys, None, nested values, bools beside integers,
integers past 64 bits, floats msgspec writes otherwise than ``json``, non-canonical number text, lone
surrogates)."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from typing import Any

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deyel_provider.extract.formats.base import encodable_json
from deyel_provider.extract.formats.parquet import ParquetWriter
from deyel_provider.extract.formats.parquet_types import (
    _TIMESTAMP_END,
    _TIMESTAMP_MIN,
    Column,
    Converters,
    Misfit,
    int_text,
)
from deyel_provider.storage.compression import EncodedFile
from tests.support.branches import Branches
from tests.support.extracting import write_unit

_INT64_MAX = 2**63 - 1


class CellByCell(Converters):
    """The conversions as they were: every cell in Python (the reference)."""

    def json(self, values: list[Any], column: Column) -> Any:
        out = [None if value is None else encodable_json(value) for value in values]
        return self.pa.array(out, self.arrow["json"])

    def int64(self, values: list[Any], column: Column) -> Any:
        ints = []
        for index, value in enumerate(values):
            kind = type(value)
            if value is None or kind is int:
                ints.append(value)
            elif kind is str and (number := int_text(value)) is not None:
                ints.append(number)
            elif kind is float and value.is_integer() and abs(value) <= 2**53:
                ints.append(int(value))
            else:
                raise Misfit(index, value)
        for index, value in enumerate(ints):
            if value is not None and not -(2**63) <= value <= _INT64_MAX:
                raise Misfit(index, values[index])
        largest = max((abs(value) for value in ints if value is not None), default=0)
        column.largest_int = max(column.largest_int, largest)
        return self.pa.array(ints, self.arrow["int64"])

    def timestamp(self, values: list[Any], column: Column) -> Any:
        out: list[int | None] = []
        for index, value in enumerate(values):
            kind = type(value)
            if value is None:
                out.append(None)
                continue
            number = int_text(value) if kind is str else value if kind is int else None
            if number is None or not _TIMESTAMP_MIN <= number < _TIMESTAMP_END:
                raise Misfit(index, value)
            out.append(number)
        return self.pa.array(out, self.arrow["timestamp"])


class ReferenceWriter(ParquetWriter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._convert = CellByCell(self.pa)
        converters = self._convert.by_type
        converters.update(json=self._convert.json, int64=self._convert.int64)
        converters.update(timestamp=self._convert.timestamp)

    @staticmethod
    def _values(name: str, records: Any) -> list[Any]:
        return [record.get(name) for record in records]


class _Kept(io.BytesIO):
    def close(self) -> None:  # the writer closes its files; the test reads them after
        pass


def written(writer_class: type[ParquetWriter], pages: list[list[dict[str, Any]]], **options: Any) -> Any:
    files: list[_Kept] = []

    def open_file(number: int) -> EncodedFile:
        files.append(_Kept())
        return EncodedFile(files[-1], None)

    writer = writer_class(open_file, row_group_bytes=2048, **options)
    try:
        for page in pages:
            writer.write_page(page)
        writer.close()
    except Exception as error:  # the refusal itself is compared
        return ("refused", type(error).__name__, str(error))
    layouts = [part.layout for part in writer.parts]
    return ("written", writer.types, layouts, [file.getvalue() for file in files])


_ODD_FLOATS = [0.0, -0.0, 1e16, 1e-7, 0.00001, 1e300, math.inf, -math.inf, math.nan, 2.5, 1.0, 2.0**53]
_INTS = st.one_of(
    st.integers(-(10**6), 10**6),
    st.sampled_from([2**53, 2**53 + 1, _INT64_MAX, -(2**63), 2**63, 2**70, -(2**64)]),
    st.integers(_TIMESTAMP_MIN - 5, _TIMESTAMP_END + 5),
)
#: Text a number column takes or refuses: non-canonical integers (zeros, signs, spaces, non-ASCII digits).
_NEAR_NUMBERS = st.sampled_from(
    [
        "0",
        "-0",
        "00",
        "007",
        "-007",
        "12",
        "-5",
        "1e3",
        "2.5",
        "\uff11\uff12",
        " 1",
        "+1",
        "1\n",
        "\ud800",
        "1" * 16,
    ]
)
_TEXTS = st.one_of(
    _NEAR_NUMBERS,
    st.sampled_from(["true", "false"]),
    _INTS.map(str),
    st.text(max_size=6),
    st.sampled_from(["\ud800", "a\udfff", "Córdoba"]),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, st.sampled_from(_ODD_FLOATS), st.floats(), _TEXTS)
_NESTED = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXTS, inner, max_size=3),
    max_leaves=6,
)
_FIELDS = ["dtOpening", "qtEmployee", "nuRevenue", "cbIsPartner", "lsAddress", "dsNotes", "links", "other"]
#: Per field, values that mostly keep its first type (so most examples write), sometimes anything.
_TYPED = {
    "dtOpening": st.one_of(
        _INTS.filter(lambda v: _TIMESTAMP_MIN <= v < _TIMESTAMP_END).map(str), _INTS, _NEAR_NUMBERS
    ),
    "qtEmployee": st.one_of(_INTS, _INTS.map(str), _NEAR_NUMBERS),
    "nuRevenue": st.one_of(st.floats(allow_nan=False, allow_infinity=False), _INTS.map(str)),
    "cbIsPartner": st.one_of(st.booleans(), st.sampled_from(["true", "false"])),
    "lsAddress": st.lists(st.dictionaries(_TEXTS, _SCALARS, max_size=2), max_size=2),
    "links": _NESTED,
}


@st.composite
def records(draw: Any) -> dict[str, Any]:
    record = {}
    for name in draw(st.lists(st.sampled_from(_FIELDS), unique=True, max_size=len(_FIELDS))):
        wild = draw(st.integers(0, 9)) == 0
        strategy = _NESTED if wild or name not in _TYPED else st.one_of(st.none(), _TYPED[name])
        record[name] = draw(strategy)
    return record


def test_columns_built_at_c_speed_write_the_bytes_cell_by_cell_conversion_wrote():
    branches = Branches()

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        pages=st.lists(st.lists(records(), min_size=1, max_size=30), min_size=1, max_size=4),
        declared=st.sampled_from([None, {"dtOpening": "timestamp", "qtEmployee": "int64", "links": "json"}]),
    )
    def example(pages: list[list[dict[str, Any]]], declared: dict[str, str] | None) -> None:
        options: dict[str, Any] = {"schema": declared} if declared else {}
        fields = list(declared) if declared else None
        got = written(ParquetWriter, pages, fields=fields, **options)
        expected = written(ReferenceWriter, pages, fields=fields, **options)
        assert got == expected
        branches.took(got[0])

    example()
    branches.assert_share("written", at_least=0.4, examples=200)


def test_the_least_int64_is_written_as_an_int64(tmp_path):
    # Its absolute value is past int64's largest: the cell-by-cell check looked for a misfit and found none
    # (StopIteration out of the writer).
    path = tmp_path / "least.parquet"
    writer = write_unit(path, "parquet", [[{"qtLeast": -(2**63)}, {"qtLeast": 5}, {}]])
    assert writer.types == (("qtLeast", "int64"),)
    assert pq.read_table(path).column("qtLeast").to_pylist() == [-(2**63), 5, None]


def test_the_first_page_imports_nothing_the_writer_did_not_import_when_made() -> None:
    """The writer is made before the read freezes the heap (read/collector.py); a module first imported by a
    page is imported after it, and every full collection of the read walks its objects. pyarrow imports
    pandas (where installed) at its first array made from a list: the first page, until the writer made one
    (a 100,000-instance extraction: 6 full collections of 0.17-0.22 s in all during the read, then 5 of
    0.10-0.12 s)."""
    code = (
        "import io, sys\n"
        "from deyel_provider.extract.formats.writers import make_writer\n"
        "from deyel_provider.storage.compression import EncodedFile\n"
        # row_group_bytes=1: the page is flushed as a row group, as a read's pages are, inside the freeze.
        "writer = make_writer('parquet', lambda n: EncodedFile(io.BytesIO(), None), row_group_bytes=1)\n"
        "before = set(sys.modules)\n"
        "page = [{'idObjectValue': '1', 'qtEmployee': 2, 'nuRevenue': 1.5, 'cbIsPartner': True,\n"
        "         'dtLastUpdate': '1767242096814', 'lsAddress': [{'lsAddress/dsCity': 'X'}],\n"
        "         'dsNotes': None}]\n"
        "writer.write_page(page * 3)\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    made = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "[]"
