"""One way to run a real Airflow deployment on this machine: used by `make airflow` and by the e2e tests.

A :class:`Deployment` owns an AIRFLOW_HOME, writes the settings every component must agree on (JWT secret,
Fernet key, API URL, login), migrates the metadata database and starts the components as users run them
(``airflow api-server``, ``airflow scheduler``, ``airflow dag-processor``, and for the scale-out case
``airflow celery worker``), each in its own process group so that :meth:`Deployment.stop` ends every process
it started, children included, by PID. :class:`AirflowAPI` talks to the public REST API (``/api/v2``) with a
JWT from the simple auth manager, as any client would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
ADMIN_USER = "admin"
TERMINAL_RUN_STATES = {"success", "failed"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll until ``predicate`` returns something truthy; raise TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Process:
    """A started component: its process group is its own, so stopping it stops its children too."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def group_alive(self) -> bool:
        self.popen.poll()  # reaps the leader once it exits, so a zombie does not count as alive
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_processes(processes: Iterable[Process], timeout: float = 20.0) -> None:
    """Stop each process group: SIGTERM all at once so they shut down in parallel, SIGKILL what remains."""
    remaining = list(processes)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for process in remaining:
            process.signal(sig)
        deadline = time.monotonic() + wait
        while remaining and time.monotonic() < deadline:
            remaining = [process for process in remaining if process.group_alive()]
            time.sleep(0.1)
        if not remaining:
            return


@dataclass
class Deployment:
    """An Airflow deployment in ``home``, with the given executor, metadata database and DAGs.

    :param home: the AIRFLOW_HOME (created; config, SQLite database, logs and component output live there).
    :param dags_folders: folders of DAG files; one is used in place, several are copied into ``home/dags``.
    :param executor: ``LocalExecutor`` (single host) or ``CeleryExecutor`` (scale out).
    :param sql_alchemy_conn: the metadata database; default SQLite in ``home`` (not usable with Celery).
    :param env: more environment for every component (``AIRFLOW_CONN_*``, ``AIRFLOW__*`` settings).
    :param api_port: port of the API server and UI; 0 picks a free one.
    :param password: the admin password; generated when not given.
    :param migrate: run ``airflow db migrate`` before starting; false when the database is a copy of one
        already migrated by the same Airflow.
    :param triggerer: start the triggerer (deferred tasks and asset watchers run there); a deployment whose
        DAGs neither defer nor watch can do without its process.
    :param stop_timeout: seconds :meth:`stop` gives the components to shut down before SIGKILL. A Celery
        worker's pool and the LocalExecutor's workers outwait SIGTERM, so a deployment whose state nobody
        reads after it stops (the tests') can take less than the 20 s a user's ``make airflow`` gets.
    :param serve_logs: the scheduler and the triggerer each start a log server (a process of its own) for
        the API server to read a running task's or a trigger's log from another host. A finished task's log
        is read from its file on this host, so a deployment whose log readers only read finished tasks (the
        tests') can do without both.
    """

    home: Path
    dags_folders: Iterable[Path] = (ROOT / "dags_examples",)
    executor: str = "LocalExecutor"
    sql_alchemy_conn: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    api_port: int = 0
    password: str = ""
    migrate: bool = True
    triggerer: bool = True
    stop_timeout: float = 20.0
    serve_logs: bool = True
    processes: list[Process] = field(default_factory=list, init=False)
    log_ports: tuple[int, int] = field(default=(0, 0), init=False)

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.api_port = self.api_port or free_port()
        # The scheduler's and the triggerer's log servers: free ports too, so that two deployments on one
        # machine (the e2e tests' LocalExecutor and Celery ones, parallel test workers) do not both want the
        # default 8793 and 8794.
        self.log_ports = (free_port(), free_port())
        self.password = self.password or secrets.token_urlsafe(12)
        self.dags_folder = self._dags_folder(list(self.dags_folders))
        (self.home / "output").mkdir(exist_ok=True)

    # -- settings --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def output_dir(self) -> Path:
        """Where the example DAGs write files (``DEYEL_DEMO_OUTPUT``)."""
        return self.home / "output"

    def _dags_folder(self, folders: list[Path]) -> Path:
        if len(folders) == 1:
            return Path(folders[0]).resolve()
        target = self.home / "dags"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for folder in folders:
            for path in Path(folder).glob("*.py"):
                shutil.copy2(path, target / path.name)
        return target

    def _secrets(self) -> dict[str, str]:
        """Secrets every component must share, kept in home so a restarted deployment reuses them."""
        path = self.home / "deployment-secrets.json"
        if path.exists():
            return dict(json.loads(path.read_text()))
        values = {"jwt_secret": secrets.token_urlsafe(64), "fernet_key": Fernet.generate_key().decode()}
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        return values

    def environment(self, home: Path | None = None) -> dict[str, str]:
        """The environment of every component (``home`` differs for a Celery worker playing another host)."""
        home = home or self.home
        shared = self._secrets()
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({ADMIN_USER: self.password}))
        passwords.chmod(0o600)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # tests unpause what they trigger
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__FERNET_KEY": shared["fernet_key"],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_ports[0]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.log_ports[1]),
            "AIRFLOW__API_AUTH__JWT_SECRET": shared["jwt_secret"],
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn
            or f"sqlite:///{self.home}/airflow.db",
            # New DAG files are picked up within seconds, not the default five minutes.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "DEYEL_DEMO_OUTPUT": str(self.output_dir),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.env)
        return env

    # -- lifetime --------------------------------------------------------------------------------------------

    def airflow(self, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run one airflow CLI command to completion with the deployment's settings."""
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.environment(home),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise RuntimeError(f"airflow {' '.join(args)} exited with {result.returncode}:\n{tail}")
        return result

    def spawn(self, name: str, *args: str, home: Path | None = None) -> Process:
        log_path = self.home / "process-logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                env=self.environment(home),
                cwd=home or self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def start(self, timeout: float = 180.0) -> Deployment:
        """Migrate the database (unless ``migrate`` is false), start api-server, scheduler, dag-processor
        and triggerer (deferred sensors and asset watchers run there; unless ``triggerer`` is false); return
        once the API is up."""
        try:
            if self.migrate:
                self.airflow("db", "migrate")
            self.spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port))
            skip_serve_logs = () if self.serve_logs else ("--skip-serve-logs",)
            self.spawn("scheduler", "scheduler", *skip_serve_logs)
            self.spawn("dag-processor", "dag-processor")
            if self.triggerer:
                self.spawn("triggerer", "triggerer", *skip_serve_logs)
            # Each health request costs the starting API server a database round trip and a response: once
            # a second is enough for a start-up that takes tens of seconds.
            wait_for(self._healthy, timeout, f"the Airflow API at {self.url}", interval=1.0)
        except BaseException:
            self.stop()
            raise
        return self

    def start_celery_worker(self, name: str, *, concurrency: int = 4) -> Process:
        """Start a Celery worker with its own AIRFLOW_HOME, as a worker on another host would have."""
        home = self.home / "workers" / name
        home.mkdir(parents=True, exist_ok=True)
        return self.spawn(
            f"celery-{name}",
            "celery",
            "worker",
            "--concurrency",
            str(concurrency),
            "--celery-hostname",
            f"{name}@%h",
            # Two workers on one machine cannot both serve logs on the default port; two hosts could.
            "--skip-serve-logs",
            home=home,
        )

    def check_alive(self) -> None:
        """Raise, with the end of its output, if any component has exited: a wait on it would time out."""
        for process in self.processes:
            if not process.alive():
                raise RuntimeError(
                    f"{process.name} (pid {process.pid}) exited with {process.popen.returncode}:\n"
                    f"{process.log_tail()}"
                )

    def _healthy(self) -> bool:
        self.check_alive()
        try:
            response = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5)
        except requests.RequestException:
            return False
        if response.status_code != 200:
            return False
        health = response.json()
        return bool(health.get("scheduler", {}).get("status") == "healthy")

    def stop(self) -> None:
        """Stop every process this deployment started (each process group, by PID)."""
        stop_processes(self.processes, self.stop_timeout)
        self.processes.clear()

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def api(self) -> AirflowAPI:
        return AirflowAPI(self.url, ADMIN_USER, self.password, check=self.check_alive)


