"""Data-lake output of DeyelExtractOperator against the emulator: Parquet, gzip and zstd text read back by
pyarrow and DuckDB, empty runs skipped, output split into parts (and a rerun that makes fewer), bad options
refused before anything is read."""

from __future__ import annotations

import gzip
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from airflow.sdk import Asset

from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import DeyelConfigError, DeyelSchemaError
from deyel_provider.extract.formats.text import csv_cell
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.operators.extract import DeyelExtractOperator
from tests.support.helpers import outlet_events

FORM = "CRM_ACCOUNT"


def operator(output: Any, **kwargs: Any) -> DeyelExtractOperator:
    kwargs.setdefault("incremental_field", None)
    return DeyelExtractOperator(task_id="extract", form=FORM, output=str(output), **kwargs)


def served() -> list[dict[str, Any]]:
    """The instances as the emulator serves them, in the order an extraction writes them."""
    return list(DeyelHook().iter_instances(FORM))


#: One connection for the module: duckdb 1.3 (Airflow 3.0's era) closes a connection nobody holds before
#: its result is read.
DUCK = duckdb.connect()


def duck() -> duckdb.DuckDBPyConnection:
    return DUCK


def parquet_as_sent(rows: list[dict[str, Any]], schema: pa.Schema) -> list[dict[str, Any]]:
    """Rows read from Parquet in the encoding Deyel 8.4 sends: dates as epoch-ms text, grids as JSON."""
    out = []
    for row in rows:
        record = {}
        for name, value in row.items():
            kind = schema.field(name).type
            if value is not None and pa.types.is_timestamp(kind):
                value = str(int(value.timestamp() * 1000))
            elif value is not None and str(kind) == "extension<arrow.json>":
                value = json.loads(value)
            record[name] = value
        out.append(record)
    return out


def test_parquet_reads_back_as_the_served_instances_with_their_types(deyel_conn, emulator, tmp_path):
    expected = served()
    target = tmp_path / "accounts.parquet"
    result = operator(target, format="parquet", compression="zstd", page_size=20).execute({})
    assert result["records"] == len(expected) == 50
    assert result["parts"] == [{"path": target.as_uri(), "records": 50, "bytes": target.stat().st_size}]
    assert result["bytes"] == target.stat().st_size and result["skipped"] is False

    table = pq.read_table(target)
    assert parquet_as_sent(table.to_pylist(), table.schema) == expected
    assert pq.ParquetFile(target).metadata.row_group(0).column(0).compression == "ZSTD"

    described = duck().sql(f"DESCRIBE SELECT * FROM '{target}'").fetchall()  # noqa: S608
    types = {name: kind for name, kind, *_ in described}
    assert types["dtLastUpdate"] == types["dtOpening"] == "TIMESTAMP WITH TIME ZONE"
    assert (types["qtEmployee"], types["nuRevenue"], types["cbIsPartner"]) == ("BIGINT", "DOUBLE", "BOOLEAN")
    assert (types["lsAddress"], types["links"], types["idObjectValue"]) == ("JSON", "JSON", "VARCHAR")
    columns = "idObjectValue, epoch_ms(dtLastUpdate), qtEmployee, cbIsPartner, lsAddress"
    rows = duck().sql(f"SELECT {columns} FROM '{target}'").fetchall()  # noqa: S608
    assert [(i, str(ms), qt, cb, json.loads(grid)) for i, ms, qt, cb, grid in rows] == [
        (r["idObjectValue"], r["dtLastUpdate"], r["qtEmployee"], r["cbIsPartner"], r["lsAddress"])
        for r in expected
    ]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_json_lines_read_back_with_pyarrow_and_duckdb(deyel_conn, emulator, tmp_path, codec):
    expected = served()
    target = tmp_path / f"accounts.jsonl.{'gz' if codec == 'gzip' else 'zst'}"
    result = operator(target, compression=codec, page_size=20).execute({})
    assert result["bytes"] == target.stat().st_size
    magic = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}[codec]
    assert target.read_bytes().startswith(magic)
    with pa.input_stream(str(target), compression=codec) as stream:
        lines = stream.read().decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == expected
    assert pa_json.read_json(pa.input_stream(str(target), compression=codec)).num_rows == 50
    query = (
        f"SELECT json FROM read_json_objects('{target}', format='newline_delimited', compression='{codec}')"  # noqa: S608
    )
    assert [json.loads(text) for (text,) in duck().sql(query).fetchall()] == expected


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_csv_reads_back_with_pyarrow_and_duckdb(deyel_conn, emulator, tmp_path, codec):
    expected = served()
    columns = list(expected[0])
    target = tmp_path / f"accounts.csv.{'gz' if codec == 'gzip' else 'zst'}"
    operator(target, format="csv", compression=codec, page_size=20).execute({})
    cells = [[str(csv_cell(record.get(name))) for name in columns] for record in expected]

    table = pa_csv.read_csv(
        pa.input_stream(str(target), compression=codec),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()), strings_can_be_null=False
        ),
    )
    assert table.column_names == columns
    assert [[row[name] for name in columns] for row in table.to_pylist()] == cells
    query = (
        f"SELECT * FROM read_csv('{target}', header=true, all_varchar=true, new_line='\\n', "  # noqa: S608
        f"compression='{codec}')"
    )
    rows = duck().sql(query).fetchall()
    assert [["" if cell is None else cell for cell in row] for row in rows] == cells


