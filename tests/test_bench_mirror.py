"""The mirror benchmark's variants (bench/mirror.py) do the same work: COPY + MERGE (the example's own
``copy_then``), the row-by-row ``INSERT ... ON CONFLICT`` loop and its ``executemany`` leave the same table,
row for row, on a real PostgreSQL (127.0.0.1:5432, a database of its own). No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import mirror


@pytest.fixture(scope="module")
def example():
    return mirror.example()


@pytest.fixture
def uri(monkeypatch):
    # merge() points the example's connection at the bench database: monkeypatch puts it back afterwards.
    monkeypatch.setenv("AIRFLOW_CONN_MIRROR_POSTGRES", "postgresql://unused@127.0.0.1:1/unused")
    with mirror.database() as created:
        yield created


def _rows(uri: str, table: str) -> list[tuple[str, int, Any]]:
    import psycopg

    with psycopg.connect(uri) as conn:
        return conn.execute(f"SELECT id, dt_last_update, doc FROM {table} ORDER BY id").fetchall()  # noqa: S608


def _loaders(uri: str, example, changes: Path) -> dict[str, Any]:
    table = example.TABLE
    return {
        "merge": lambda: mirror.merge(uri, example, changes),
        "row by row": lambda: mirror.row_by_row(uri, table, changes),
        "executemany": lambda: mirror.row_by_row(uri, table, changes, many=True),
    }


def test_every_variant_leaves_the_same_table(uri, example, tmp_path):
    changes, present = mirror.write_input(tmp_path, 60)
    expected = sorted(
        (line["idObjectValue"], int(line["dtLastUpdate"]), line)
        for line in map(json.loads, changes.read_text(encoding="utf-8").splitlines())
    )
    mirror.reset(uri, example, present)
    before = _rows(uri, example.TABLE)
    # The starting table: an older version of every other instance (the merge is half updates).
    assert len(before) == 30 and all(doc["dsNotes"] == "an older version" for _, _, doc in before)
    assert {key for key, _, _ in before} < {key for key, _, _ in expected}

    after: dict[str, list[tuple[str, int, Any]]] = {}
    for name, load in _loaders(uri, example, changes).items():
        mirror.reset(uri, example, present)
        assert load() == 60, name  # 30 inserts and 30 updates, each one row
        after[name] = _rows(uri, example.TABLE)
    # Row by row: every variant's table is the input, exactly.
    assert after["merge"] == after["row by row"] == after["executemany"] == expected
    digests = set()
    for load in _loaders(uri, example, changes).values():
        mirror.reset(uri, example, present)
        load()
        digests.add(mirror.contents(uri, example.TABLE))
    assert len(digests) == 1 and next(iter(digests)).startswith("60 rows, ")


def test_an_older_input_changes_nothing_on_any_side(uri, example, tmp_path):
    """The newest dtLastUpdate wins on both sides: the MERGE's ``WHEN MATCHED AND`` and the loop's ``WHERE``
    agree (a replay of the older versions writes no row and leaves the table as it was)."""
    changes, present = mirror.write_input(tmp_path, 40)
    for name, load in _loaders(uri, example, present).items():
        mirror.reset(uri, example, present)
        mirror.merge(uri, example, changes)
        newest = _rows(uri, example.TABLE)
        assert load() == 0, name
        assert _rows(uri, example.TABLE) == newest, name


def test_without_postgres_every_row_is_skipped(monkeypatch, capsys):
    monkeypatch.setattr(mirror, "SERVER", "postgresql://postgres@127.0.0.1:1")
    monkeypatch.setenv("BENCH_QUICK", "1")
    monkeypatch.setenv("BENCH_ROUNDS", "1")
    mirror.run()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert len(lines) == 3
    assert all("skipped: no PostgreSQL at postgresql://postgres@127.0.0.1:1" in line for line in lines)
