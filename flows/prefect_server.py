"""The embedded Prefect API: one local server per workspace, started on first use and reused.

Prefect's temporary server costs seconds of start-up on every command; a long-lived local
server under the workspace pays that once, keeps flow-run history, and serves the UI.
PREFECT_API_URL, when set, bypasses all of this.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from components.environment import TELEMETRY_OFF
from flows.runner import pid_alive as _pid_alive

DEFAULT_PORT = 4200
START_TIMEOUT_S = 180.0


class PrefectServerError(RuntimeError):
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


def _state_file(prefect_home: Path) -> Path:
    return prefect_home / "server.json"


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


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
    if _pid_alive(info.pid) and _healthy(info.api_url):
        return info
    return None


def ensure_server(prefect_home: Path, port: int = DEFAULT_PORT) -> ServerInfo:
    """Return the workspace's running server, starting it (once, under a lock) if needed."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    running = read_server(prefect_home)
    if running:
        return running
    with open(prefect_home / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = read_server(prefect_home)
        if running:
            return running
        port = _free_port(port)
        env = {**os.environ, **TELEMETRY_OFF, "PREFECT_HOME": str(prefect_home)}
        env.pop("PREFECT_API_URL", None)
        log = open(prefect_home / "server.log", "ab")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
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


def stop_server(prefect_home: Path, timeout: float = 20.0) -> ServerInfo | None:
    """Stop the workspace's server, if one runs; returns what was stopped."""
    state = _state_file(prefect_home)
    try:
        data = json.loads(state.read_text())
        info = ServerInfo(pid=int(data["pid"]), port=int(data["port"]))
    except (OSError, ValueError, KeyError):
        return None
    if _pid_alive(info.pid):
        os.killpg(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(info.pid):
            os.killpg(info.pid, signal.SIGKILL)
    state.unlink(missing_ok=True)
    return info


@contextmanager
def flow_run_settings(heartbeat_seconds: int | None) -> Iterator[None]:
    """Prefect settings for flow runs started by this process (imports prefect: call it late)."""
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"flows.heartbeat_frequency": heartbeat_seconds}):
        yield


def configure_prefect_api(prefect_home: Path, mode: str) -> str | None:
    """Set PREFECT_API_URL for this process before prefect is imported; returns the URL used."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if mode == "ephemeral":
        return None
    info = ensure_server(prefect_home)
    os.environ["PREFECT_API_URL"] = info.api_url
    return info.api_url