def test_gzip_output_is_the_same_bytes_on_a_rerun(deyel_conn, emulator, tmp_path):
    """No timestamp or file name in the gzip header: an unchanged form gives an identical file."""
    target = tmp_path / "a.jsonl.gz"
    operator(target, compression="gzip").execute({})
    first = target.read_bytes()
    operator(target, compression="gzip").execute({})
    assert target.read_bytes() == first
    assert gzip.decompress(first).count(b"\n") == 50


def test_a_late_fraction_widens_the_column_of_the_row_groups_already_written(deyel_conn, emulator, tmp_path):
    hook = DeyelHook()
    created = hook.create_instance(FORM, {"dsCompany": "Late", "qtEmployee": 12.5})
    expected = served()
    target = tmp_path / "wide.parquet"
    # One row group per page of 10: the 50 integers are on disk before 12.5 arrives (the last instance).
    result = operator(target, format="parquet", page_size=10, row_group_bytes=1).execute({})
    assert result["records"] == 51
    table = pq.read_table(target)
    assert table.schema.field("qtEmployee").type == pa.float64()
    assert table.column("qtEmployee").to_pylist() == [float(r["qtEmployee"]) for r in expected]
    assert table.column("idObjectValue").to_pylist()[-1] == created["idObjectValue"]
    assert duck().sql(f"SELECT typeof(qtEmployee) FROM '{target}' LIMIT 1").fetchall() == [("DOUBLE",)]  # noqa: S608
    assert sorted(os.listdir(tmp_path)) == ["wide.parquet"]


def test_a_value_that_does_not_fit_its_declared_type_fails_and_publishes_nothing(deyel_conn, tmp_path):
    # A server that stores what it is sent (the emulator checks types unless told not to).
    with run_emulator(records=50, validate_writes=False) as emulator:
        deyel_conn(url=emulator.url)
        DeyelHook().create_instance(FORM, {"dsCompany": "Bad", "qtEmployee": "about 40"})
        target = tmp_path / "typed.parquet"
        with pytest.raises(DeyelSchemaError) as caught:
            operator(target, format="parquet", schema={"qtEmployee": "int64"}, page_size=10).execute({})
    assert (caught.value.field, caught.value.position, caught.value.instance_id) == ("qtEmployee", 51, "51")
    assert "record 51 of this run (idObjectValue '51') holds 'about 40'" in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_an_empty_run_with_skip_writes_no_file_and_emits_no_event(deyel_conn, emulator, tmp_path):
    asset = Asset(tmp_path.as_uri())
    task = DeyelExtractOperator(
        task_id="x",
        form=FORM,
        output=str(tmp_path / "day.parquet"),
        format="parquet",
        on_empty="skip",
        asset=asset,
    )
    assert asset in task.outlets
    events = outlet_events()
    # The emulator's instances were all updated on 2026-01-01: this interval holds none.
    start, end = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 2, tzinfo=UTC)
    summary = task.execute({"data_interval_start": start, "data_interval_end": end, "outlet_events": events})
    assert summary["skipped"] is True and summary["records"] == 0
    assert summary["path"] is None and summary["parts"] == [] and summary["bytes"] == 0
    assert os.listdir(tmp_path) == []
    assert asset not in task.outlets  # Airflow emits an event for every outlet of a successful task
    assert len(events) == 0

    # The same run with on_empty="write" (the default) publishes an empty file and its event.
    task = DeyelExtractOperator(task_id="x", form=FORM, output=str(tmp_path / "day.jsonl"), asset=asset)
    summary = task.execute({"data_interval_start": start, "data_interval_end": end, "outlet_events": events})
    assert summary["skipped"] is False and (tmp_path / "day.jsonl").read_bytes() == b""
    assert events[asset].extra == summary and asset in task.outlets


