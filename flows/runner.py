"""A warm runner for `mlops run`: the heavy imports are paid once, not on every run.

Prefect, MLflow, Great Expectations, scikit-learn and skops take several seconds to import,
more than the pipeline itself on small data. After a run in its own process, `mlops run`
leaves a runner behind: a background process that has imported them and does nothing else.
The next `mlops run` hands it its arguments, environment, working directory and terminal
(the file descriptors themselves, over a Unix socket); the runner forks, and the child runs
the command exactly as the CLI would, writing to the caller's terminal, then reports the
exit status. Each run is a fresh fork, so no state leaks from one run into the next.

Safety rules:
- A runner serves only callers whose environment is the one it was started with (the socket
  name is a hash of it): libraries read settings from the environment at import time.
- Before each fork the runner checks that no imported module's file changed on disk (an
  edit, a `uv sync`); if one did, it refuses the request and exits, and the caller runs in
  its own process and leaves a fresh runner.
- The runner never runs pipeline code itself, so no thread pool exists when it forks.
- It exits after `runner.idle_minutes` without requests or when its socket file is removed.
- `MLOPS__RUNNER__ENABLED=false` (or `runner.enabled: false`) turns all of this off.

This module is imported by the CLI on every run: it uses the standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROTOCOL = 1
CHILD_MARKER = "MLOPS_RUNNER_CHILD"
# Imported once by the runner; what a training run needs, including MLflow's and skops's lazy imports.
PRELOAD = (
    "flows.cli",
    "flows.training",
    "flows.prefect_server",
    "prefect.flow_engine",
    "prefect.task_engine",
    "great_expectations",
    "components.contract",
    "components.quarantine",
    "components.label_review",
    "cleanlab.filter",
    "sklearn.ensemble",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.pyfunc",
    "mlflow.models.signature",
    "mlflow.models.utils",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "skops.io",
)
# Variables that differ between shells without changing what a run does.
VOLATILE_ENV = frozenset(
    {"_", "PWD", "OLDPWD", "SHLVL", "COLUMNS", "LINES", "TERM", "COLORTERM", "PS1", "PROMPT_COMMAND"}
)
CONNECT_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 4 << 20
POLL_S = 2.0


@dataclass(frozen=True)
class RunnerInfo:
    pid: int
    socket: Path
    key: str
    started: float

    def as_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "socket": str(self.socket), "key": self.key, "started": self.started}


def runner_key(environ: Mapping[str, str], executable: str = sys.executable) -> str:
    """Identity of the process a runner stands in for: interpreter, user and environment."""
    env = sorted((k, v) for k, v in environ.items() if k not in VOLATILE_ENV and k != CHILD_MARKER)
    blob = json.dumps([PROTOCOL, executable, os.getuid(), env])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def runner_dir(workspace_root: Path) -> Path:
    return workspace_root / "runner"


def socket_path(workspace_root: Path, key: str) -> Path:
    """The runner's socket in the workspace, or under the temp dir when that path is too long for AF_UNIX."""
    path = runner_dir(workspace_root) / f"{key}.sock"
    if len(os.fsencode(path)) < 100:
        return path
    digest = hashlib.sha256(os.fsencode(workspace_root)).hexdigest()[:12]
    return Path("/tmp") / f"mlops-runner-{os.getuid()}" / f"{digest}-{key}.sock"


def _state_file(workspace_root: Path, key: str) -> Path:
    return runner_dir(workspace_root) / f"{key}.json"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- wire format: length-prefixed JSON


def _send(sock: socket.socket, message: dict[str, object], fds: list[int] | None = None) -> None:
    body = json.dumps(message).encode()
    frame = len(body).to_bytes(4, "big") + body
    if fds:
        sent = socket.send_fds(sock, [frame], fds)
        sock.sendall(frame[sent:])
    else:
        sock.sendall(frame)


def _recv_exact(sock: socket.socket, size: int, fds: list[int]) -> bytes:
    chunks, got = [], 0
    while got < size:
        data, new_fds, _, _ = socket.recv_fds(sock, size - got, 3)
        fds.extend(new_fds)
        if not data:
            raise EOFError("connection closed")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> tuple[dict[str, object], list[int]]:
    fds: list[int] = []
    size = int.from_bytes(_recv_exact(sock, 4, fds), "big")
    if size > MAX_REQUEST_BYTES:
        raise ValueError(f"message of {size} bytes refused")
    return json.loads(_recv_exact(sock, size, fds)), fds


