"""The mirror's merge into PostgreSQL (issue 26): COPY + MERGE against row-by-row ``INSERT ... ON CONFLICT``.

The input is a JSON Lines file of N CRM_ACCOUNT instances shaped as the extraction writes them (the
emulator's seeded records, as its listing shows them: id, fields, ``dtLastUpdate`` in ms, self link). Before
every run the target table is reset (untimed) to hold an older version of every other instance, so the
merge is half updates, half inserts, interleaved through the file. Variants:

- **COPY + MERGE**: the example's own code (``dags_examples/deyel_mirror_postgres.py``: ``copy_then`` with
  its ``MERGE``, imported, not copied): COPY of the file into a temporary staging table, one ``MERGE`` keyed
  by the instance id, the newest ``dtLastUpdate`` wins; one transaction.
- **row by row**: the naive way, with psycopg 3: one ``INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE
  excluded.dt_last_update > t.dt_last_update`` per line, one transaction (psycopg prepares the statement
  after its fifth run, so this is the loop at its best short of batching).
- **executemany**: the same statement through ``cursor.executemany`` (psycopg 3 sends it in pipeline mode:
  no wait for each row's reply), to say whether batching the naive way closes the gap.

Each timed run connects, loads and commits (the MERGE side through the example's ``PostgresHook``
connection ``mirror_postgres``, pointed at the bench database); resetting the table, ``VACUUM ANALYZE``
and a ``CHECKPOINT`` come before the clock. Each row also shows the table after the run (rows and an
order-free digest of id, ``dt_last_update`` and ``doc``): equal on every row, or the variants did not do
the same work.

PostgreSQL: ``BENCH_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432``), in a database of its own
created for the run and dropped after it; without a server every row is a ``skipped:`` row.

    python -m bench mirror            # 1,000,000 instances
    python -m bench --quick mirror    # 20,000
    BENCH_MIRROR_RECORDS=100000 python -m bench mirror
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.harness import Column, Measurement, Table, Variant, rate, run_table, sized
from tests.support import postgres

SERVER = os.environ.get("BENCH_POSTGRES", postgres.SERVER)
EXAMPLE = Path(__file__).resolve().parent.parent / "dags_examples" / "deyel_mirror_postgres.py"
#: How much older than the input the present half's rows are (ms): the input's version wins.
OLDER_MS = 3_600_000

UPSERT = """
INSERT INTO {table} AS t (id, dt_last_update, doc) VALUES (%s, %s, %s::jsonb)
ON CONFLICT (id) DO UPDATE SET dt_last_update = excluded.dt_last_update, doc = excluded.doc
WHERE excluded.dt_last_update > t.dt_last_update
"""

# Order-free, so that it costs one scan: the sum of a 64-bit hash of each row, modulo 2**64.
DIGEST = """
SELECT count(*), coalesce(sum(hashtextextended(id || ':' || dt_last_update || ':' || doc::text, 0)::numeric)
                          % 18446744073709551616, 0)