def part_names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize(
    ("fmt", "name", "options", "records", "sizes"),
    [
        ("jsonl", "accounts.jsonl", {}, 50, (2_000, 12_000)),
        ("csv", "accounts.csv", {}, 50, (2_000, 12_000)),
        ("parquet", "accounts.parquet", {}, 50, (1_500, 40_000)),
        # A codec emits its output in blocks: compressed parts are measured at a scale where that is small.
        ("jsonl", "accounts.jsonl.gz", {"compression": "gzip"}, 3_000, (20_000, 150_000)),
    ],
)
def test_max_file_bytes_splits_into_parts_and_a_rerun_replaces_the_set(
    deyel_conn, tmp_path, fmt, name, options, records, sizes
):
    stem, _, ext = name.partition(".")
    asset = Asset(tmp_path.as_uri())
    events = outlet_events()
    page_size = 5 if records < 100 else 200

    def run(max_file_bytes: int) -> dict:
        task = operator(
            tmp_path / name,
            format=fmt,
            page_size=page_size,
            max_file_bytes=max_file_bytes,
            asset=asset,
            **options,
        )
        summary = task.execute({"outlet_events": events})
        assert events[asset].extra == summary
        return summary

    with run_emulator(records=records) as emulator:
        deyel_conn(url=emulator.url)
        expected = [r["idObjectValue"] for r in served()]
        small = run(sizes[0])
        parts = small["parts"]
        assert len(parts) > 3 and small["path"] is None
        assert part_names(tmp_path) == sorted(
            [f"{stem}.part-{n:05d}.{ext}" for n in range(len(parts))] + [f"{name}.parts.json"]
        )
        assert manifest_of(tmp_path / f"{name}.parts.json") == parts
        assert [p["path"] for p in parts] == [
            (tmp_path / f"{stem}.part-{n:05d}.{ext}").as_uri() for n in range(len(parts))
        ]
        assert sum(p["records"] for p in parts) == small["records"] == records
        assert [p["bytes"] for p in parts] == [
            (tmp_path / Path(p["path"]).name).stat().st_size for p in parts
        ]
        # A part ends with the first page (Parquet: row group) that takes it to max_file_bytes.
        assert all(p["bytes"] >= sizes[0] for p in parts[:-1])
        assert read_ids(tmp_path, fmt, [Path(p["path"]).name for p in parts], options) == expected

        bigger = run(sizes[1])
        assert 1 <= len(bigger["parts"]) < len(parts)
        # The earlier run's extra parts are gone: the folder holds exactly this run's set.
        assert part_names(tmp_path) == sorted(
            [f"{stem}.part-{n:05d}.{ext}" for n in range(len(bigger["parts"]))] + [f"{name}.parts.json"]
        )
        assert manifest_of(tmp_path / f"{name}.parts.json") == bigger["parts"]
        assert read_ids(tmp_path, fmt, [Path(p["path"]).name for p in bigger["parts"]], options) == expected


def manifest_of(path: Path) -> list[dict[str, Any]]:
    """The parts a manifest lists, in the XCom's form; its totals checked against them."""
    body = json.loads(path.read_text())
    parts = body["parts"]
    assert body["records"] == sum(p["records"] for p in parts)
    assert body["bytes"] == sum(p["bytes"] for p in parts)
    return [
        {"path": (path.parent / p["name"]).as_uri(), "records": p["records"], "bytes": p["bytes"]}
        for p in parts
    ]


def test_outputs_sharing_a_stem_keep_their_own_manifests(deyel_conn, tmp_path):
    """``a.jsonl`` and ``a.jsonl.gz`` split in one folder: each manifest lists its own parts (both were
    ``a.parts.json`` before, the second run overwriting the first's)."""
    plain = operator(tmp_path / "a.jsonl", page_size=5, max_file_bytes=2_000).execute({})
    packed = operator(tmp_path / "a.jsonl.gz", compression="gzip", page_size=5, max_file_bytes=2_000).execute(
        {}
    )
    assert len(plain["parts"]) > 1 and len(packed["parts"]) >= 1
    assert manifest_of(tmp_path / "a.jsonl.parts.json") == plain["parts"]
    assert manifest_of(tmp_path / "a.jsonl.gz.parts.json") == packed["parts"]
    assert not (tmp_path / "a.parts.json").exists()