# ---------------------------------------------------------------- caller side


def _terminal_fds() -> tuple[list[int], list[int]]:
    """The caller's stdin/stdout/stderr; a closed one is replaced by /dev/null (returned to close)."""
    fds, opened = [], []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            fds.append(null)
            opened.append(null)
    return fds, opened


def delegate(workspace_root: Path, argv: list[str], environ: Mapping[str, str] | None = None) -> int | None:
    """Run `argv` in this environment's warm runner; its exit status, or None when no runner took it."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get(CHILD_MARKER):
        return None
    key = runner_key(environ)
    path = socket_path(workspace_root, key)
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(str(path))
        except OSError:
            return None  # a runner that died without cleaning up
        fds, opened = _terminal_fds()
        try:
            _send(sock, {"key": key, "argv": argv, "env": environ, "cwd": os.getcwd()}, fds)
            reply, _ = _recv(sock)
        except (OSError, EOFError, ValueError):
            return None
        finally:
            for fd in opened:
                os.close(fd)
        if "pid" not in reply:
            return None
        return _follow(sock, int(reply["pid"]))  # type: ignore[call-overload]
    finally:
        sock.close()


def _follow(sock: socket.socket, pid: int) -> int:
    """Forward this process's signals to the child until it reports its exit status."""
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    previous = {s: signal.signal(s, forward) for s in forwarded}
    sock.settimeout(None)
    try:
        while True:
            try:
                message, _ = _recv(sock)
            except (OSError, EOFError, ValueError):
                sys.stderr.write("error: the run ended without an exit status (killed?)\n")
                return 1
            if "exit" in message:
                return int(message["exit"])  # type: ignore[call-overload]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def spawn(workspace_root: Path, idle_minutes: float, environ: Mapping[str, str] | None = None) -> bool:
    """Start a runner for this environment in the background, unless one runs or is starting."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get(CHILD_MARKER):
        return False
    key = runner_key(environ)
    folder = runner_dir(workspace_root)
    folder.mkdir(parents=True, exist_ok=True)
    state = _state_file(workspace_root, key)
    with contextlib.suppress(OSError, ValueError, KeyError):
        if pid_alive(int(json.loads(state.read_text())["pid"])):
            return False
    path = socket_path(workspace_root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(folder / f"{key}.log", "ab")  # noqa: SIM115 - handed to the child process
    with log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flows.runner",
                "--socket",
                str(path),
                "--state",
                str(state),
                "--key",
                key,
                "--idle-minutes",
                str(idle_minutes),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,
        )
    state.write_text(json.dumps({"pid": process.pid, "socket": str(path), "key": key, "started": time.time()}))
    return True


def list_runners(workspace_root: Path) -> list[RunnerInfo]:
    """The workspace's live runners."""
    runners = []
    for state in sorted(runner_dir(workspace_root).glob("*.json")):
        try:
            data = json.loads(state.read_text())
            info = RunnerInfo(int(data["pid"]), Path(data["socket"]), str(data["key"]), float(data["started"]))
        except (OSError, ValueError, KeyError):
            continue
        if pid_alive(info.pid):
            runners.append(info)
        else:
            state.unlink(missing_ok=True)
    return runners


