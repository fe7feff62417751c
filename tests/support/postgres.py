"""A database of its own on a real PostgreSQL (127.0.0.1:5432, user postgres), dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: The PostgreSQL the tests and the mirror benchmark use (no password: local trust).
SERVER = "postgresql://postgres@127.0.0.1:5432"
#: The same server as Airflow's ``sql_alchemy_conn`` names it (SQLAlchemy with the psycopg2 driver).
AIRFLOW_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@contextmanager
def own_database(
    prefix: str, server: str = SERVER, *, template: str | None = None, **connect: Any
) -> Iterator[str]:
    """Create a database named ``prefix`` and a random suffix on ``server``, yield its name, drop it after
    (``WITH (FORCE)``: connections left open do not keep it). ``template``: a database to copy (no session
    may be connected to it meanwhile). ``connect``: more psycopg2 connection arguments for the administrative
    connection (``connect_timeout``...). No server: the connection's error, no skip."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(f"{server}/postgres", **connect)
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        try:
            yield name
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.close()


@contextmanager
def airflow_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """:func:`own_database` as the SQLAlchemy URL a deployment's metadata database is given."""
    with own_database(prefix, template=template) as name:
        yield f"{AIRFLOW_SERVER}/{name}"


def mirror_database(monkeypatch, prefix: str) -> Iterator[str]:
    """For a fixture to ``yield from``: :func:`own_database`, with the mirror example's ``mirror_postgres``
    connection pointing at it while the test runs."""
    with own_database(prefix) as name:
        monkeypatch.setenv("AIRFLOW_CONN_MIRROR_POSTGRES", f"{SERVER}/{name}")
        yield name