def test_a_manifest_of_the_old_name_listing_this_outputs_parts_is_removed(deyel_conn, tmp_path):
    """Releases before 0.2 named the manifest after the stem: one listing this output's parts would go on
    listing a set the rerun replaces; one listing another output's parts is left to that output."""
    first = operator(tmp_path / "a.jsonl", page_size=5, max_file_bytes=2_000).execute({})
    names = [Path(p["path"]).name for p in first["parts"]]
    old = {"parts": [{"name": n, "records": 1, "bytes": 1} for n in names], "records": 1, "bytes": 1}
    (tmp_path / "a.parts.json").write_text(json.dumps(old))
    operator(tmp_path / "a.jsonl", page_size=5, max_file_bytes=1_000).execute({})
    assert not (tmp_path / "a.parts.json").exists()
    other = {"parts": [{"name": "a.part-00000.csv", "records": 1, "bytes": 1}], "records": 1, "bytes": 1}
    (tmp_path / "a.parts.json").write_text(json.dumps(other))  # another output's: kept
    operator(tmp_path / "a.jsonl", page_size=5, max_file_bytes=1_000).execute({})
    assert json.loads((tmp_path / "a.parts.json").read_text()) == other


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {p.name: p.read_bytes() if p.is_file() else None for p in sorted(folder.iterdir())}


def test_a_part_that_cannot_be_published_fails_the_run_before_any_part_is_replaced(
    deyel_conn, emulator, tmp_path
):
    first = operator(tmp_path / "a.jsonl", page_size=5, max_file_bytes=2_000).execute({})
    assert len(first["parts"]) > 4
    # A folder (someone else's, or a leftover) where the rerun's part 3 goes.
    (tmp_path / "a.part-00003.jsonl").unlink()
    (tmp_path / "a.part-00003.jsonl").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(DeyelConfigError, match=r"'a.part-00003.jsonl' .* is a folder"):
        operator(tmp_path / "a.jsonl", page_size=5, max_file_bytes=1_000).execute({})
    assert snapshot(tmp_path) == before  # no part replaced, the first run's manifest still there
    # The manifest is written last and a folder at its name is refused first as well.
    (tmp_path / "a.part-00003.jsonl").rmdir()
    (tmp_path / "a.jsonl.parts.json").unlink()
    (tmp_path / "a.jsonl.parts.json").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(DeyelConfigError, match=r"'a.jsonl.parts.json' .* is a folder"):
        operator(tmp_path / "a.jsonl", page_size=5, max_file_bytes=1_000).execute({})
    assert snapshot(tmp_path) == before
    if os.getuid() != 0:
        return  # only root can give a file to another user
    (tmp_path / "a.jsonl.parts.json").rmdir()
    os.chown(tmp_path / "a.part-00002.jsonl", 65534, 65534)  # a sticky /tmp would refuse its rename
    before = snapshot(tmp_path)
    with pytest.raises(DeyelConfigError, match=r"'a.part-00002.jsonl' .* belongs to another user"):
        operator(tmp_path / "a.jsonl", page_size=5, max_file_bytes=1_000).execute({})
    assert snapshot(tmp_path) == before


def test_a_run_without_max_file_bytes_removes_an_earlier_runs_parts(deyel_conn, emulator, tmp_path):
    operator(tmp_path / "a.jsonl", page_size=5, max_file_bytes=2_000).execute({})
    (tmp_path / "a.part-00099.jsonl").mkdir()  # not a file of ours: left alone
    (tmp_path / "b.part-00000.jsonl").write_text("another output's part\n")
    result = operator(tmp_path / "a.jsonl", page_size=5).execute({})
    assert part_names(tmp_path) == ["a.jsonl", "a.part-00099.jsonl", "b.part-00000.jsonl"]
    assert result["records"] == len((tmp_path / "a.jsonl").read_text().splitlines())


