"""The Parquet writer: inferred and declared types, widening, typed errors, row groups as pages arrive.

What the writer alone decides is tested on the writer (tests/support/extracting.py ``write_unit``); what
takes the run (a rewrite pass when a type widens late, nothing published on an error, parts) on a real
extraction of an emulator serving the records (``extract_pages``). Files are read back with pyarrow and
DuckDB, the readers users have.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from deyel_provider.emulator.records import RecordGenerator
from deyel_provider.exceptions import DeyelBadResponseError, DeyelConfigError, DeyelSchemaError
from deyel_provider.extract.formats.parquet import check_schema, infer_type
from tests.support.extracting import extract_pages, types_of, write_unit

START_MS = 1767225600000  # 2026-01-01T00:00:00Z


def seeded(count: int, *, v80: bool = False) -> list[dict[str, Any]]:
    """The emulator's CRM_ACCOUNT instances as it serves them (8.4 typed values, or 8.0 all text)."""
    generator = RecordGenerator(
        seed=7, updated_start_ms=START_MS, updated_step_ms=60_000, v80=v80, records=count
    )
    return [{"idObjectValue": str(i + 1), **generator.fields(i)} for i in range(count)]


def pages_of(records: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def duck_types(path: Path) -> dict[str, str]:
    described = duckdb.sql(f"DESCRIBE SELECT * FROM '{path}'").fetchall()  # noqa: S608
    return {name: kind for name, kind, *_ in described}


def as_sent(row: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """A row read back with pyarrow, in Deyel 8.4's encoding: dates as epoch-ms text, grids parsed."""
    out = {}
    for name, value in row.items():
        if value is not None and types[name] == "timestamp":
            value = str(int(value.timestamp() * 1000))
        elif value is not None and types[name] == "json":
            value = json.loads(value)
        out[name] = value
    return out


def test_inferred_types_read_back_exactly_with_pyarrow_and_duckdb(tmp_path):
    records = seeded(250)
    path = tmp_path / "a.parquet"
    writer = write_unit(path, "parquet", pages_of(records, 100))
    types = dict(writer.types)
    assert types == {
        "idObjectValue": "string",
        "cdInstanceOwner": "string",
        "dsCompany": "string",
        "qtEmployee": "int64",
        "cbIsPartner": "bool",
        "nuRevenue": "float64",
        "dtOpening": "timestamp",
        "dsEmail": "string",
        "cdCountry": "string",
        "dsNotes": "string",
        "lsAddress": "json",
        "dtLastUpdate": "timestamp",
    }
    rows = pq.read_table(path).to_pylist()
    assert [as_sent(row, types) for row in rows] == records
    assert duck_types(path) == {
        "idObjectValue": "VARCHAR",
        "cdInstanceOwner": "VARCHAR",
        "dsCompany": "VARCHAR",
        "qtEmployee": "BIGINT",
        "cbIsPartner": "BOOLEAN",
        "nuRevenue": "DOUBLE",
        "dtOpening": "TIMESTAMP WITH TIME ZONE",
        "dsEmail": "VARCHAR",
        "cdCountry": "VARCHAR",
        "dsNotes": "VARCHAR",
        "lsAddress": "JSON",
        "dtLastUpdate": "TIMESTAMP WITH TIME ZONE",
    }
    duck = duckdb.sql(
        f"SELECT idObjectValue, epoch_ms(dtLastUpdate), qtEmployee, lsAddress FROM '{path}'"  # noqa: S608
    ).fetchall()
    assert [(i, str(ms), qt, json.loads(grid)) for i, ms, qt, grid in duck] == [
        (r["idObjectValue"], r["dtLastUpdate"], r["qtEmployee"], r["lsAddress"]) for r in records
    ]


def test_deyel_80_text_values_get_the_types_their_prefixes_name(tmp_path):
    """8.0 sends every scalar as text: dt/qt/nu/cb fields are typed from their values; other text stays."""
    records = seeded(120, v80=True)
    typed = seeded(120)
    # An integral amount comes as "1234" (the seeded ones all have cents, as "1234.5"): the first one is made
    # integral, so the column sees both spellings.
    records[0]["nuRevenue"], typed[0]["nuRevenue"] = "81382800", 81382800.0
    path = tmp_path / "v80.parquet"
    writer = write_unit(path, "parquet", pages_of(records, 40))
    types = dict(writer.types)
    assert [types[n] for n in ("qtEmployee", "cbIsPartner", "dtOpening", "idObjectValue", "lsAddress")] == [
        "int64",
        "bool",
        "timestamp",
        "string",
        "json",
    ]
    # nuRevenue: "81382800" and "61114557.5" in one column: float64 (never int64, which would lose cents).
    assert types["nuRevenue"] == "float64"
    rows = pq.read_table(path).to_pylist()
    assert [row["qtEmployee"] for row in rows] == [r["qtEmployee"] for r in typed]
    assert [row["cbIsPartner"] for row in rows] == [r["cbIsPartner"] for r in typed]
    assert [row["nuRevenue"] for row in rows] == [r["nuRevenue"] for r in typed]


def test_a_declared_schema_types_text_and_keeps_declared_columns_of_an_empty_run(tmp_path):
    schema = {"qtEmployee": "int64", "dtOpening": "timestamp", "idObjectValue": "string", "dsNotes": "json"}
    records = seeded(30, v80=True)
    path = tmp_path / "d.parquet"
    writer = write_unit(path, "parquet", [records], schema=schema)
    assert [name for name, _ in writer.types[:4]] == list(schema)  # declared columns first, in order
    table = pq.read_table(path)
    assert table.schema.field("qtEmployee").type == "int64"
    assert table.column("dsNotes").to_pylist() == [
        None if r["dsNotes"] is None else json.dumps(r["dsNotes"]) for r in records
    ]

    empty = tmp_path / "empty.parquet"
    write_unit(empty, "parquet", [], schema=schema)
    assert duck_types(empty) == {
        "qtEmployee": "BIGINT",
        "dtOpening": "TIMESTAMP WITH TIME ZONE",
        "idObjectValue": "VARCHAR",
        "dsNotes": "JSON",
    }
    assert pq.read_metadata(empty).num_rows == 0


def test_an_empty_run_with_nothing_declared_has_the_columns_every_instance_has(tmp_path):
    path = tmp_path / "e.parquet"
    write_unit(path, "parquet", [[]])
    assert duck_types(path) == {"idObjectValue": "VARCHAR", "dtLastUpdate": "TIMESTAMP WITH TIME ZONE"}
    assert duckdb.sql(f"SELECT count(*) FROM '{path}'").fetchall() == [(0,)]  # noqa: S608


def test_row_groups_are_written_as_pages_arrive(tmp_path):
    """Memory holds the row group being built: with a one-byte target every page is its own row group."""
    path = tmp_path / "g.parquet"
    writer = write_unit(path, "parquet", pages_of(seeded(500), 100), row_group_bytes=1)
    metadata = pq.read_metadata(path)
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [100] * 5
    assert writer.parts[0].layout == [writer.types]  # one segment, never rewritten


def test_a_late_fraction_widens_an_int64_column_to_float64_in_every_row_group(tmp_path, caplog):
    records = seeded(300)
    late = {"idObjectValue": "301", "qtEmployee": 2.5, "dsLate": "new field"}
    pages = [*pages_of(records, 100), [late]]
    result, (path,) = extract_pages(tmp_path / "w.parquet", "parquet", pages, row_group_bytes=1)
    types = types_of(result)
    assert (types["qtEmployee"], types["dsLate"]) == ("float64", "string")
    # The row groups written before the fraction came were rewritten with the final types.
    assert "rewriting part 0 with the run's final columns and types" in caplog.messages
    table = pq.read_table(path)
    assert table.schema.field("qtEmployee").type == "double"
    assert table.column("qtEmployee").to_pylist() == [float(r["qtEmployee"]) for r in records] + [2.5]
    assert table.column("dsLate").to_pylist() == [None] * 300 + ["new field"]
    assert pq.read_metadata(path).num_row_groups >= 4  # a row group per server page, at least


def test_text_widens_every_typed_column_to_string_with_the_values_deyel_sent(tmp_path):
    records = seeded(50, v80=True)
    late = {
        "idObjectValue": "51",
        "qtEmployee": "n/a",
        "dtOpening": "soon",
        "cbIsPartner": "maybe",
        "nuRevenue": [1],
    }
    result, (path,) = extract_pages(tmp_path / "s.parquet", "parquet", [records, [late]], row_group_bytes=1)
    types = types_of(result)
    assert [types[n] for n in ("qtEmployee", "dtOpening", "cbIsPartner", "nuRevenue")] == ["string"] * 4
    table = pq.read_table(path)
    for name in ("qtEmployee", "dtOpening", "cbIsPartner"):
        # 8.0 sent text: the widened column holds exactly that text again.
        assert table.column(name).to_pylist() == [r[name] for r in records] + [late[name]], name
    assert table.column("nuRevenue").to_pylist()[-1] == "[1]"


def test_a_value_that_does_not_fit_a_declared_type_is_a_typed_error_naming_field_and_position(tmp_path):
    records = seeded(150)
    records[121]["qtEmployee"] = "n/a"
    with pytest.raises(DeyelSchemaError) as caught:
        extract_pages(
            tmp_path / "bad.parquet", "parquet", pages_of(records, 50), schema={"qtEmployee": "int64"}
        )
    error = caught.value
    assert (error.field, error.position, error.instance_id) == ("qtEmployee", 122, "122")
    assert "field 'qtEmployee' is declared 'int64'" in str(error)
    assert "record 122 of this run (idObjectValue '122') holds 'n/a'" in str(error)
    assert list(tmp_path.iterdir()) == []  # nothing published, no temporary file left


@pytest.mark.parametrize(
    ("declared", "value"),
    [
        ("int64", 1.5),
        ("int64", True),
        ("int64", 2**63),
        ("int64", "1_000"),
        ("float64", "1.5.0"),
        ("float64", "nan"),
        ("bool", 1),
        ("bool", "yes"),
        ("timestamp", "2026-01-01"),
        ("timestamp", "0123"),
        # Integer text a float64 would round, as the native integer is refused.
        ("float64", "9007199254740993"),
        ("float64", 9007199254740993),
        ("float64", "-99999999999999999999"),
        pytest.param("float64", 10**400, id="float64-10**400"),  # a typed error, not an OverflowError
        # Past the year 9999 (or before 0001) no reader reads the timestamp.
        ("timestamp", "99999999999999999"),
        ("timestamp", 2**63 - 1),
        ("timestamp", "253402300800000"),
        ("timestamp", -62135596800001),
    ],
)
def test_no_declared_type_takes_a_value_it_would_change(tmp_path, declared, value):
    """Never a silent null, a truncation or a reinterpretation: each of these is refused."""
    with pytest.raises(DeyelSchemaError, match=r"record 2 of this run \(idObjectValue '2'\)"):
        write_unit(
            tmp_path / "x.parquet",
            "parquet",
            [[{"idObjectValue": "1", "f": None}, {"idObjectValue": "2", "f": value}]],
            schema={"f": declared},
        )


def test_a_lone_surrogate_in_a_text_column_is_a_typed_error(tmp_path):
    with pytest.raises(DeyelBadResponseError, match=r"field 'dsName' of record 2 holds a lone surrogate"):
        write_unit(tmp_path / "s.parquet", "parquet", [[{"dsName": "ok"}, {"dsName": "bad \ud800"}]])
    # Inside a grid (JSON text) it is escaped, as in JSON Lines and CSV.
    path = tmp_path / "g.parquet"
    write_unit(path, "parquet", [[{"lsGrid": [{"lsGrid/ds": "\ud800"}]}]])
    assert json.loads(pq.read_table(path).column("lsGrid")[0].as_py()) == [{"lsGrid/ds": "\ud800"}]


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("dtLastUpdate", ["1540782000000", None], "timestamp"),
        ("dtLastUpdate", [1540782000000], "timestamp"),
        ("dtLastUpdate", ["2026-01-01"], "string"),
        ("qtEmployee", [1, 2], "int64"),
        ("qtEmployee", ["1", "2"], "int64"),
        ("nuRevenue", ["1", "2.5"], "float64"),
        ("nuRevenue", [1, 2.5], "float64"),
        ("cdZip", ["01234"], "string"),  # codes keep their zeros
        ("dsCount", ["12"], "string"),  # only dt/qt/nu text is read as numbers
        ("cbIsPartner", ["true", "false"], "bool"),
        ("cbIsPartner", [True], "bool"),
        ("lsAddress", [[], [{"a": 1}]], "json"),
        ("links", [[{"rel": "self"}]], "json"),
        ("mixed", [1, "a"], "string"),
        ("huge", [2**64], "string"),
        ("qtHuge", ["99999999999999999999"], "string"),  # beyond 64 bits, not 1e20
        ("nuRevenue", ["1.5", "9007199254740993"], "string"),  # a float64 would round it
        ("nuRevenue", ["1.5", "9007199254740992"], "float64"),
        ("nuRevenue", [1.5, 10**400], "string"),
        ("dtFar", ["99999999999999999"], "string"),  # past the year 9999: no reader takes it
        ("dtFar", [253402300800000], "string"),
        ("dtEdge", ["253402300799999", "-62135596800000"], "timestamp"),
        ("dtNever", [None], "timestamp"),
        ("cbNever", [], "bool"),
        ("qtNever", [None], "int64"),
        ("nuNever", [None], "float64"),
        ("lsNever", [None], "json"),
        ("never", [None], "string"),
    ],
)
def test_inference_rules(name, values, expected):
    assert infer_type(name, values) == expected


