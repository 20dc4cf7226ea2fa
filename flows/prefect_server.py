"""The embedded Prefect API: one local server per workspace, private, started on first use,
reused, and gone when idle.

Prefect's temporary server costs seconds of start-up on every command; a long-lived local
server under the workspace pays that once, keeps flow-run history, and serves the UI. It is
what the user would not want running unseen, so:

- it binds 127.0.0.1 and requires a key: Prefect's basic-auth string, random, kept in
  `<workspace>/prefect/auth` (0600) and handed to this project's commands only;
- it exits by itself after `prefect.idle_minutes` without a request (an `mlops deploy`
  polling it, or a flow run reporting to it, keeps it alive);
- `mlops server status` lists it with its memory, `--all` every such server of this user in any
  workspace, and `mlops server stop [--all]` stops them.

PREFECT_API_URL, when set, bypasses all of this (the server's own settings decide its auth).
The CLI imports this module on every command: at import it uses the standard library only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.core.environment import TELEMETRY_OFF
from components.core.errors import UserError

# Not Prefect's own 4200: that is where an operator starts a real server (`prefect server start`,
# docs/stack.md), which a workspace's private server left running by `mlops run` would block.
DEFAULT_PORT = 4280
START_TIMEOUT_S = 180.0
AUTH_USER = "mlops"
MODULE = "flows.prefect_server"  # how a server of ours shows in the process table


class PrefectServerError(UserError, RuntimeError):
    """The local Prefect server could not be started or reached."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Running:
    """A local server of this user, found in the process table."""

    pid: int
    home: Path  # its PREFECT_HOME: <workspace>/prefect
    port: int | None
    rss_bytes: int | None
    started: float | None  # epoch seconds


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child, now reaped
            return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _state_file(prefect_home: Path) -> Path:
    return prefect_home / "server.json"


def auth_file(prefect_home: Path) -> Path:
    return prefect_home / "auth"


