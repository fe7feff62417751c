"""The writers' contract: what Python's csv/json, pandas and DuckDB read back is the value written.

Files are real files; the readers are used as a user would (CSV read as text: the cells are text).
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deyel_provider.exceptions import DeyelBadResponseError
from deyel_provider.extract.formats.text import csv_cell
from tests.support.branches import Branches
from tests.support.extracting import extract_pages, write_unit

if TYPE_CHECKING:
    import duckdb

# pandas and DuckDB are imported where they read: every xdist worker imports this module to collect it, and
# only the one that runs it needs them (pandas alone takes a second to import).

# -- writing and reading back -------------------------------------------------------------------------------


def write(path: Path, fmt: str, pages: list[list[dict[str, Any]]]) -> None:
    """The writer alone writes the pages into ``path``. CSV gets them as one page: a field that comes on a
    later page is the run's widening pass (test_the_widening_pass_reads_cells_over_128_kib extracts)."""
    write_unit(path, fmt, [[record for page in pages for record in page]] if fmt == "csv" else pages)


def columns_of(pages: list[list[dict[str, Any]]]) -> list[str]:
    return list(dict.fromkeys(name for page in pages for record in page for name in record))


def same_cells(grid: list[list[str]], pages: list[list[dict[str, Any]]]) -> bool:
    """The header is the fields in first-seen order; each cell is the value's text (grids, objects: JSON)."""
    columns = columns_of(pages)
    records = [record for page in pages for record in page]
    if grid[:1] != [columns] or len(grid) != len(records) + 1:
        return False
    for row, record in zip(grid[1:], records, strict=True):
        for cell, name in zip(row, columns, strict=True):
            value = record.get(name)
            if isinstance(value, (list, dict)):
                if json.loads(cell) != value:
                    return False
            elif cell != str(csv_cell(value)):
                return False
    return True


def read_csv_python(path: Path) -> list[list[str]]:
    old = csv.field_size_limit(2**31 - 1)  # cells over 128 KiB: Python's reader needs its limit raised
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.reader(fh))
    finally:
        csv.field_size_limit(old)


def read_csv_pandas(path: Path) -> list[list[str]]:
    import pandas as pd

    frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, encoding="utf-8")
    return frame.values.tolist()


@functools.cache
def duck() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB for the module: opening one per example is most of a property test's time."""
    import duckdb

    return duckdb.connect()


def read_csv_duckdb(path: Path) -> list[list[str]]:
    # The file's line terminator is \n: told so, DuckDB keeps a CR inside a quoted cell (its sniffer may not).
    query = (
        f"SELECT * FROM read_csv('{path}', header=false, all_varchar=true, new_line='\\n', delim=',', "  # noqa: S608
        "quote='\"', escape='\"')"
    )
    rows = duck().sql(query).fetchall()
    # DuckDB reads an empty cell as NULL: CSV does not tell null from "" (both are written empty).
    return [["" if cell is None else cell for cell in row] for row in rows]


def read_jsonl_python(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def read_jsonl_duckdb(path: Path) -> list[Any]:
    query = f"SELECT json FROM read_json_objects('{path}', format='newline_delimited')"  # noqa: S608
    return [json.loads(text) for (text,) in duck().sql(query).fetchall()]


CSV_READERS = {"csv": read_csv_python, "pandas": read_csv_pandas, "duckdb": read_csv_duckdb}

# -- JSON values Deyel can send -----------------------------------------------------------------------------

# Any code point, lone surrogates included (legal in JSON as "\ud800"); hypothesis leaves them out by default.
ANY_CHAR = st.characters(exclude_categories=())
TEXT = st.text(ANY_CHAR, max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3)
)
RECORDS = st.lists(st.dictionaries(TEXT, VALUES, min_size=1, max_size=4), max_size=6)
#: Records a CSV can hold (no control character in a name, no lone surrogate in a text cell), mixed in so the
#: read-back branch is most of the CSV property's examples: with any code point, most pages are refused.
_NO_SURROGATE = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
CSV_RECORDS = st.lists(
    st.dictionaries(
        st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=12),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False)
            | _NO_SURROGATE,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
    max_size=6,
)