def test_bad_schemas_are_config_errors_naming_what_to_fix():
    with pytest.raises(
        DeyelConfigError, match=r"schema\['qtEmployee'\] = 'integer' is not a type; use one of"
    ):
        check_schema({"qtEmployee": "integer"})
    with pytest.raises(DeyelConfigError, match="schema must map field names to types"):
        check_schema(["qtEmployee"])  # type: ignore[arg-type]
    with pytest.raises(DeyelConfigError, match=r"schema declares \['dsOther'\], which are not in fields"):
        check_schema({"dsOther": "string"}, ["dsCompany"])


@pytest.mark.parametrize(
    ("pages", "expected"),
    [
        ([[{"nuX": "1.5"}], [{"nuX": "9007199254740993"}]], ["1.5", "9007199254740993"]),
        ([[{"qtX": "1"}], [{"qtX": "2.5"}], [{"qtX": "9007199254740993"}]], ["1", "2.5", "9007199254740993"]),
        ([[{"nuX": 1.5}], [{"nuX": 10**400}]], ["1.5", str(10**400)]),
        ([[{"dtX": "1540782000000"}], [{"dtX": "99999999999999999"}]], ["1540782000000", "9" * 17]),
    ],
)
def test_a_late_value_no_float64_or_timestamp_holds_widens_the_column_to_its_text(tmp_path, pages, expected):
    """Never rounded (2**53 + 1 is not 2**53), no untyped overflow, no timestamp a reader cannot read."""
    result, (path,) = extract_pages(tmp_path / "w.parquet", "parquet", pages, row_group_bytes=1)
    name = next(iter(pages[0][0]))
    assert types_of(result)[name] == "string"
    assert pq.read_table(path).column(name).to_pylist() == expected
    assert [row[0] for row in duckdb.sql(f"SELECT {name} FROM '{path}'").fetchall()] == expected  # noqa: S608


