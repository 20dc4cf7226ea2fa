"""Serving benchmark (issue 5): our BentoML service against `mlflow models serve`, same model, one run.

Figures, side by side, on the same registered champion and the same machine:

- in-process: `load_serving_model("models:/<name>@champion").predict([row])` — the call the service
  makes per request — timed over `--predict-calls` single rows with one BLAS/OpenMP thread;
- ours: `mlops serve` (POST /predict, one row per request) at concurrency 1 and `--concurrency`;
- mlflow: `mlflow models serve --env-manager local` (POST /invocations, `dataframe_records`) on the
  same model URI, same number of workers, same thread settings, at the same concurrencies.

Load comes from `benchmarks/loadgen.py` in a separate process over loopback: closed loop, keep-alive,
a pool of real generated rows (target and time columns removed) so no input repeats back to back;
each server runs alone while it is measured. The load generator shares the machine with the server,
so the table shows the CPU both used during each measured window.

Goals: no non-2xx answer at concurrency 32 over 30 s; requests/s at concurrency 32 at least 10x
`mlflow models serve`'s; p50 at concurrency 1 at most 3x the in-process single-row predict time.
The exit status is 0 whenever everything was measured, goals met or not; 1 when a server could not
be started or the setup failed.

Without `--config` a temporary workspace is created: generated loan data (`mlops simulate`
defaults: 4 batches x 5,000 rows), a small search (3 trials) and `mlops run` to register a champion.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from project import loan_model, write_project  # noqa: E402 - the sibling module

BIN = Path(sys.executable).parent
LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
ESTIMATORS = ("logistic_regression", "hist_gradient_boosting", "random_forest")
STARTUP_TIMEOUT_S = 240
MAX_NON_2XX = 0
MIN_THROUGHPUT_RATIO = 10.0
MAX_LATENCY_RATIO = 3.0
GOAL_DURATION_S = 30.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Variables that would point a fresh benchmark workspace at someone else's state.
FOREIGN_STATE = (
    "MLOPS_HOME",
    "MLOPS_CONFIG",
    "MLOPS_MODEL_NAME",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "PREFECT_API_URL",
)


class BenchError(RuntimeError):
    """A step of the benchmark could not run (setup, a server that does not start)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log(message: str) -> None:
    print(f"[bench-serving {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------- setup


MODEL = "bench_serving"


def _write_config(folder: Path, work: Path, estimator: str | None) -> Path:
    project = {
        "home": str(work / "ws"),
        "seed": 7,
        "validation": {"suite_dir": str(work / "expectations")},
        "search": {"trials": 3},
        "evaluation": {"plots": False},
        "prefect": {"server": "ephemeral"},  # nothing left running after the setup
    }
    model = loan_model(work / "data", **({"model": {"estimator": estimator}} if estimator else {}))
    return write_project(folder, project, MODEL, model)


def _run_step(cmd: list[str], env: dict[str, str], log: Path) -> None:
    _log(" ".join(cmd[1:] if cmd[0].endswith("mlops") else cmd))
    with log.open("ab") as out:
        result = subprocess.run(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {result.returncode}:\n{_tail(log)}")


def _setup(work: Path, estimator: str | None, env: dict[str, str]) -> Path:
    config = _write_config(work, work, estimator)
    log = work / "setup.log"
    mlops = str(BIN / "mlops")
    _run_step([mlops, "simulate", "--out", str(work / "data"), "--config", str(config)], env, log)
    started = time.perf_counter()
    _run_step([mlops, "run", "--config", str(config), "--name", MODEL], env, log)
    _log(f"trained and registered in {time.perf_counter() - started:.0f} s (log: {log})")
    return config


# ------------------------------------------------------------------------------------------- request rows


def _request_rows(config: Any, home: Path, pool: int, seed: int) -> list[dict[str, Any]]:
    """Real rows of the training source as a client sends them: target and time columns removed."""
    from components.core.config import resolve_source
    from components.data.extract import extract_table

    frame = extract_table(resolve_source(config, home), config.data.query)
    drop = [c for c in (config.data.target, config.data.time_column) if c and c in frame.columns]
    frame = frame.drop(columns=drop)
    frame = frame.sample(n=min(pool, len(frame)), random_state=seed)
    return json.loads(frame.to_json(orient="records"))


def _signature_columns(model_uri: str) -> list[str] | None:
    """The input columns of the logged model's signature (MLflow warns per request about others)."""
    try:
        from mlflow.models import get_model_info

        signature = get_model_info(model_uri).signature
        return list(signature.inputs.input_names()) if signature is not None else None
    except Exception:  # noqa: BLE001 - then MLflow gets the rows as they are
        return None


def _write_bodies(path: Path, bodies: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    return path


# --------------------------------------------------------------------------------------------- in-process


def _summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)

    def q(p: float) -> float:
        return ms[max(0, min(len(ms) - 1, round(p / 100 * (len(ms) - 1))))]

    mean = statistics.fmean(ms)
    return {"count": len(ms), "p50_ms": q(50), "p90_ms": q(90), "p99_ms": q(99), "max_ms": ms[-1], "mean_ms": mean}


def _in_process(model_uri: str, rows: list[dict[str, Any]], calls: int, profile: bool) -> dict[str, Any]:
    """The service's per-request call, timed in this process with one thread (as `mlops serve` runs)."""
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from components.inference.scoring import load_serving_model

    served = load_serving_model(model_uri)
    timings: list[float] = []
    with threadpool_limits(limits=1):
        for row in rows[:50]:
            served.predict([row])  # first calls: lazy initialisation is not what a request pays
        machine, own, wall = _machine_busy(), time.process_time(), time.perf_counter()
        for i in range(calls):
            row = rows[i % len(rows)]
            started = time.perf_counter()
            served.predict([row])
            timings.append(time.perf_counter() - started)
        wall = time.perf_counter() - wall
        own = time.process_time() - own
        result: dict[str, Any] = _summary_ms(timings)
        result["rps"] = 1000 / result["mean_ms"]
        after = _machine_busy()
        result["other_cpu_share"] = (
            (after - machine - own) / wall if machine is not None and after is not None else None
        )
        result["breakdown"] = _breakdown(served, rows, pd)
        result["estimator"] = _estimator_name(served)
        if profile:
            result["profile"] = _profile(served, rows)
    return result


def _estimator_name(served: Any) -> str:
    try:
        from components.inference.scoring import pipeline_of

        return type(pipeline_of(getattr(served, "model", served)).steps[-1][1]).__name__
    except Exception:  # noqa: BLE001 - a label only
        return "?"


def _machine_busy() -> float | None:
    """CPU seconds the machine spent busy so far, all cores (psutil; None without it)."""
    try:
        import psutil
    except ImportError:
        return None
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _median_ms(fn: Any, rows: list[dict[str, Any]], calls: int = 300) -> float:
    timings = []
    for i in range(calls):
        row = rows[i % len(rows)]
        started = time.perf_counter()
        fn(row)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def _breakdown(served: Any, rows: list[dict[str, Any]], pd: Any) -> dict[str, float] | str:
    """Where a single row's time goes: the DataFrame, sklearn's preprocessing, the estimator itself."""
    try:
        from components.inference.scoring import pipeline_of

        model = getattr(served, "model", served)
        pipeline = pipeline_of(model)
        preprocess = pipeline.named_steps["preprocess"]
        estimator = pipeline.steps[-1][1]
        frames = {i: pd.DataFrame.from_records([row]) for i, row in enumerate(rows)}
        index = {id(row): i for i, row in enumerate(rows)}
        transformed = {i: preprocess.transform(frame) for i, frame in frames.items()}
        return {
            "service_predict_ms": _median_ms(lambda r: served.predict([r]), rows),
            "dataframe_from_records_ms": _median_ms(lambda r: pd.DataFrame.from_records([r]), rows),
            "model_predict_proba_ms": _median_ms(lambda r: model.predict_proba(frames[index[id(r)]]), rows),
            "column_transformer_ms": _median_ms(lambda r: preprocess.transform(frames[index[id(r)]]), rows),
            "estimator_predict_proba_ms": _median_ms(
                lambda r: estimator.predict_proba(transformed[index[id(r)]]), rows
            ),
        }
    except Exception as exc:  # noqa: BLE001 - informational only; the internals may change
        return f"not measured: {type(exc).__name__}: {exc}"


def _profile(served: Any, rows: list[dict[str, Any]], calls: int = 500, top: int = 30) -> str:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        served.predict([rows[i % len(rows)]])
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- servers


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

        _log(f"starting {self.name}: {' '.join(self.cmd)}")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.cmd, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        started = time.monotonic()
        candidates = list(ready_paths)
        while True:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} exited {self.process.returncode} before it was ready:\n{_tail(self.log)}"
                )
            try:
                status = httpx.get(self.base + candidates[0], timeout=2).status_code
                if status == 200:
                    _log(f"{self.name} ready ({candidates[0]}) after {time.monotonic() - started:.1f} s")
                    return candidates[0]
                if status == 404 and len(candidates) > 1:
                    candidates.pop(0)
            except httpx.TransportError:
                pass
            if time.monotonic() - started > timeout:
                raise BenchError(f"{self.name} not ready within {timeout:.0f} s:\n{_tail(self.log)}")
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
            while _group_alive(group) and time.monotonic() < deadline:
                _reap()
                time.sleep(0.2)
            if not _group_alive(group):
                break
        self.process.poll()
        _log(f"stopped {self.name}")


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap() -> None:
    """Collect exited children, including orphaned server workers handed to us as subreaper."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _become_subreaper() -> None:
    """Linux: orphans of our servers (uvicorn under `mlflow models serve`) are re-parented to this
    process rather than to PID 1, which in a container may never reap them."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _probe(server: Server, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    import httpx

    response = httpx.post(server.base + path, json=body, headers=headers, timeout=60)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text[:500]


