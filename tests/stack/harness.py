"""The server stack as real processes on one machine: PostgreSQL, an MLflow tracking server and a
Prefect server on it, Prefect process workers on a work pool, a Dask scheduler with workers.

`make test-stack` and `make bench-stack` use it. PostgreSQL is the machine's (`initdb` + `postgres`
on a free port in a temporary folder, run as the `postgres` user when this runs as root; installed
with apt when missing), or an existing server named by MLOPS_STACK_POSTGRES_URL (CI's service
container), in which fresh databases are created and dropped. Every process is started in its own
session and stopped, with its children, by `Stack.close`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from components.core.environment import TELEMETRY_OFF
from flows.scoring import ONE_THREAD

BIN = Path(sys.executable).parent
PG_USER = "mlops"


class StackError(RuntimeError):
    """A part of the stack did not come up."""


def caller_environment() -> dict[str, str]:
    """This process's environment without the project's own overrides (MLOPS__*, e.g. CI's), which
    the stack's commands must not inherit."""
    return {key: value for key, value in os.environ.items() if not key.startswith("MLOPS__")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, process: Proc | None = None, auth: tuple[str, str] | None = None) -> None:
    """Wait until `url` answers 2xx (or 401/403: up, asking for credentials)."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url)
    if auth:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise StackError(f"{process.name} exited ({process.popen.returncode}):\n{process.tail()}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status < 300:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    raise StackError(f"{url} did not answer within {timeout:.0f} s" + (f":\n{process.tail()}" if process else ""))


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill_tree(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process and every descendant (a killed worker takes its flow runs with it)."""
        try:
            parent = psutil.Process(self.popen.pid)
            victims = [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            victims = []
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(sig)
        psutil.wait_procs(victims, timeout=30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        self.kill_tree()


@dataclass
class Postgres:
    """Where the databases are: `url(db)` gives a SQLAlchemy URL for the MLflow server, `async_url(db)`
    the Prefect server's."""

    host: str
    port: int
    user: str
    password: str
    admin_db: str = "postgres"

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def async_url(self, database: str) -> str:
        return self.url(database, "postgresql+asyncpg")

    def execute(self, statement: str, database: str | None = None) -> list[tuple[Any, ...]]:
        import psycopg2

        connection = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.admin_db,
            connect_timeout=10,
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            connection.close()


def postgres_bin() -> Path:
    """The folder of `initdb` and `postgres`, installing PostgreSQL with apt when it is missing."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
            subprocess.run([*sudo, *command], check=True, env=env, stdout=subprocess.DEVNULL)
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise StackError("PostgreSQL is not installed and apt-get could not install it")
    return candidates[-1].parent


@dataclass
class Stack:
    """The processes of the stack and what clients need to reach them (`env`)."""

    root: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    postgres: Postgres | None = None
    created_databases: list[str] = field(default_factory=list)
    mlflow_port: int = 0
    prefect_port: int = 0
    dask_port: int = 0
    mlflow_auth: tuple[str, str] | None = None
    mlflow_db: str | None = None  # the tracking server's database, and its users' (basic auth)
    auth_db: str | None = None
    pg_base: Path | None = None  # the local PostgreSQL's folder, when this stack started one

    # ------------------------------------------------------------ processes

    def spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None, **kwargs: Any) -> Proc:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = log.open("ab")
        full_env = {**caller_environment(), **TELEMETRY_OFF, **(env or {})}
        popen = subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, env=full_env, start_new_session=True, **kwargs
        )
        handle.close()
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def close(self) -> None:
        """Stop every process (workers first, the database last) and drop the databases created."""
        order = sorted(self.procs.values(), key=lambda p: p.name == "postgres")
        for proc in order:
            proc.stop()
        if self.postgres is not None and "postgres" not in self.procs:
            for database in self.created_databases:
                with contextlib.suppress(Exception):
                    self.postgres.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------ PostgreSQL

    def start_postgres(self) -> Postgres:
        external = os.environ.get("MLOPS_STACK_POSTGRES_URL")
        if external:
            from sqlalchemy.engine import make_url

            url = make_url(external)
            self.postgres = Postgres(
                url.host or "127.0.0.1", url.port or 5432, url.username or "postgres", url.password or "",
                url.database or "postgres",
            )  # fmt: skip
            return self.postgres
        bin_dir = postgres_bin()
        # Its own folder, readable by the `postgres` user (pytest's temporary folders are not).
        base = Path(tempfile.mkdtemp(prefix="mlops-stack-pg-"))
        base.chmod(0o755)
        data, sockets, pwfile = base / "data", base / "run", base / "pw"
        password = secrets.token_urlsafe(16)
        pwfile.write_text(password + "\n")
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:  # the server refuses to run as root
            import pwd

            entry = pwd.getpwnam("postgres")
            for path in (base, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        init = subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
             "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, **as_user,
        )  # fmt: skip
        if init.returncode:
            raise StackError(f"initdb failed: {init.stderr or init.stdout}")
        sockets.mkdir()
        if as_user:
            os.chown(sockets, as_user["user"], as_user["group"])
        port = free_port()
        proc = self.spawn(
            "postgres",
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            **as_user,
        )  # fmt: skip
        self.pg_base = base
        self.postgres = Postgres("127.0.0.1", port, PG_USER, password)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.postgres.execute("SELECT 1")
                break
            except Exception as exc:
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    raise StackError(f"PostgreSQL did not start ({exc}):\n{proc.tail()}") from exc
                time.sleep(0.3)
        return self.postgres

    def create_database(self, name: str) -> str:
        assert self.postgres is not None
        database = f"{name}_{secrets.token_hex(4)}" if os.environ.get("MLOPS_STACK_POSTGRES_URL") else name
        self.postgres.execute(f'CREATE DATABASE "{database}"')
        self.created_databases.append(database)
        return database

    # ------------------------------------------------------------ MLflow

    def start_mlflow(self, auth: bool = False, port: int | None = None) -> str:
        """An MLflow tracking server on PostgreSQL, serving artifacts itself; with `auth`, MLflow's
        basic-auth app (its users in PostgreSQL too) and an admin whose credentials go to `env`."""
        assert self.postgres is not None
        if self.mlflow_db is None:
            self.mlflow_db = self.create_database("mlflow")
            if auth:
                self.auth_db = self.create_database("mlflowauth")
        self.mlflow_port = port or self.mlflow_port or free_port()
        args = [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", self.postgres.url(self.mlflow_db),
            "--artifacts-destination", (self.root / "mlflow-artifacts").as_uri(),
            "--serve-artifacts", "--host", "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "2",
        ]  # fmt: skip
        # MLflow's job runner (GenAI evaluation jobs: seven idle consumer processes) is not used here.
        env: dict[str, str] = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if auth:
            self.mlflow_auth = self.mlflow_auth or ("admin", secrets.token_urlsafe(12))
            ini = self.root / "mlflow-auth.ini"
            ini.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = {self.postgres.url(self.auth_db)}\n"
                f"admin_username = {self.mlflow_auth[0]}\nadmin_password = {self.mlflow_auth[1]}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            ini.chmod(0o600)
            args += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
        proc = self.spawn("mlflow", args, env)
        wait_http(f"http://127.0.0.1:{self.mlflow_port}/health", 180, proc)
        uri = f"http://127.0.0.1:{self.mlflow_port}"
        self.env["MLFLOW_TRACKING_URI"] = uri
        if self.mlflow_auth:
            self.env["MLFLOW_TRACKING_USERNAME"], self.env["MLFLOW_TRACKING_PASSWORD"] = self.mlflow_auth
        return uri

    def restart_mlflow(self, down_seconds: float) -> None:
        """Kill the tracking server (no graceful stop), wait, start it again on the same port."""
        self.procs.pop("mlflow").kill_tree()
        time.sleep(down_seconds)
        self.start_mlflow(auth=self.mlflow_auth is not None, port=self.mlflow_port)

    # ------------------------------------------------------------ Prefect

    def start_prefect(self) -> str:
        assert self.postgres is not None
        database = self.create_database("prefect")
        self.prefect_port = free_port()
        home = self.root / "prefect-server"
        home.mkdir(parents=True, exist_ok=True)
        proc = self.spawn(
            "prefect-server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.prefect_port)],
            {
                "PREFECT_HOME": str(home),
                "PREFECT_API_DATABASE_CONNECTION_URL": self.postgres.async_url(database),
                "PREFECT_SERVER_UI_ENABLED": "false",
                "PREFECT_API_URL": "",
            },
        )
        url = f"http://127.0.0.1:{self.prefect_port}/api"
        wait_http(f"{url}/health", 180, proc)
        self.env["PREFECT_API_URL"] = url
        return url

    def start_worker(self, pool: str, name: str, env: Mapping[str, str], limit: int = 1) -> Proc:
        """A process worker on the pool, in `env`'s environment (the project's workspace and config)."""
        home = self.root / f"prefect-{name}"
        home.mkdir(parents=True, exist_ok=True)
        proc = self.spawn(
            name,
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", name,
             "--limit", str(limit)],
            {**self.env, **env, "PREFECT_HOME": str(home)},
        )  # fmt: skip
        return proc

    # ------------------------------------------------------------ Dask

    def start_dask(self, workers: int) -> str:
        self.dask_port = free_port()
        address = f"tcp://127.0.0.1:{self.dask_port}"
        scheduler = self.spawn(
            "dask-scheduler",
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.dask_port),
             "--no-dashboard"],
        )  # fmt: skip
        for number in range(workers):
            self.spawn(
                f"dask-worker-{number}",
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                 "--local-directory", str(self.root / "dask")],
                ONE_THREAD,
            )  # fmt: skip
        self.wait_dask_workers(address, workers, scheduler)
        return address

    def wait_dask_workers(self, address: str, count: int, scheduler: Proc, timeout: float = 120) -> None:
        from distributed import Client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if scheduler.popen.poll() is not None:
                raise StackError(f"the Dask scheduler exited:\n{scheduler.tail()}")
            with contextlib.suppress(OSError, TimeoutError), Client(address, timeout=5) as client:
                client.wait_for_workers(count, timeout=max(deadline - time.monotonic(), 1))
                return
            time.sleep(0.5)
        raise StackError(f"{count} Dask workers did not join {address}")


@contextlib.contextmanager
def stack(
    *,
    mlflow: bool = True,
    prefect: bool = True,
    dask_workers: int = 0,
    auth: bool = False,
) -> Iterator[Stack]:
    """The stack, started in order and always stopped."""
    running = Stack(Path(tempfile.mkdtemp(prefix="mlops-stack-")))
    try:
        running.start_postgres()
        if mlflow:
            running.start_mlflow(auth=auth)
        if prefect:
            running.start_prefect()
        if dask_workers:
            running.env["MLOPS_STACK_DASK"] = running.start_dask(dask_workers)
        yield running
    finally:
        running.close()
        if running.pg_base is not None:
            shutil.rmtree(running.pg_base, ignore_errors=True)