class AirflowAPI:
    """A small client of Airflow's public REST API (``/api/v2``), logged in through ``POST /auth/token``."""

    def __init__(
        self, url: str, username: str, password: str, *, check: Callable[[], None] = lambda: None
    ) -> None:
        self.url = url
        self.check = check  # called at every poll, so a dead component fails a wait at once
        self.session = requests.Session()
        # No idle keep-alive connections: uvicorn's graceful shutdown would wait for them when stopping.
        self.session.headers["Connection"] = "close"
        response = self.session.post(
            f"{url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        response.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", 30)
        response = self.session.request(method, f"{self.url}/api/v2{path}", **kwargs)
        if not response.ok:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_id`` and the API knows it."""

        def parsed() -> dict[str, Any] | None:
            self.check()
            response = self.session.get(f"{self.url}/api/v2/dags/{dag_id}", timeout=30)
            return response.json() if response.ok else None

        return dict(wait_for(parsed, timeout, f"DAG {dag_id} to be parsed"))

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: str | None = None
    ) -> str:
        """Unpause ``dag_id`` and trigger a run (now, or at ``logical_date``); return the run id."""
        self.unpause(dag_id)
        run = self.call(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": logical_date, "conf": dict(conf or {})}
        )
        return str(run["dag_run_id"])

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def wait_for_any_run(self, dag_id: str, timeout: float = 300.0) -> str:
        """Wait until ``dag_id`` has a run (e.g. one an Asset event created); return its run id."""

        def created() -> str | None:
            self.check()
            runs = self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 1})["dag_runs"]
            return str(runs[0]["dag_run_id"]) if runs else None

        return str(wait_for(created, timeout, f"a run of {dag_id}", interval=1.0))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            self.check()
            run = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in TERMINAL_RUN_STATES else None

        return dict(wait_for(finished, timeout, f"run {run_id} of {dag_id} to finish", interval=1.0))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        body = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return list(body["task_instances"])

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> str:
        body = self.call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        content = body["content"]
        # Airflow 3 returns structured log events; older shapes return one string.
        if isinstance(content, list):
            return "\n".join(
                json.dumps(event) if isinstance(event, dict) else str(event) for event in content
            )
        return str(content)

    def xcom_entries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every XCom of a task (all map indexes), with its deserialized value."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries"
        entries = self.call("GET", path, params={"limit": 1000})["xcom_entries"]
        return [
            self.call(
                "GET",
                f"{path}/{entry['key']}",
                params={"deserialize": "true", "map_index": entry["map_index"]},
            )
            for entry in entries
        ]