def auth_string(prefect_home: Path) -> str:
    """The workspace's API key (`mlops:<random>`), created once with mode 0600."""
    path = auth_file(prefect_home)
    prefect_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{AUTH_USER}:{secrets.token_urlsafe(32)}\n")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    info = os.fstat(fd)
    with os.fdopen(fd) as handle:
        value = handle.read().strip()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PrefectServerError(
            f"{path} must belong to you and be readable by you only (chmod 600): it holds the Prefect API key"
        )
    if not value.startswith(f"{AUTH_USER}:"):
        raise PrefectServerError(f"{path} does not hold a Prefect API key; delete it to make a new one")
    return value


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def authorized(api_url: str, key: str | None, timeout: float = 2.0) -> int:
    """The HTTP status a request to a protected endpoint gets with `key` (0: no answer)."""
    request = urllib.request.Request(f"{api_url}/admin/version")
    if key is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(key.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise PrefectServerError("no free port on 127.0.0.1 for the Prefect server")


def read_server(prefect_home: Path) -> ServerInfo | None:
    """The recorded server if it is still alive and healthy."""
    state = _state_file(prefect_home)
    try:
        data = json.loads(state.read_text())
        info = ServerInfo(pid=int(data["pid"]), port=int(data["port"]))
    except (OSError, ValueError, KeyError):
        return None
    if pid_alive(info.pid) and _healthy(info.api_url):
        return info
    return None


def ensure_server(prefect_home: Path, port: int = DEFAULT_PORT, idle_minutes: float | None = 30.0) -> ServerInfo:
    """Return the workspace's running server, starting it (once, under a lock) if needed."""
    prefect_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = auth_string(prefect_home)
    running = read_server(prefect_home)
    if running:
        return running
    with open(prefect_home / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = read_server(prefect_home)
        if running:
            return running
        port = _free_port(port)
        env = {
            **os.environ,
            **TELEMETRY_OFF,
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_SERVER_API_AUTH_STRING": key,
        }
        env.pop("PREFECT_API_URL", None)
        env.pop("PREFECT_API_KEY", None)  # a Cloud key would take precedence over the auth string
        command = [sys.executable, "-m", MODULE, "--port", str(port), "--home", str(prefect_home)]
        if idle_minutes is not None:
            command += ["--idle-minutes", str(idle_minutes)]
        fd = os.open(prefect_home / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = subprocess.Popen(
                command,
                stdout=fd,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=Path(__file__).resolve().parent.parent,  # `-m flows.prefect_server` from the project
                start_new_session=True,
            )
        finally:
            os.close(fd)
        info = ServerInfo(pid=process.pid, port=port)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(info.api_url, timeout=1.0):
            if process.poll() is not None:
                raise PrefectServerError(
                    f"the Prefect server exited with code {process.returncode}; see {prefect_home / 'server.log'}"
                )
            if time.monotonic() > deadline:
                process.terminate()
                raise PrefectServerError(
                    f"the Prefect server did not answer within {START_TIMEOUT_S:.0f}s; "
                    f"see {prefect_home / 'server.log'}"
                )
            time.sleep(0.2)
        _state_file(prefect_home).write_text(json.dumps({"pid": info.pid, "port": info.port}))
        return info


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def stop_server(prefect_home: Path, timeout: float = 20.0) -> ServerInfo | None:
    """Stop the workspace's server, if one runs; returns what was stopped."""
    state = _state_file(prefect_home)
    try:
        data = json.loads(state.read_text())
        info = ServerInfo(pid=int(data["pid"]), port=int(data["port"]))
    except (OSError, ValueError, KeyError):
        return None
    if pid_alive(info.pid) and _is_ours(info.pid):
        _terminate(info.pid, timeout)
    state.unlink(missing_ok=True)
    return info


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_ours(pid: int) -> bool:
    """Whether `pid` is a server this module started (a pid file can outlive its process)."""
    args = _cmdline(pid)
    return "-m" in args and MODULE in args


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def list_servers() -> list[Running]:
    """Every local Prefect server this module started for this user, in any workspace (Linux /proc)."""
    found = []
    uid = os.getuid()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            info = entry.stat()
        except OSError:
            continue
        if info.st_uid != uid:
            continue
        pid = int(entry.name)
        args = _cmdline(pid)
        if not ("-m" in args and MODULE in args):
            continue
        options = dict(itertools.pairwise(args))
        port = options.get("--port")
        found.append(
            Running(
                pid=pid,
                home=Path(options.get("--home", "?")),
                port=int(port) if port and port.isdigit() else None,
                rss_bytes=_rss(pid),
                started=info.st_mtime,
            )
        )
    return sorted(found, key=lambda r: r.pid)


def stop_all(timeout: float = 20.0) -> list[Running]:
    """Stop every local server `list_servers` finds; returns what was stopped."""
    servers = list_servers()
    for server in servers:
        _terminate(server.pid, timeout)
        with contextlib.suppress(OSError):
            state = _state_file(server.home)
            if json.loads(state.read_text()).get("pid") == server.pid:
                state.unlink()
    return servers


@contextmanager
def flow_run_settings(heartbeat_seconds: int | None) -> Iterator[None]:
    """Prefect settings for flow runs started by this process (imports prefect: call it late)."""
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"flows.heartbeat_frequency": heartbeat_seconds}):
        yield


def configure_prefect_api(prefect_home: Path, mode: str, idle_minutes: float | None = 30.0) -> str | None:
    """Set PREFECT_API_URL (and the local server's key) for this process before prefect is
    imported; returns the URL used."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if mode == "ephemeral":
        return None
    info = ensure_server(prefect_home, idle_minutes=idle_minutes)
    os.environ["PREFECT_API_URL"] = info.api_url
    os.environ["PREFECT_API_AUTH_STRING"] = auth_string(prefect_home)
    os.environ.pop("PREFECT_API_KEY", None)
    return info.api_url


class IdleExit:
    """ASGI middleware: the server stops itself (SIGTERM, Uvicorn's graceful path) once no request
    has come and no websocket has been open for `idle_seconds`."""

    def __init__(self, app: Any, idle_seconds: float) -> None:
        self.app = app
        self.idle_seconds = idle_seconds
        self.last = time.monotonic()
        self.open = 0
        self.started = False  # the clock runs from the end of the app's start-up (migrations, services)
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind == "lifespan":

            async def watch_startup(message: dict[str, Any]) -> None:
                if message.get("type") == "lifespan.startup.complete":
                    with self._lock:
                        self.started, self.last = True, time.monotonic()
                await send(message)

            await self.app(scope, receive, watch_startup)
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.open += 1
            self.last = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.open -= 1
                self.last = time.monotonic()

    def idle(self) -> bool:
        with self._lock:
            return self.started and self.open == 0 and time.monotonic() - self.last > self.idle_seconds

    def watch(self, every: float = 5.0) -> None:
        def loop() -> None:
            while True:
                time.sleep(every)
                if self.idle():
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

        threading.Thread(target=loop, name="idle-exit", daemon=True).start()


def serve(port: int, idle_minutes: float | None) -> None:
    """Run Prefect's server (API, UI and services) in this process on 127.0.0.1:`port`."""
    import uvicorn
    from prefect.server.api.server import create_app

    app: Any = create_app(final=True)
    if idle_minutes is not None:
        app = IdleExit(app, idle_minutes * 60)
        app.watch()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="A workspace's local Prefect server.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", required=True, help="the workspace's PREFECT_HOME (for listing)")
    parser.add_argument("--idle-minutes", type=float, default=None)
    options = parser.parse_args(argv)
    if not os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):
        raise SystemExit("refusing to start without PREFECT_SERVER_API_AUTH_STRING: the local API requires a key")
    serve(options.port, options.idle_minutes)


if __name__ == "__main__":
    main()