def _batching(server: Server, headers: dict[str, str]) -> dict[str, Any] | None:
    """The service's micro-batching counters from GET /metadata, when it reports them."""
    import httpx

    try:
        batching = httpx.get(server.base + "/metadata", headers=headers, timeout=10).json().get("batching")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    if not isinstance(batching, dict):
        return None
    return {k: v for k, v in batching.items() if isinstance(v, (int, float))}


def _load(
    server: Server, path: str, bodies: Path, concurrency: int, duration: float, warmup: float, env: dict[str, str]
) -> dict[str, Any]:
    cmd = [
        str(BIN / "python"),
        str(LOADGEN),
        "--url",
        server.base + path,
        "--body-file",
        str(bodies),
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
    _log(f"{server.name}: concurrency {concurrency}, {warmup:g} s warm-up + {duration:g} s")
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"load generator failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _goals(inproc: dict[str, Any] | None, runs: dict[str, dict[str, Any]], high: int) -> list[dict[str, Any]]:
    ours_hi, ours_1, mlflow_hi = runs.get(f"ours c={high}"), runs.get("ours c=1"), runs.get(f"mlflow c={high}")
    goals = []
    if ours_hi is not None:
        note = "" if ours_hi["duration_s"] >= GOAL_DURATION_S else f" (measured {ours_hi['duration_s']:g} s, < 30 s)"
        goals.append(
            {
                "goal": f"zero non-2xx at concurrency {high} over {GOAL_DURATION_S:g} s",
                "measured": f"{ours_hi['non_2xx']} of {ours_hi['count']}{note}",
                "passed": ours_hi["non_2xx"] <= MAX_NON_2XX,
            }
        )
    if ours_hi is not None and mlflow_hi is not None and mlflow_hi["rps"] > 0:
        ratio = ours_hi["rps"] / mlflow_hi["rps"]
        goals.append(
            {
                "goal": f"req/s at concurrency {high} >= {MIN_THROUGHPUT_RATIO:g}x mlflow models serve",
                "measured": f"{ratio:.2f}x ({ours_hi['rps']:.0f} vs {mlflow_hi['rps']:.0f} req/s)",
                "ratio": ratio,
                "passed": ratio >= MIN_THROUGHPUT_RATIO,
            }
        )
    if ours_1 is not None and inproc is not None and ours_1["p50_ms"] is not None:
        ratio = ours_1["p50_ms"] / inproc["p50_ms"]
        goals.append(
            {
                "goal": f"p50 at concurrency 1 <= {MAX_LATENCY_RATIO:g}x in-process single-row predict",
                "measured": f"{ratio:.2f}x ({ours_1['p50_ms']:.2f} vs {inproc['p50_ms']:.2f} ms)",
                "ratio": ratio,
                "passed": ratio <= MAX_LATENCY_RATIO,
            }
        )
    return goals


def _runs_table(report: dict[str, Any]) -> Any:
    """One row per measured case (the in-process predict first): latency, throughput and CPU shares."""
    from rich.table import Table

    table = Table(title=None)
    for column, justify in [
        ("case", "left"),
        ("s", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("req/s", "right"),
        ("non-2xx", "right"),
        ("requests", "right"),
        ("CPU ms/req", "right"),
        ("server CPU", "right"),
        ("loadgen CPU", "right"),
        ("other CPU", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    inproc = report.get("in_process")
    if inproc:
        table.add_row(
            "in-process predict, 1 row",
            "-",
            _fmt(inproc["p50_ms"]),
            _fmt(inproc["p99_ms"]),
            _fmt(inproc["rps"], ".0f"),
            "-",
            str(inproc["count"]),
            _fmt(inproc["mean_ms"]),
            "-",
            "-",
            "-" if inproc.get("other_cpu_share") is None else f"{max(0.0, inproc['other_cpu_share']):.0%}",
        )
    for case, run in report["runs"].items():
        if "error" in run:
            table.add_row(case, *["-"] * 10)
            continue
        per_request = run["server_cpu_s"] * 1000 / run["count"] if run.get("server_cpu_s") and run["count"] else None
        share = run.get("server_cpu_share")
        table.add_row(
            case,
            f"{run['duration_s']:g}",
            _fmt(run["p50_ms"]),
            _fmt(run["p99_ms"]),
            _fmt(run["rps"], ".0f"),
            str(run["non_2xx"]),
            str(run["count"]),
            _fmt(per_request),
            "-" if share is None else f"{share:.0%}",
            f"{run['client_cpu_share']:.0%}",
            "-" if run.get("other_cpu_share") is None else f"{max(0.0, run['other_cpu_share']):.0%}",
        )
    return table


def _print_details(console: Any, report: dict[str, Any]) -> None:
    """Each case's errors and micro-batching counters, the in-process breakdown, and the notes."""
    for case, run in report["runs"].items():
        if "error" in run:
            console.print(f"[red]{case}: {run['error']}[/red]")
        elif run["errors"]:
            console.print(f"{case}: first errors: {run['errors']}")
    for case, run in report["runs"].items():
        batching = run.get("batching")
        if batching and batching.get("batches"):
            counters = ", ".join(f"{k} {v}" for k, v in batching.items())
            mean = batching.get("rows", 0) / batching["batches"]
            console.print(f"{case}: micro-batching (warm-up included) {counters}; mean batch {mean:.1f} rows")
    breakdown = (report.get("in_process") or {}).get("breakdown")
    if isinstance(breakdown, dict):
        parts = ", ".join(f"{k.removesuffix('_ms')} {v:.3f}" for k, v in breakdown.items())
        console.print(f"In-process single row, median ms: {parts}")
    elif breakdown:
        console.print(f"In-process breakdown {breakdown}")
    for note in report.get("notes", []):
        console.print(note)


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    meta = report["meta"]
    console.print()
    console.print(
        f"Serving benchmark: {meta['model_uri']} (v{meta['model_version']}, {meta['estimator']}), "
        f"{meta['cpus']} CPUs, load average before {meta['loadavg_before']}, after {meta['loadavg_after']}"
    )
    console.print(_runs_table(report))
    console.print(
        "s: measured seconds (after the warm-up). CPU ms/req: the server process tree's CPU time per answered "
        "request (in-process: mean wall time per call). Server / loadgen CPU: share of one core over the measured "
        "window used by the server's process tree / by the load generator process; other CPU: by everything else "
        f"on the machine ({os.cpu_count()} cores = {os.cpu_count() * 100}%), i.e. how shared the machine was."
    )
    _print_details(console, report)
    console.print()
    console.print("Goals:")
    for goal in report["goals"]:
        verdict = "[green]PASS[/green]" if goal["passed"] else "[bold red]FAIL[/bold red]"
        console.print(f"  {verdict}  {goal['goal']}: {goal['measured']}")
    if not report["goals"]:
        console.print("  (nothing to judge: see the errors above)")


# ------------------------------------------------------------------------------------------------ main


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="Reuse this workspace's champion (no training).")
    parser.add_argument("--estimator", choices=ESTIMATORS, default=None, help="Fresh workspace: the model family.")
    parser.add_argument("--duration", type=float, default=30.0, help="Measured seconds at the high concurrency.")
    parser.add_argument("--c1-duration", type=float, default=10.0, help="Measured seconds at concurrency 1.")
    parser.add_argument("--warmup", type=float, default=3.0, help="Seconds of load before each measurement.")
    parser.add_argument("--concurrency", type=int, default=32, help="The high concurrency.")
    parser.add_argument("--rows", type=int, default=500, help="Pool of distinct request rows.")
    parser.add_argument("--predict-calls", type=int, default=1000, help="In-process single-row calls timed.")
    parser.add_argument("--profile", action="store_true", help="Print a cProfile of the in-process predict path.")
    parser.add_argument("--skip-mlflow", action="store_true", help="Measure our service only (no throughput goal).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary workspace (and server logs).")
    parser.add_argument("--json", type=Path, default=None, help="Also write every figure to this JSON file.")
    args = parser.parse_args(argv)
    if args.config and args.estimator:
        parser.error("--estimator trains a fresh workspace; --config reuses one: pass one of them")
    return args


def _environment(args: argparse.Namespace) -> dict[str, str]:
    """This process's environment for the benchmark (telemetry off, no one else's state in a fresh
    workspace, the venv's tools on PATH), and a copy of it for the servers."""
    from components.core.environment import TELEMETRY_OFF

    os.environ.update(TELEMETRY_OFF)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.config is None:
        for name in [*FOREIGN_STATE, *(n for n in os.environ if n.startswith("MLOPS__"))]:
            os.environ.pop(name, None)
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # mlflow serve runs `uvicorn`
    return dict(os.environ)


def _config_path(args: argparse.Namespace, work: Path, env: dict[str, str]) -> Path:
    """The project file of the workspace to benchmark: --config's, or a fresh one trained here."""
    if args.config is not None:
        return Path(args.config.resolve())
    setup_env = {
        **env,
        # The temporary Prefect server's 20 s default is too short on a busy 2-core machine.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": env.get(
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"
        ),
    }
    return _setup(work, args.estimator, setup_env)


@dataclass
class _Bench:
    """One benchmark's champion, request bodies and settings; each server's figures go into `report`."""

    args: argparse.Namespace
    env: dict[str, str]
    work: Path
    config_path: Path
    name: str
    champion: Any
    tracking: str
    workers: int
    rows: list[dict[str, Any]]
    mlflow_rows: list[dict[str, Any]]
    ours_bodies: Path
    mlflow_bodies: Path
    report: dict[str, Any]
    answers: dict[str, Any] = field(default_factory=dict)  # each server's predictions of the probe rows

    @property
    def levels(self) -> list[tuple[int, float]]:
        return [(1, self.args.c1_duration), (self.args.concurrency, self.args.duration)]

    @property
    def check_rows(self) -> list[dict[str, Any]]:
        return self.rows[:20]


def _prepare(
    args: argparse.Namespace, env: dict[str, str], work: Path, config_path: Path, report: dict[str, Any]
) -> _Bench:
    """The workspace's champion and the request bodies both servers get."""
    from components.core.project import load_project
    from components.core.workspace import Workspace
    from components.tracking import registry

    project = load_project(config_path)
    name = os.environ.get("MLOPS_MODEL_NAME") or project.resolve_name(None, "the benchmark")
    config = project.config_for(name)
    workspace = Workspace.at(config.home)
    client = registry.connect(workspace)
    champion = registry.get_champion(client, name)
    if champion is None:
        raise BenchError(f"registered model {name!r} has no champion in {registry.tracking_uri(workspace)}")
    tracking = registry.tracking_uri(workspace)
    workers = int(getattr(config.serving, "workers", 1))
    rows = _request_rows(config, workspace.root, args.rows, config.seed)
    signature = _signature_columns(champion.uri)
    mlflow_rows = [{k: r[k] for k in signature if k in r} for r in rows] if signature else rows
    ours_bodies = _write_bodies(work / "ours_bodies.jsonl", [{"rows": [r]} for r in rows])
    mlflow_bodies = _write_bodies(work / "mlflow_bodies.jsonl", [{"dataframe_records": [r]} for r in mlflow_rows])
    if signature:
        extra = sorted(set(rows[0]) - set(signature))
        report["notes"].append(
            f"mlflow rows carry the signature's {len(signature)} columns only (without {extra}), "
            "sparing it a warning logged per request; ours get every column but the target and time."
        )
    return _Bench(
        args=args,
        env=env,
        work=work,
        config_path=config_path,
        name=name,
        champion=champion,
        tracking=tracking,
        workers=workers,
        rows=rows,
        mlflow_rows=mlflow_rows,
        ours_bodies=ours_bodies,
        mlflow_bodies=mlflow_bodies,
        report=report,
    )


def _bench_ours(bench: _Bench, stack: ExitStack) -> int:
    """`mlops serve` probed, then loaded at each concurrency (with its micro-batching counters); 1 when it failed."""
    args, report, champion = bench.args, bench.report, bench.champion
    headers = {"Authorization": f"Bearer {os.environ['MLOPS_API_KEY']}"} if os.environ.get("MLOPS_API_KEY") else {}
    ours_port = _free_port()
    ours = Server(
        "ours",
        [
            str(BIN / "mlops"),
            "serve",
            "--config",
            str(bench.config_path),
            "--port",
            str(ours_port),
            "--name",
            bench.name,
        ],
        bench.env,
        ours_port,
        bench.work / "ours_server.log",
    )
    stack.callback(ours.stop)
    try:
        ours.start(("/readyz", "/healthz"))
        code, body = _probe(ours, "/predict", {"rows": bench.check_rows}, headers)
        if code != 200:
            report["notes"].append(f"ours answered the probe with {code}: {body}")
        else:
            bench.answers["ours"] = body.get("predictions")
            if str(body.get("model_version")) != str(champion.version):
                report["notes"].append(f"ours serves v{body.get('model_version')}, champion is v{champion.version}")
        for concurrency, duration in bench.levels:
            before = _batching(ours, headers)
            run = _load(ours, "/predict", bench.ours_bodies, concurrency, duration, args.warmup, bench.env)
            after = _batching(ours, headers)
            if before is not None and after is not None:
                run["batching"] = {k: after[k] - before.get(k, 0) for k in after if k != "largest_batch_rows"}
                run["batching"]["largest_batch_rows"] = after.get("largest_batch_rows")
            report["runs"][f"ours c={concurrency}"] = run
    except BenchError as exc:
        report["runs"].setdefault(f"ours c={args.concurrency}", {"error": str(exc).splitlines()[0]})
        _log(str(exc))
        return 1
    finally:
        ours.stop()
    return 0


def _bench_mlflow(bench: _Bench, stack: ExitStack) -> int:
    """`mlflow models serve` on the same model, workers and thread settings; 1 when it failed."""
    args, report = bench.args, bench.report
    mlflow_port = _free_port()
    mlflow_env = {**bench.env, "MLFLOW_TRACKING_URI": bench.tracking}
    for variable in THREAD_VARIABLES:  # as `mlops serve` sets them
        mlflow_env.setdefault(variable, "1")
    mlflow = Server(
        "mlflow",
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            bench.champion.uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(mlflow_port),
            "--workers",
            str(bench.workers),
        ],
        mlflow_env,
        mlflow_port,
        bench.work / "mlflow_server.log",
    )
    stack.callback(mlflow.stop)
    try:
        mlflow.start(("/ping", "/health"))
        check = {"dataframe_records": bench.mlflow_rows[: len(bench.check_rows)]}
        code, body = _probe(mlflow, "/invocations", check, {})
        if code != 200:
            report["notes"].append(f"mlflow answered the probe with {code}: {body}")
        else:
            bench.answers["mlflow"] = body.get("predictions") if isinstance(body, dict) else None
        for concurrency, duration in bench.levels:
            report["runs"][f"mlflow c={concurrency}"] = _load(
                mlflow, "/invocations", bench.mlflow_bodies, concurrency, duration, args.warmup, bench.env
            )
    except BenchError as exc:
        report["runs"].setdefault(f"mlflow c={args.concurrency}", {"error": str(exc).splitlines()[0]})
        _log(str(exc))
        return 1
    finally:
        mlflow.stop()
    return 0


def _meta(bench: _Bench, loadavg_before: str) -> dict[str, Any]:
    """What was measured, where and how busy the machine was."""
    return {
        "model_uri": bench.champion.uri,
        "model_name": bench.name,
        "model_version": bench.champion.version,
        "estimator": bench.report.get("in_process", {}).get("estimator", "?"),
        "tracking_uri": bench.tracking,
        "workers": bench.workers,
        "cpus": os.cpu_count(),
        "loadavg_before": loadavg_before,
        "loadavg_after": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "python": platform.python_version(),
        "argv": sys.argv[1:],
        "workspace": str(bench.work) if bench.args.config is None else str(bench.config_path),
    }


def _measure(bench: _Bench, stack: ExitStack, loadavg_before: str) -> int:
    """In-process, then each server alone; the goals judged and the report printed. 1 when a server failed."""
    args, report, champion = bench.args, bench.report, bench.champion
    _log(f"in-process: {args.predict_calls} single-row predictions of {champion.uri} (v{champion.version})")
    report["in_process"] = _in_process(champion.uri, bench.rows, args.predict_calls, args.profile)
    if args.profile:
        print(report["in_process"]["profile"], file=sys.stderr)
    status = _bench_ours(bench, stack)
    if not args.skip_mlflow:
        status = _bench_mlflow(bench, stack) or status
    if "ours" in bench.answers and "mlflow" in bench.answers:
        same = bench.answers["ours"] == bench.answers["mlflow"]
        report["notes"].append(
            f"same predictions from both servers on {len(bench.check_rows)} probe rows: {'yes' if same else 'NO'}"
        )
    report["meta"] = _meta(bench, loadavg_before)
    ok_runs = {k: v for k, v in report["runs"].items() if "error" not in v}
    report["goals"] = _goals(report.get("in_process"), ok_runs, args.concurrency)
    _print_report(report)
    if args.keep:
        print(f"\nworkspace kept: {bench.work} (rerun with --config {bench.config_path})")
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    env = _environment(args)
    # SIGTERM (e.g. from make) must still stop the servers: turn it into an exception.
    signal.signal(signal.SIGTERM, _interrupt)
    _become_subreaper()
    report: dict[str, Any] = {"runs": {}, "notes": []}
    status = 0
    loadavg_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    with ExitStack() as stack:
        if args.keep:
            work = Path(tempfile.mkdtemp(prefix="mlops-bench-serving-"))
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlops-bench-serving-")))
        try:
            config_path = _config_path(args, work, env)
            bench = _prepare(args, env, work, config_path, report)
            status = _measure(bench, stack, loadavg_before)
        except BenchError as exc:
            _log(str(exc))
            return 1
        except KeyboardInterrupt:
            _log("interrupted; stopping the servers")
            return 130
        finally:
            if args.json and "meta" in report:
                report.get("in_process", {}).pop("profile", None)
                args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
