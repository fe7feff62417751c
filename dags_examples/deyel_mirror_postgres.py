"""Keep a PostgreSQL table equal to the CRM_ACCOUNT form: changes merged hourly, deletes applied.

Each hourly run:

1. ``create_table``: the mirror table if it is missing (``SQLExecuteQueryOperator``, common.sql);
2. ``extract_changes``: what changed since the last run (a watermark window, JSON Lines; the first run reads
   everything from ``start_from``);
3. ``merge_changes``: ``COPY`` of that file into a temporary staging table, then one ``MERGE`` into the
   target keyed by the instance id: the newest ``dtLastUpdate`` wins, so a rerun or an older file changes
   nothing (``PostgresHook``, one transaction);
4. ``find_deletes``: ``DeyelDeletedInstancesOperator``, the ids deleted (or edited out of ``search``) since
   the last snapshot;
5. ``apply_deletes``: ``COPY`` of those ids, remembered in ``<table>_gone`` with their ``gone_by``, then a
   ``DELETE`` of the rows they name that did not change after the instance was found gone (an instance that
   came back keeps its row). The ``MERGE`` skips a version older than its instance's ``gone_by``, so a
   rerun of an old run's merge cannot bring a deleted row back.

The deletes run in every cycle, right after the merge, not once a day: a snapshot only knows the instances
it listed, so with a daily snapshot an instance created and deleted between two of them would stay in the
table for ever (docs/mirroring.md). ``max_active_runs=1`` keeps the merge of one run from racing the
delete of another.

The table keeps each instance as Deyel's listing returns it (``doc``, jsonb) beside its id and
``dtLastUpdate``: typed columns are a view away, and a form that gains a field needs no migration. jsonb
refuses the NUL character: an escaped NUL in an instance is stored as U+FFFD (``NUL_FREE_LINE``).

Connections: ``deyel_default`` (see ``deyel_api_call.py``) and ``mirror_postgres``, an ordinary Airflow
``postgres`` connection, e.g. ``AIRFLOW_CONN_MIRROR_POSTGRES='postgresql://user:pass@db:5432/warehouse'``.
Files go under ``$DEYEL_DEMO_OUTPUT`` (else ``/tmp/deyel-extract``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG, Asset, ObjectStoragePath, task

from deyel_provider.operators.deletes import DeyelDeletedInstancesOperator
from deyel_provider.operators.extract import DeyelExtractOperator

FORM = "CRM_ACCOUNT"
ID_FIELD = "idObjectValue"
POSTGRES_CONN_ID = "mirror_postgres"
TABLE = "deyel_crm_account"
#: One row per instance found gone, with when: a replayed older changes file cannot bring it back.
GONE_TABLE = f"{TABLE}_gone"
OUTPUT = Path(os.environ.get("DEYEL_DEMO_OUTPUT", "/tmp/deyel-extract")).resolve().as_uri()  # noqa: S108
MIRROR = f"{OUTPUT}/{FORM}/mirror"
# One file per run, named after its run id (two manual runs may share a second of run_after).
RUN = "{{ run_id | replace(':', '') | replace('+', '') }}"

CREATE_TABLES = [
    f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id text PRIMARY KEY,
    dt_last_update bigint NOT NULL,
    doc jsonb NOT NULL
)
""",
    f"CREATE TABLE IF NOT EXISTS {GONE_TABLE} (id text PRIMARY KEY, gone_by bigint NOT NULL)",
]

# Each line of a JSON Lines file is one text value: a CSV dialect whose quote and delimiter never occur in
# JSON (control characters are always escaped there) keeps backslashes and quotes as they are.
COPY_LINES = "COPY {table} (line) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"

# PostgreSQL's jsonb refuses U+0000 (``\u0000`` in JSON), which any Deyel text field can hold: one such
# instance would fail the whole file's MERGE on every retry. The rule: each escaped NUL (a ``\u0000`` not
# itself escaped, i.e. after an even run of backslashes) becomes U+FFFD, the replacement character, in the
# mirror's ``doc``; other lines are cast as they are (the regexp only runs on a line holding ``\u0000``).
NUL_FREE_LINE = r"""CASE WHEN strpos(line, '\u0000') > 0
    THEN regexp_replace(line, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\ufffd', 'g') ELSE line END"""