@st.composite
def paged(draw: st.DrawFn, records: st.SearchStrategy[list[dict[str, Any]]] = RECORDS) -> list[list[dict]]:
    items = draw(records)
    cuts = sorted(draw(st.sets(st.integers(0, len(items)), max_size=3)))
    bounds = [0, *cuts, len(items)]
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


def utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def csv_writable(pages: list[list[dict[str, Any]]]) -> bool:
    """No lone surrogate in a field name or a text cell (inside grids and objects they are escaped), and no
    control character in a field name (refused in a header)."""
    return all(
        utf8_ok(name)
        and not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name)
        and not (isinstance(value, str) and not utf8_ok(value))
        for page in pages
        for record in page
        for name, value in record.items()
    )


PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_every_reader_reads_back_the_jsonl_written(tmp_path):
    branches = Branches()

    @PROPERTY
    @given(pages=paged())
    def example(pages):
        path = tmp_path / "out.jsonl"
        write(path, "jsonl", pages)
        records = [record for page in pages for record in page]
        assert read_jsonl_python(path) == records
        if utf8_ok(json.dumps(records, ensure_ascii=False)):
            assert read_jsonl_duckdb(path) == records
            branches.took("every reader")
        else:
            branches.took("python only: a lone surrogate")
            import duckdb

            # DuckDB's strings are UTF-8: it refuses the escaped lone surrogate, loudly, never with others.
            with pytest.raises(duckdb.Error, match="surrogate"):
                read_jsonl_duckdb(path)

    example()
    branches.assert_share("every reader", at_least=0.5)


def test_every_reader_reads_back_the_csv_written(tmp_path):
    branches = Branches()

    @PROPERTY
    @given(pages=st.one_of(paged(CSV_RECORDS), paged()))
    def example(pages):
        path = tmp_path / "out.csv"
        if not csv_writable(pages):
            with pytest.raises(DeyelBadResponseError, match=r"(lone surrogate|control char).*='jsonl'"):
                write(path, "csv", pages)
            branches.took("refused: not CSV-writable")
            return
        write(path, "csv", pages)
        if not columns_of(pages):
            assert path.read_bytes() == b""
            branches.took("empty: no columns")
            return
        for name, read in CSV_READERS.items():
            grid = read(path)
            assert same_cells(grid, pages), (name, grid)
        branches.took("every reader")

    example()
    # About half the draws are CSV-writable by design (the other half hold what CSV must refuse), but
    # Hypothesis does not split one_of evenly: 49% and 33% were seen in full runs (40% failed one). A quarter
    # of 150 examples still proves the success branch runs, without flaking on a random draw.
    branches.assert_share("every reader", at_least=0.25)


# -- the findings, one by one -------------------------------------------------------------------------------


def test_a_carriage_return_inside_a_csv_cell_stays_in_its_cell(tmp_path):
    pages = [[{"dsNote": "line one\rline two", "qtEmployee": 3}, {"dsNote": "plain", "qtEmployee": 4}]]
    path = tmp_path / "cr.csv"
    write(path, "csv", pages)
    assert b'"line one\rline two"' in path.read_bytes()
    for name, read in CSV_READERS.items():
        assert read(path) == [["dsNote", "qtEmployee"], ["line one\rline two", "3"], ["plain", "4"]], name


def test_the_widening_pass_reads_cells_over_128_kib(tmp_path, caplog):
    big = "x" * (300 * 1024)
    # The second page brings a new field: the file is rewritten with the wider header after the download.
    pages = [[{"dsCompany": big}], [{"dsCompany": "small", "dsLate": "late"}]]
    _, (path,) = extract_pages(tmp_path / "big.csv", "csv", pages)
    assert "rewriting part 0 with the run's final columns and types" in caplog.messages
    header, *rows = read_csv_python(path)
    assert header[-1] == "dsLate"  # the late field's column, added by the widening pass
    cells = [dict(zip(header, row, strict=True)) for row in rows]
    assert [(cell["dsCompany"], cell["dsLate"]) for cell in cells] == [(big, ""), ("small", "late")]
    assert read_csv_pandas(path) == read_csv_python(path)


