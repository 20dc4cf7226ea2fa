"""The servers the serving benchmark measures: start, probe, load and stop them, leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOADGEN = Path(__file__).resolve().parent / "loadgen.py"

STARTUP_TIMEOUT_S = 240


class BenchError(RuntimeError):
    """A step of the benchmark could not run (setup, a server that does not start)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(message: str) -> None:
    print(f"[bench-serving {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------- setup


class Server:
    """A server process in its own session, so stopping it stops every worker it forked."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.name, self.cmd, self.env, self.port, self.log = name, cmd, env, port, log
        self.base = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False

    def start(self, ready_paths: tuple[str, ...], timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Start and wait until the first of `ready_paths` that exists answers 200; returns it."""
        import httpx

        say(f"starting {self.name}: {' '.join(self.cmd)}")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.cmd, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        started = time.monotonic()
        candidates = list(ready_paths)
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited {self.process.returncode} before it was ready:\n{tail(self.log)}")
            try:
                status = httpx.get(self.base + candidates[0], timeout=2).status_code
                if status == 200:
                    say(f"{self.name} ready ({candidates[0]}) after {time.monotonic() - started:.1f} s")
                    return candidates[0]
                if status == 404 and len(candidates) > 1:
                    candidates.pop(0)
            except httpx.TransportError:
                pass
            if time.monotonic() - started > timeout:
                raise BenchError(f"{self.name} not ready within {timeout:.0f} s:\n{tail(self.log)}")
            time.sleep(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after `timeout`, reap what we can."""
        if self.process is None or self.stopped:
            return
        self.stopped = True
        group = self.process.pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with suppress(ProcessLookupError):
                os.killpg(group, sig)
            deadline = time.monotonic() + wait
            while group_alive(group) and time.monotonic() < deadline:
                reap()
                time.sleep(0.2)
            if not group_alive(group):
                break
        self.process.poll()
        say(f"stopped {self.name}")


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap() -> None:
    """Collect exited children, including orphaned server workers handed to us as subreaper."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def become_subreaper() -> None:
    """Linux: orphans of our servers (uvicorn under `mlflow models serve`) are re-parented to this
    process rather than to PID 1, which in a container may never reap them."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def probe(server: Server, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    import httpx

    response = httpx.post(server.base + path, json=body, headers=headers, timeout=60)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text[:500]


def batching(server: Server, headers: dict[str, str]) -> dict[str, Any] | None:
    """The service's micro-batching counters from GET /metadata, when it reports them."""
    import httpx

    try:
        batching = httpx.get(server.base + "/metadata", headers=headers, timeout=10).json().get("batching")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    if not isinstance(batching, dict):
        return None
    return {k: v for k, v in batching.items() if isinstance(v, (int, float))}


def load(
    server: Server,
    path: str,
    bodies: Path | None,
    concurrency: int,
    duration: float,
    warmup: float,
    env: dict[str, str],
) -> dict[str, Any]:
    """The load generator's figures for `path` (POST of `bodies`, or GET without them)."""
    cmd = [
        str(BIN / "python"),
        str(LOADGEN),
        "--url",
        server.base + path,
        *(["--body-file", str(bodies)] if bodies is not None else ["--method", "GET"]),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ]
    if server.name == "ours":
        cmd += ["--bearer-env", "MLOPS_API_KEY"]  # the token stays out of argv
    if server.process is not None:
        cmd += ["--watch-pid", str(server.process.pid)]
    say(f"{server.name}: concurrency {concurrency}, {warmup:g} s warm-up + {duration:g} s")
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"load generator failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report
