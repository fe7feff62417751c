"""A metadata database migrated once per test run, copied wherever a test needs a fresh one.

``airflow db migrate`` costs about 5 s of CPU (an interpreter importing Airflow, then every table); the suite
needed one per xdist worker and one more in each test that keeps connections in a database of its own. Each
now copies one migrated SQLite file instead: it is made by the same command, once per run (under a lock, in
the run's temp folder that every worker shares), and a copy is the database that command leaves. What lives in
it depends on the configuration alone (tables, the default pool, the log filename templates), the same in
every worker.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

SQLITE = "sqlite:///"


def _run_folder(tmp_path_factory) -> Path:
    """The run's temp folder: a worker's own folder is ``popen-gwN`` inside it (pytest-xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def migrated_template(tmp_path_factory) -> Path:
    """The run's migrated SQLite file (made by the first caller of any worker; never written afterwards)."""
    folder = _run_folder(tmp_path_factory)
    template = folder / "airflow-migrated.db"
    with FileLock(str(folder / "airflow-migrated.db.lock")):
        if not template.exists():
            partial = folder / f"airflow-migrated.{os.getpid()}.db"
            partial.unlink(missing_ok=True)
            # An Airflow home of its own: the command writes its airflow.cfg there, not into a worker's home
            # (a worker's first Airflow command writes that worker's own, as it did after a migration).
            home = folder / "airflow-migrated-home"
            env = {
                **os.environ,
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": SQLITE + str(partial),
            }
            done = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            assert done.returncode == 0, f"airflow db migrate: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            os.replace(partial, template)
    return template


def copy_migrated_db(tmp_path_factory, target: Path) -> Path:
    """Make ``target`` a migrated database: the run's template copied through SQLite's backup API, which
    writes into an existing file as a connection would (one this process already holds sees the tables)."""
    source = sqlite3.connect(f"file:{migrated_template(tmp_path_factory)}?mode=ro", uri=True)
    destination = sqlite3.connect(str(target))
    try:
        source.backup(destination)
    finally:
        destination.close()
        source.close()
    return target


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for another database or an in-memory one)."""
    if not url.startswith(SQLITE) or url in (SQLITE, SQLITE + ":memory:"):
        return None
    return Path(url.removeprefix(SQLITE).split("?", 1)[0])