def read_ids(folder: Path, fmt: str, names: list[str], options: dict) -> list[str]:
    ids: list[str] = []
    for name in names:
        path = folder / name
        if fmt == "parquet":
            ids += pq.read_table(path).column("idObjectValue").to_pylist()
            continue
        codec = options.get("compression")
        with pa.input_stream(str(path), compression=codec) as stream:
            data = stream.read()
        if fmt == "jsonl":
            ids += [json.loads(line)["idObjectValue"] for line in data.decode("utf-8").splitlines()]
        else:
            table = pa_csv.read_csv(
                pa.py_buffer(data),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                convert_options=pa_csv.ConvertOptions(column_types={"idObjectValue": pa.string()}),
            )
            ids += table.column("idObjectValue").to_pylist()
    return ids


def test_csv_parts_all_get_the_header_of_a_field_that_appears_late(deyel_conn, emulator, tmp_path):
    DeyelHook().create_instance(FORM, {"dsCompany": "Late", "dsNewField": "x"})
    result = operator(tmp_path / "a.csv", format="csv", page_size=5, max_file_bytes=3_000).execute({})
    headers = [Path(p["path"].removeprefix("file://")).read_text().split("\n", 1)[0] for p in result["parts"]]
    assert len(headers) > 2 and len(set(headers)) == 1 and headers[0].endswith(",dsNewField")


def test_a_link_planted_at_a_part_name_is_replaced_not_written_through(deyel_conn, emulator, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.part-00001.jsonl").symlink_to(victim)
    result = operator(folder / "a.jsonl", page_size=5, max_file_bytes=2_000).execute({})
    assert victim.read_text() == "keep me"
    assert not (folder / "a.part-00001.jsonl").is_symlink()
    assert len(result["parts"]) > 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"output": "x.jsonl", "format": "parquet"},
            r"ends with '\.jsonl', which is jsonl, but format='parquet'",
        ),
        ({"output": "x.parquet.gz", "format": "parquet"}, "Parquet compresses inside the file"),
        (
            {"output": "x.jsonl", "compression": "gzip"},
            r"compression='gzip' writes a \.gz file.*'\.\.\.\.jsonl\.gz'",
        ),
        (
            {"output": "x.csv.gz", "format": "csv"},
            r"compression=None writes plain text: pass compression='gzip'",
        ),
        ({"output": "x.jsonl.zst", "compression": "gzip"}, r"compression='gzip' writes a \.gz file"),
        ({"output": "x.jsonl", "compression": "snappy"}, r"compression for format='jsonl' must be one of"),
        ({"output": "x.parquet", "format": "parquet", "compression": "lz4"}, "must be one of"),
        (
            {"output": "x.parquet", "format": "parquet", "schema": {"a": "integer"}},
            r"schema\['a'\] = 'integer'",
        ),
        ({"output": "x.jsonl", "schema": {"a": "int64"}}, "does not apply to format='jsonl'"),
        ({"output": "x.jsonl", "on_empty": "maybe"}, "on_empty must be one of"),
        ({"output": "x.jsonl", "max_file_bytes": 0}, "max_file_bytes must be a positive number"),
        ({"output": "x.xml", "format": "xml"}, "format must be one of"),
    ],
)
def test_bad_output_options_are_config_errors_at_construction(tmp_path, kwargs, message):
    output = tmp_path / kwargs.pop("output")
    with pytest.raises(DeyelConfigError, match=message):
        operator(output, **kwargs)


def test_templated_options_are_checked_once_rendered_before_anything_is_read(deyel_conn, emulator, tmp_path):
    task = operator(tmp_path / "{{ ds }}.jsonl", compression="{{ params.codec }}")
    task.output_path, task.compression = str(tmp_path / "2026-01-01.jsonl"), "gzip"  # as rendered
    with pytest.raises(DeyelConfigError, match=r"compression='gzip' writes a \.gz file"):
        task.execute({})
    assert emulator.stats()["api_requests"] == 0 and os.listdir(tmp_path) == []


def test_a_missing_zstd_codec_is_a_config_error_before_anything_is_read(
    deyel_conn, emulator, tmp_path, monkeypatch
):
    import backports

    # As if neither Python 3.14's compression.zstd nor the [zstd] extra were installed.
    monkeypatch.delattr(backports, "zstd")
    monkeypatch.setitem(sys.modules, "backports.zstd", None)
    monkeypatch.setitem(sys.modules, "compression", None)
    for on_empty in ("write", "skip"):
        task = operator(tmp_path / "a.jsonl.zst", compression="zstd", on_empty=on_empty)
        with pytest.raises(DeyelConfigError, match=r"compression='zstd' needs the zstd codec"):
            task.execute({})
    assert emulator.stats()["api_requests"] == 0 and os.listdir(tmp_path) == []