def test_descriptors_stay_bounded_whatever_the_schema_changes_and_parts(tmp_path):
    """Each schema change after a row group starts a segment, each part a file: hundreds of them must not
    hold hundreds of descriptors (writing, rewriting or publishing), or the run fails with EMFILE."""
    script = textwrap.dedent(
        f"""
        import resource
        from pathlib import Path

        from deyel_provider.emulator.clock import Clock
        from deyel_provider.hooks.deyel import DeyelHook
        from tests.support.extracting import extract_pages

        DeyelHook.clock = staticmethod(Clock.latest)  # the emulator's clock, as tests/conftest.py sets it
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        folder = Path({str(tmp_path)!r})
        changes = [[{{f"dsF{{i}}": "x"}}] for i in range(150)]
        result, _ = extract_pages(folder / "segments.parquet", "parquet", changes, row_group_bytes=1)
        assert len(result.columns) == 153  # the 150 fields, idObjectValue, dtLastUpdate, links
        pages = [[{{"dsX": "x" * 50}}] for i in range(150)]
        for fmt in ("parquet", "jsonl"):
            _, paths = extract_pages(folder / f"parts.{{fmt}}", fmt, pages, max_file_bytes=10)
            assert len(paths) == 150
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(__file__).parent.parent, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert pq.read_table(tmp_path / "segments.parquet").num_columns == 153