def stop_runners(workspace_root: Path, timeout: float = 10.0) -> list[RunnerInfo]:
    """Stop every runner of the workspace (runs in progress finish: they are separate processes)."""
    stopped = list_runners(workspace_root)
    for info in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for info in stopped:
        while pid_alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(info.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
        info.socket.unlink(missing_ok=True)
        _state_file(workspace_root, info.key).unlink(missing_ok=True)
    return stopped


# ---------------------------------------------------------------- runner side


def _module_files() -> dict[str, int]:
    files = {}
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if name:
            with contextlib.suppress(OSError):
                files[name] = os.stat(name).st_mtime_ns
    return files


def _changed(snapshot: dict[str, int]) -> str | None:
    """The first imported file that changed or vanished since the runner started."""
    for name, mtime in snapshot.items():
        try:
            if os.stat(name).st_mtime_ns != mtime:
                return name
        except OSError:
            return name
    return None


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [runner {os.getpid()}] {message}", flush=True)


def serve(path: Path, state: Path, key: str, idle_minutes: float) -> None:
    """The runner process: preload, listen, fork one child per request."""
    import importlib

    if runner_key(os.environ) != key:
        raise SystemExit("runner: environment does not match the key it was started for")
    started = time.monotonic()
    for module in PRELOAD:
        importlib.import_module(module)
    snapshot = _module_files()
    _log(f"preloaded {len(snapshot)} modules in {time.monotonic() - started:.1f}s")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    stop = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pending = path.with_name(f".{path.name}.{os.getpid()}")
    pending.unlink(missing_ok=True)
    listener.bind(str(pending))
    listener.listen(16)
    listener.settimeout(POLL_S)
    pending.replace(path)
    inode = path.stat().st_ino
    state.write_text(json.dumps({"pid": os.getpid(), "socket": str(path), "key": key, "started": time.time()}))
    last_request = time.monotonic()
    try:
        while not stop:
            if not path.exists():
                _log("socket removed: exiting")
                return
            if time.monotonic() - last_request > idle_minutes * 60:
                _log(f"idle for {idle_minutes:g} min: exiting")
                return
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            last_request = time.monotonic()
            if not _handle(conn, listener, key, snapshot):
                return
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:  # not a newer runner's socket
                path.unlink()
        with contextlib.suppress(OSError, ValueError, KeyError):
            if int(json.loads(state.read_text())["pid"]) == os.getpid():
                state.unlink()


def _handle(conn: socket.socket, listener: socket.socket, key: str, snapshot: dict[str, int]) -> bool:
    """Serve one request; False when the runner must exit (its code is stale)."""
    fds: list[int] = []
    try:
        conn.settimeout(CONNECT_TIMEOUT_S)
        request, fds = _recv(conn)
        if request.get("key") != key or len(fds) != 3:
            _send(conn, {"refused": "environment differs"})
            return True
        changed = _changed(snapshot)
        if changed:
            _send(conn, {"refused": f"code changed: {changed}"})
            _log(f"{changed} changed since start: exiting")
            return False
        pid = os.fork()
        if pid == 0:
            try:
                listener.close()
                _child(conn, request, fds)
            finally:
                os._exit(1)  # a child never returns into the runner's loop
        _log(f"pid {pid}: {' '.join(map(str, request['argv']))}")  # type: ignore[call-overload]
        return True
    except (OSError, EOFError, ValueError) as exc:
        _log(f"bad request: {exc}")
        return True
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        conn.close()


def _child(conn: socket.socket, request: dict[str, object], fds: list[int]) -> None:
    """Become the caller's process: its terminal, environment, directory and arguments; then run."""
    code = 1
    finished: threading.Event | None = None
    try:
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)  # subprocesses must be waitable again
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        fds.clear()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, ValueError):
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})  # type: ignore[attr-defined]
        os.environ[CHILD_MARKER] = "1"
        os.chdir(str(request["cwd"]))
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        sys.argv = argv
        conn.settimeout(None)
        _send(conn, {"pid": os.getpid()})
        finished = _watch_caller(conn)
        from rich.console import Console

        from flows import cli

        cli.out, cli.err = Console(), Console(stderr=True)  # detect the caller's terminal, not the runner's log
        code = cli.run_command_line(argv[1:])
    except BaseException:  # noqa: BLE001 - the child must always report and exit
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        if finished is not None:
            finished.set()
        with contextlib.suppress(OSError):
            _send(conn, {"exit": code})
        os._exit(code)


def _watch_caller(conn: socket.socket) -> threading.Event:
    """When the caller dies (it never sends anything after its request), interrupt the run.

    Returns the event to set once the run is over, so the caller's normal hang-up is not mistaken.
    """
    import _thread

    finished = threading.Event()

    def watch() -> None:
        with contextlib.suppress(OSError):
            while conn.recv(1):
                pass
        if finished.is_set():
            return
        _thread.interrupt_main()
        if not finished.wait(30):
            os._exit(130)

    threading.Thread(target=watch, name="mlops-runner-caller", daemon=True).start()
    return finished


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--idle-minutes", type=float, default=30.0)
    args = parser.parse_args(argv)
    serve(args.socket, args.state, args.key, args.idle_minutes)


if __name__ == "__main__":
    main()