FROM {table}
"""


def example() -> ModuleType:
    """The mirror example's module (its SQL and ``copy_then``), loaded from dags_examples/ by path."""
    spec = importlib.util.spec_from_file_location("deyel_mirror_postgres_example", EXAMPLE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {EXAMPLE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def instances(n: int) -> Iterator[dict[str, Any]]:
    """N instances as the extraction writes them: the emulator's seeded records as its listing shows them."""
    from deyel_provider.emulator.records import RecordGenerator

    generator = RecordGenerator(
        seed=42, updated_start_ms=1767225600000, updated_step_ms=60_000, v80=False, records=n
    )
    for i in range(n):
        instance_id = str(i + 1)
        yield {
            "idObjectValue": instance_id,
            **generator.fields(i),
            "links": [{"rel": "self", "href": f"/v1.0/forms/CRM_ACCOUNT/instances/{instance_id}"}],
        }


def write_input(folder: Path, n: int) -> tuple[Path, Path]:
    """The changes file (N instances) and the table's starting rows (an older version of every other one,
    as ``id``, ``dt_last_update`` and ``doc`` lines for COPY)."""
    changes, present = folder / "changes.jsonl", folder / "present.jsonl"
    with changes.open("w", encoding="utf-8") as out, present.open("w", encoding="utf-8") as old:
        for index, instance in enumerate(instances(n)):
            out.write(json.dumps(instance, ensure_ascii=False, separators=(",", ":")) + "\n")
            if index % 2 == 0:
                stamp = int(instance["dtLastUpdate"]) - OLDER_MS
                older = {**instance, "dtLastUpdate": str(stamp), "dsNotes": "an older version"}
                old.write(json.dumps(older, ensure_ascii=False, separators=(",", ":")) + "\n")
    return changes, present


@contextmanager
def database(server: str | None = None) -> Iterator[str]:
    """A database of its own on ``server`` (default ``SERVER``), dropped afterwards; yields its URI."""
    server = server or SERVER
    with postgres.own_database("bench_mirror", server, connect_timeout=5) as name:
        yield f"{server}/{name}"


def reset(uri: str, mirror: ModuleType, present: Path) -> None:
    """The table as every run finds it: the example's tables, holding the older half; then vacuumed,
    analysed and checkpointed, so that no run pays for the previous one's dead rows or dirty pages."""
    import psycopg

    table = mirror.TABLE
    with psycopg.connect(uri, autocommit=True) as conn:
        for statement in mirror.CREATE_TABLES:
            conn.execute(statement)
        conn.execute(f"TRUNCATE {table}, {mirror.GONE_TABLE}")
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE present (line text NOT NULL) ON COMMIT DROP")
            with cursor.copy(mirror.COPY_LINES.format(table="present")) as copy, present.open("rb") as src:
                while chunk := src.read(1 << 20):
                    copy.write(chunk)
            # From this file's constants and the example's table name only (no user input).
            cursor.execute(
                f"INSERT INTO {table} (id, dt_last_update, doc) "  # noqa: S608
                "SELECT line::jsonb ->> 'idObjectValue', (line::jsonb ->> 'dtLastUpdate')::bigint, "
                "line::jsonb FROM present"
            )
        conn.execute(f"VACUUM ANALYZE {table}")
        conn.execute("CHECKPOINT")


def contents(uri: str, table: str) -> str:
    """The table's rows and digest, e.g. "20,000 rows, 3f2a...": what every variant must leave."""
    import psycopg

    with psycopg.connect(uri) as conn:
        count, digest = conn.execute(DIGEST.format(table=table)).fetchone() or (0, 0)
    return f"{count:,} rows, {int(digest) & (1 << 64) - 1:016x}"


def merge(uri: str, mirror: ModuleType, changes: Path) -> int:
    """COPY + MERGE, the example's way (its connection ``mirror_postgres`` points at ``uri``)."""
    os.environ["AIRFLOW_CONN_MIRROR_POSTGRES"] = uri
    return int(mirror.copy_then(changes.as_uri(), "staging_changes", mirror.MERGE))


def row_by_row(uri: str, table: str, changes: Path, *, many: bool = False) -> int:
    """The naive way: one ``INSERT ... ON CONFLICT`` per line (or all lines through ``executemany``), one
    transaction. Returns the rows written."""
    import psycopg

    statement = UPSERT.format(table=table)

    def params() -> Iterator[tuple[str, int, str]]:
        with changes.open(encoding="utf-8") as lines:
            for line in lines:
                instance = json.loads(line)
                yield instance["idObjectValue"], int(instance["dtLastUpdate"]), line

    with psycopg.connect(uri) as conn, conn.cursor() as cursor:
        if many:
            cursor.executemany(statement, params())
            return int(cursor.rowcount)
        written = 0
        for row in params():
            cursor.execute(statement, row)
            written += cursor.rowcount
        return written  # the with block commits


def variants(uri: str, mirror: ModuleType, changes: Path, present: Path, n: int) -> list[Variant]:
    table = mirror.TABLE

    def timed(load: Callable[[], int]) -> Callable[[], Measurement]:
        def run_one() -> Measurement:
            reset(uri, mirror, present)
            start = time.perf_counter()
            written = load()
            seconds = time.perf_counter() - start
            return rate(n, seconds, written=written, table=contents(uri, table))

        return run_one

    return [
        Variant("COPY + MERGE (the example's copy_then)", timed(lambda: merge(uri, mirror, changes))),
        Variant("row by row, INSERT ... ON CONFLICT", timed(lambda: row_by_row(uri, table, changes))),
        Variant(
            "executemany, INSERT ... ON CONFLICT",
            timed(lambda: row_by_row(uri, table, changes, many=True)),
        ),
    ]


def _table(n: int) -> Table:
    return Table(
        f"Merge of {n:,} changed instances (half updates, half inserts) into PostgreSQL, one transaction",
        metric="records_per_s",
        unit="records/s",
        baseline="row by row, INSERT ... ON CONFLICT",
        columns=[
            Column("records", "records", how="exact"),
            Column("written", "rows written", how="exact"),
            Column("table", "table after (rows, digest)"),
        ],
        note="Each run connects, loads and commits; resetting the table (untimed) comes first.",
    )


def _skipped(reason: str) -> list[Variant]:
    labels = (
        "COPY + MERGE (the example's copy_then)",
        "row by row, INSERT ... ON CONFLICT",
        "executemany, INSERT ... ON CONFLICT",
    )
    return [Variant(label, skip=reason) for label in labels]


def run() -> None:
    n = int(os.environ.get("BENCH_MIRROR_RECORDS", "0")) or sized(1_000_000, 20_000)
    try:
        import psycopg  # noqa: F401

        mirror = example()
    except ImportError as error:
        run_table(_table(n), _skipped(f"{type(error).__name__}: {error}"[:100]))
        return
    with ExitStack() as stack:
        try:
            uri = stack.enter_context(database())
        except Exception as error:  # no server here: the rows say so
            run_table(_table(n), _skipped(f"no PostgreSQL at {SERVER} ({type(error).__name__})"))
            return
        saved = os.environ.get("AIRFLOW_CONN_MIRROR_POSTGRES")
        stack.callback(_restore, "AIRFLOW_CONN_MIRROR_POSTGRES", saved)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-mirror-")))
        changes, present = write_input(folder, n)
        run_table(_table(n), variants(uri, mirror, changes, present, n))


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