def test_a_lone_surrogate_is_escaped_in_json_lines(tmp_path, caplog):
    pages = [[{"dsName": "\ud800", "lsGrid": [{"lsGrid/ds": "ok \udfff"}]}, {"dsName": "é"}]]
    path = tmp_path / "s.jsonl"
    with caplog.at_level("WARNING"):
        write(path, "jsonl", [*pages, [{"dsName": "\udc00"}]])
    lines = path.read_bytes().splitlines()
    assert lines == [
        b'{"dsName":"\\ud800","lsGrid":[{"lsGrid/ds":"ok \\udfff"}]}',
        '{"dsName":"é"}'.encode(),
        b'{"dsName":"\\udc00"}',
    ]
    assert read_jsonl_python(path) == [*pages[0], {"dsName": "\udc00"}]
    # Said once per run, not on each of its pages.
    assert sum("lone surrogate" in r.getMessage() for r in caplog.records) == 1


def test_nan_and_infinity_are_written_as_python_json_writes_them_with_a_warning(tmp_path, caplog):
    """Stop 34's review, LOW 5: a server's NaN (or a number past a float's range, parsed as an infinity) was
    written as ``NaN`` without a word, in a file strict JSON readers refuse. The value is kept (Python's json
    reads it back) and the log says what happened and who refuses the line, once per run; finite pages say
    nothing."""
    pages = [[{"nuRate": float("nan")}, {"nuRate": float("inf"), "nuLow": float("-inf")}, {"nuRate": 0.5}]]
    path = tmp_path / "n.jsonl"
    with caplog.at_level("WARNING"):
        write(path, "jsonl", [pages[0][:2], pages[0][2:], [{"nuRate": float("nan")}]])  # said once
        write(tmp_path / "f.jsonl", "jsonl", [[{"nuRate": 0.5}, {"nuRate": 1e300}]])
    assert path.read_bytes().splitlines() == [
        b'{"nuRate":NaN}',
        b'{"nuRate":Infinity,"nuLow":-Infinity}',
        b'{"nuRate":0.5}',
        b'{"nuRate":NaN}',
    ]
    back = read_jsonl_python(path)
    assert math.isnan(back[0]["nuRate"]) and math.isnan(back[3]["nuRate"]) and back[1:3] == pages[0][1:]
    warned = [r.getMessage() for r in caplog.records if "NaN or an infinity" in r.getMessage()]
    assert len(warned) == 1 and "DuckDB and other strict JSON readers refuse the line" in warned[0]


def test_a_lone_surrogate_in_a_csv_text_cell_is_a_typed_error_and_in_a_grid_is_escaped(tmp_path):
    with pytest.raises(DeyelBadResponseError, match=r"field 'dsName' of record 2 holds a lone surrogate"):
        write(tmp_path / "s.csv", "csv", [[{"dsName": "ok"}, {"dsName": "bad \ud800"}]])
    with pytest.raises(DeyelBadResponseError, match=r"field name '\\ud800x' holds a lone surrogate"):
        write(tmp_path / "k.csv", "csv", [[{"\ud800x": 1}]])
    path = tmp_path / "grid.csv"
    write(path, "csv", [[{"lsGrid": [{"lsGrid/ds": "\ud800"}]}]])
    cell = read_csv_python(path)[1][0]
    assert cell == '[{"lsGrid/ds":"\\ud800"}]' and json.loads(cell) == [{"lsGrid/ds": "\ud800"}]


def test_a_header_starting_with_a_bom_character_is_not_taken_for_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    write(path, "csv", [[{"\ufeffdsName": "a", "b": "c"}]])
    for name, read in CSV_READERS.items():
        assert read(path) == [["\ufeffdsName", "b"], ["a", "c"]], name