# Built from this file's constants only (no user input): S608 does not apply.
MERGE = f"""
MERGE INTO {TABLE} AS t
USING (
    SELECT DISTINCT ON (id) id, dt_last_update, doc
    FROM (
        SELECT parsed.doc ->> '{ID_FIELD}' AS id, (parsed.doc ->> 'dtLastUpdate')::bigint AS dt_last_update,
               parsed.doc
        -- Each line parsed once (OFFSET 0 keeps the planner from inlining it back: three parses per line
        -- were two thirds of the MERGE's time, bench/mirror.py).
        FROM (SELECT ({NUL_FREE_LINE})::jsonb AS doc FROM staging_changes OFFSET 0) AS parsed
    ) AS changes
    -- A version older than the instance's disappearance is not brought back (a rerun of an old merge).
    WHERE NOT EXISTS (
        SELECT 1 FROM {GONE_TABLE} AS g WHERE g.id = changes.id AND g.gone_by > changes.dt_last_update
    )
    ORDER BY id, dt_last_update DESC
) AS s
ON t.id = s.id
WHEN MATCHED AND s.dt_last_update > t.dt_last_update THEN
    UPDATE SET dt_last_update = s.dt_last_update, doc = s.doc
WHEN NOT MATCHED THEN
    INSERT (id, dt_last_update, doc) VALUES (s.id, s.dt_last_update, s.doc)
"""  # noqa: S608

REMEMBER_GONE = f"""
INSERT INTO {GONE_TABLE} (id, gone_by)
SELECT line::jsonb ->> '{ID_FIELD}', max((line::jsonb ->> 'gone_by')::bigint) FROM staging_gone GROUP BY 1
ON CONFLICT (id) DO UPDATE SET gone_by = greatest({GONE_TABLE}.gone_by, excluded.gone_by)
"""  # noqa: S608

DELETE_GONE = f"""
DELETE FROM {TABLE} AS t
USING (
    SELECT line::jsonb ->> '{ID_FIELD}' AS id, (line::jsonb ->> 'gone_by')::bigint AS gone_by
    FROM staging_gone
) AS g
WHERE t.id = g.id AND t.dt_last_update < g.gone_by
"""  # noqa: S608


def _chunks(uri: str, size: int = 1 << 20) -> Iterator[bytes]:
    with ObjectStoragePath(uri).open("rb") as source:
        while chunk := source.read(size):
            yield chunk


def copy_then(uri: str, staging: str, *statements: str) -> int:
    """COPY the JSON Lines at ``uri`` into a temporary ``staging`` table, run ``statements``, commit: one
    transaction, so a failure leaves the tables as they were. Returns the rows the last statement touched."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook(postgres_conn_id=POSTGRES_CONN_ID).get_conn()
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE TEMP TABLE {staging} (line text NOT NULL) ON COMMIT DROP")
            copy_sql = COPY_LINES.format(table=staging)
            if hasattr(cursor, "copy_expert"):  # psycopg2
                import io

                cursor.copy_expert(copy_sql, io.BytesIO(b"".join(_chunks(uri))))
            else:  # psycopg 3 streams
                with cursor.copy(copy_sql) as copy:
                    for chunk in _chunks(uri):
                        copy.write(chunk)
            for statement in statements:
                cursor.execute(statement)
            touched = int(cursor.rowcount)
        conn.commit()
        return touched
    finally:
        conn.close()


with DAG(
    dag_id="deyel_mirror_postgres",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["deyel", "example", "mirror"],
):
    create_table = SQLExecuteQueryOperator(
        task_id="create_table", conn_id=POSTGRES_CONN_ID, sql=CREATE_TABLES
    )

    extract_changes = DeyelExtractOperator(
        task_id="extract_changes",
        form=FORM,
        output=f"{MIRROR}/changes/{RUN}.jsonl",
        incremental_field="dtLastUpdate",
        start_from="2026-01-01T00:00:00Z",
        asset=Asset(f"{MIRROR}/changes"),
    )

    @task
    def merge_changes(extracted: dict[str, Any]) -> int:
        if not extracted.get("records"):
            return 0
        merged = copy_then(extracted["path"], "staging_changes", MERGE)
        print(f"merged {merged} of {extracted['records']} changed instances into {TABLE}")
        return merged

    find_deletes = DeyelDeletedInstancesOperator(
        task_id="find_deletes",
        form=FORM,
        output=f"{MIRROR}/gone/{RUN}.jsonl",
        snapshot=f"{MIRROR}/ids.snapshot",
        asset=Asset(f"{MIRROR}/gone"),
    )

    @task
    def apply_deletes(found: dict[str, Any]) -> int:
        if not found.get("gone"):
            return 0
        deleted = copy_then(found["output"], "staging_gone", REMEMBER_GONE, DELETE_GONE)
        print(f"deleted {deleted} of {found['gone']} gone instances from {TABLE}")
        return deleted

    merged = merge_changes(extract_changes.output)
    create_table >> extract_changes
    merged >> find_deletes
    apply_deletes(find_deletes.output)
