"""Write-back source bombs: a few KB of Parquet that decode to GBs, a JSON Lines line or a CSV cell of
hundreds of MB, a value nested hundreds deep. Each is a ``DeyelSourceError`` naming where, the bound and the
option, raised while the keys are checked: no request reaches the server, and memory stays bounded
(tracemalloc for the pure-Python readers; for Parquet, whose buffers tracemalloc does not see, a child
process under ``RLIMIT_AS`` reporting its peak RSS)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from deyel_provider.emulator.forms import TARGET_FORM
from deyel_provider.exceptions import DeyelConfigError, DeyelSourceError
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.load.sources import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    MAX_DEPTH,
    Source,
    check_keys,
)
from deyel_provider.load.upsert import load_records as upsert
from tests.support.memory import peak_memory
from tests.support.warm import run_python

KEY = "cdCustomer"
MiB = 1 << 20
#: What a child process may map beyond what it holds after its imports (the Parquet bombs decode to 4 GiB).
CHILD_HEADROOM = 1024 * MiB


def refused_before_any_request(emulator, source: object, match: str, **options: object) -> DeyelSourceError:
    with pytest.raises(DeyelSourceError, match=match) as refused:
        upsert(DeyelHook(), TARGET_FORM, source, KEY, **options)  # type: ignore[arg-type]
    stats = emulator.stats()
    assert (stats["api_requests"], stats["token_requests"]) == (0, 0)
    return refused.value


# -- JSON Lines ----------------------------------------------------------------------------------------------


def test_a_long_json_lines_line_is_refused_having_read_only_the_limit(emulator, deyel_conn, tmp_path):
    path = tmp_path / "long.jsonl"
    with path.open("w") as out:
        out.write(json.dumps({KEY: "C-1", "dsName": "fine"}) + "\n")
        out.write(json.dumps({KEY: "C-2", "dsName": "x" * (64 * MiB)}) + "\n")
    with peak_memory() as peak:
        error = refused_before_any_request(emulator, str(path), "line 2", max_record_bytes=64 * 1024)
    assert "max_record_bytes=65536" in str(error)
    assert peak[0] < 4 * MiB, peak  # the line is 64 MiB: the old reader held it, then its parsed copy


def test_at_the_default_cap_a_line_one_byte_longer_is_refused_and_one_at_it_is_read(
    emulator, deyel_conn, tmp_path
):
    def line(length: int) -> str:
        head = json.dumps({KEY: "C-1", "dsName": ""})
        return head[:-2] + "x" * (length - len(head)) + '"}'

    at_cap, past_cap = tmp_path / "at.jsonl", tmp_path / "past.jsonl"
    at_cap.write_text(line(DEFAULT_MAX_RECORD_BYTES) + "\r\n")
    past_cap.write_text(line(DEFAULT_MAX_RECORD_BYTES + 1) + "\n")
    assert check_keys(Source(str(at_cap)), KEY) == 1
    error = refused_before_any_request(emulator, str(past_cap), "line 1 is more than 1048576 bytes long")
    assert f"max_record_bytes={DEFAULT_MAX_RECORD_BYTES}" in str(error)


# -- CSV -----------------------------------------------------------------------------------------------------


def test_a_big_csv_cell_is_refused_having_read_only_the_limit(emulator, deyel_conn, tmp_path):
    path = tmp_path / "cell.csv"
    with path.open("w") as out:
        out.write(f"{KEY},dsName\nC-1,fine\n")
        out.write('C-2,"' + "x" * (64 * MiB) + '"\n')
    with peak_memory() as peak:
        error = refused_before_any_request(emulator, str(path), "line 3", max_record_bytes=64 * 1024)
    assert "max_record_bytes=65536" in str(error)
    assert peak[0] < 4 * MiB, peak


def test_a_csv_record_over_many_lines_is_bounded_as_a_whole(tmp_path):
    path = tmp_path / "lines.csv"
    path.write_text(f"{KEY},dsName\n" + 'C-1,"' + "x\n" * 2000 + '"\n')
    with pytest.raises(DeyelSourceError, match="the record reaching line 1023 is more than 2048 bytes"):
        check_keys(Source(str(path), max_record_bytes=2048), KEY)


def test_csv_cells_past_the_csv_modules_limit_are_read_and_its_limit_is_left_alone(tmp_path):
    """Python's own cell limit (128 KiB, process-wide) is raised only while a row is read, never between."""
    import csv

    path = tmp_path / "wide.csv"
    path.write_text(f"{KEY},dsName\nC-1,{'x' * 500_000}\nC-2,y\n")
    before = csv.field_size_limit()
    records = Source(str(path)).records()
    first = next(records)
    assert len(first.values["dsName"]) == 500_000 and csv.field_size_limit() == before  # between rows
    assert [r.values[KEY] for r in records] == ["C-2"]
    assert csv.field_size_limit() == before


# -- nesting -------------------------------------------------------------------------------------------------


def deep(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def test_a_value_nested_985_deep_is_a_source_error_not_a_recursion_error(emulator, deyel_conn, tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(
        json.dumps({KEY: "C-1", "lsRows": "PLACEHOLDER"}).replace('"PLACEHOLDER"', "[" * 985 + "]" * 985)
    )
    refused_before_any_request(emulator, str(path), f"line 1 holds a value nested deeper than {MAX_DEPTH}")


def test_deep_nesting_from_a_list_and_a_csv_grid_cell_is_a_source_error(emulator, deyel_conn, tmp_path):
    refused_before_any_request(
        emulator, [{KEY: "C-1", "lsRows": deep(2000)}], "record 1 holds a value nested"
    )
    path = tmp_path / "deep.csv"
    path.write_text(f"{KEY},lsRows\nC-1,{'[' * 5000}{']' * 5000}\n")
    refused_before_any_request(emulator, str(path), "line 2 holds a value nested deeper")


def test_nesting_up_to_the_limit_is_read(tmp_path):
    row = {KEY: "C-1", "lsRows": deep(MAX_DEPTH - 1)}  # the record's own object is the first level
    assert check_keys(Source([row]), KEY) == 1
    with pytest.raises(DeyelSourceError, match="nested deeper than 64"):
        check_keys(Source([{KEY: "C-1", "lsRows": deep(MAX_DEPTH + 1)}]), KEY)


# -- batches -------------------------------------------------------------------------------------------------


def test_a_batch_ends_before_it_would_pass_max_batch_bytes(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({KEY: f"C-{i}", "dsName": "x" * 300_000}) + "\n" for i in range(10)))
    sizes = [len(chunk) for chunk in Source(str(path), max_batch_bytes=MiB).chunks(100)]
    assert sizes == [3, 3, 3, 1]
    assert [len(chunk) for chunk in Source(str(path)).chunks(4)] == [4, 4, 2]  # the default: 16 MiB


def test_the_bounds_are_checked_when_the_load_starts(emulator, deyel_conn):
    with pytest.raises(DeyelConfigError, match="max_record_bytes"):
        upsert(DeyelHook(), TARGET_FORM, [{KEY: "C-1"}], KEY, max_record_bytes=0)
    with pytest.raises(DeyelConfigError, match="must not pass max_batch_bytes"):
        upsert(DeyelHook(), TARGET_FORM, [{KEY: "C-1"}], KEY, max_record_bytes=2 * DEFAULT_MAX_BATCH_BYTES)
    assert emulator.stats()["api_requests"] == 0


# -- Parquet -------------------------------------------------------------------------------------------------


def dictionary_bomb(path: Path, value_bytes: int, rows: int = 2000, nested: bool = False) -> int:
    """A Parquet file whose text column repeats one value of ``value_bytes`` on every row through the file's
    dictionary (zstd): a few KB on disk, ``value_bytes * rows`` decoded. Returns its size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    value = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * value_bytes]))
    column = pa.ListArray.from_arrays(pa.array(range(rows + 1), pa.int32()), value) if nested else value
    table = pa.table({KEY: [f"C-{i}" for i in range(rows)], "lsRows" if nested else "dsBlob": column})
    pq.write_table(table, path, compression="zstd", compression_level=22, store_schema=False)
    return path.stat().st_size


def run_bounded(code: str) -> tuple[str, int]:
    """Run ``code`` in a child process whose address space is capped at what it maps after its imports plus
    :data:`CHILD_HEADROOM`; return its last output line and its peak RSS growth past the imports, in bytes
    (Linux's peak RSS, ``VmHWM``, is restarted after the imports by writing 5 to ``/proc/self/clear_refs``).

    Arrow allocates from the system's allocator there: its default (mimalloc) reserves about 1 GiB of address
    space up front, which ``RLIMIT_AS`` counts though nothing is used; what is decoded is the same."""
    script = textwrap.dedent(
        """
        import resource
        import tempfile
        import pyarrow, pyarrow.parquet
        # A first read of a one-row file: Arrow's compute kernels start up on first use (about 30 MiB,
        # once per process); the measure is of the bomb's data.
        with tempfile.TemporaryDirectory() as folder:
            pyarrow.parquet.write_table(pyarrow.table({{"k": ["a"]}}), folder + "/warm.parquet")
            from deyel_provider.load.sources import Source, check_keys
            check_keys(Source(folder + "/warm.parquet"), "k")
        from deyel_provider.exceptions import DeyelSourceError
        from deyel_provider.hooks.deyel import DeyelHook
        from deyel_provider.load.sources import Source, check_keys
        from deyel_provider.load.upsert import load_records as upsert
        mapped = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mapped + {headroom}, mapped + {headroom}))
        def status(field):
            return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024
        open("/proc/self/clear_refs", "w").write("5")  # the peak RSS (VmHWM) restarts here, not the imports'
        before = status("VmRSS")
        try:
        {code}
        except DeyelSourceError as exc:
            outcome = "DeyelSourceError: " + str(exc)
        except MemoryError as exc:
            outcome = "MemoryError: " + str(exc)[:200]
        print(status("VmHWM") - before)
        print(outcome)
        """
    ).format(headroom=CHILD_HEADROOM, code=textwrap.indent(textwrap.dedent(code), "    "))
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"}
    done = run_python(script, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    grown, outcome = done.stdout.splitlines()[-2:]
    return outcome, int(grown)


@pytest.mark.parametrize("nested", [False, True], ids=["column", "grid"])
def test_a_tiny_parquet_dictionary_bomb_is_refused_before_it_is_decoded(
    emulator, deyel_conn, tmp_path, nested
):
    path = tmp_path / "bomb.parquet"
    assert dictionary_bomb(path, 2 * MiB, nested=nested) < 16 * 1024  # 4 GiB decoded
    outcome, grown = run_bounded(
        f"""
        upsert(DeyelHook(), {TARGET_FORM!r}, {str(path)!r}, {KEY!r})
        outcome = "loaded"
        """
    )
    assert outcome.startswith("DeyelSourceError: ") and "row 1 is 2097" in outcome, outcome
    assert "bytes decoded, past max_record_bytes=1048576" in outcome
    assert grown < 64 * MiB, grown
    assert (emulator.stats()["api_requests"], emulator.stats()["token_requests"]) == (0, 0)


@pytest.mark.parametrize("kind", ["json", "fixed"])
def test_json_and_fixed_width_parquet_columns_are_sized_too(tmp_path, kind):
    """Grids as the extraction writes them (Arrow's JSON type, kept in the file's Arrow schema) and
    fixed-width binary are sized like text: a 2 MiB value is refused at row 1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / f"{kind}.parquet"
    width = 2 * MiB
    if kind == "json":
        column = pa.array(["[" + "0," * (width // 2 - 1) + "0]"] * 20).cast(pa.json_())
    else:
        column = pa.array([b"x" * width] * 20, pa.binary(width))
    pq.write_table(pa.table({KEY: [f"C-{i}" for i in range(20)], "lsRows": column}), path, compression="zstd")
    outcome, grown = run_bounded(f"outcome = str(check_keys(Source({str(path)!r}), {KEY!r}))")
    assert outcome.startswith("DeyelSourceError: ") and "row 1 is 2097" in outcome, outcome
    assert grown < 64 * MiB, grown


def test_rows_under_the_cap_are_decoded_a_bounded_run_at_a_time(tmp_path):
    """2,000 rows of 512 KiB each (1 GiB decoded) are all read, never more than ``max_batch_bytes`` of them
    at once."""
    path = tmp_path / "heavy.parquet"
    dictionary_bomb(path, 512 * 1024)
    outcome, grown = run_bounded(f"outcome = str(check_keys(Source({str(path)!r}), {KEY!r}))")
    assert outcome == "2000"
    # Two runs' worth (the Arrow run cast and its Python rows) and the allocator's slack: the peak RSS of
    # the same code varies with thread timing (48-50 MiB alone; 49-95 MiB beside three busy loops, with
    # glibc's arenas limited to one or its mmap threshold fixed as well; 111 MiB once in a loaded CI run,
    # stop 39), far below the 1 GiB that decoding the file whole takes.
    assert grown < 2 * DEFAULT_MAX_BATCH_BYTES + 128 * MiB, grown


def test_a_parquet_decompression_bomb_is_refused_from_its_metadata(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "zeros.parquet"
    table = pa.table({KEY: ["C-1"], "dsBlob": ["\0" * (32 * MiB)]})
    pq.write_table(table, path, compression="zstd", use_dictionary=False)
    assert path.stat().st_size < 64 * 1024
    with (
        peak_memory() as peak,
        pytest.raises(DeyelSourceError, match="column dsBlob of row group 0 decompresses"),
    ):
        check_keys(Source(str(path)), KEY)
    assert peak[0] < 4 * MiB, peak
