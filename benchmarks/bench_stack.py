"""The same training and batch scoring against the embedded default and against the server stack,
side by side, same data, same machine.

Embedded: MLflow on the workspace's SQLite file, the workspace's local Prefect server. Stack: an
MLflow tracking server and a Prefect server on PostgreSQL, a Dask scheduler with two workers, all
real processes started here (`tests/stack/harness.py`). Reported: wall time per `mlops run` (the
first run of each side apart: migrations, server start), the tracking server's requests per run
(its access log), the cost of one registry call on each side, and batch-scoring rows/s in one
process against two external Dask workers, with the cores this machine has free.

Goals: a training run on the stack within 1.3x the embedded run; scoring on two Dask workers at
least 1.6x one process where four or more cores are free (two shared cores cannot show it).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from project import loan_model, timed_command, write_project  # noqa: E402 - the sibling module

from tests.stack.harness import stack  # noqa: E402 - the repository's stack harness

BIN = Path(sys.executable).parent
MODEL = "bench_loans"
TRAINING_GOAL, SCORING_GOAL, SCORING_MIN_CORES = 1.3, 1.6, 4
REQUEST = re.compile(r'"(GET|POST|PATCH|DELETE|PUT) /(api|ajax-api)/')


def _run(cmd: list[str], env: dict[str, str]) -> float:
    return timed_command(cmd, env, ROOT)


def _requests(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if REQUEST.search(line))


def _training(config: Path, env: dict[str, str], repeats: int, log: Path | None) -> dict[str, Any]:
    """Cold run, then `repeats` runs: their median wall time and tracking-server requests."""
    cmd = [str(BIN / "mlops"), "run", "--config", str(config), "--name", MODEL]
    cold = _run(cmd, env)
    times, calls = [], []
    for _ in range(repeats):
        before = _requests(log) if log else 0
        times.append(_run(cmd, env))
        calls.append(_requests(log) - before if log else 0)
    return {"cold": cold, "median": statistics.median(times), "calls": statistics.median(calls) if log else None}


def _call_cost(env: dict[str, str], calls: int = 30) -> dict[str, float]:
    """Median milliseconds of two registry calls the pipeline and the service make, in this process."""
    import mlflow

    saved = {
        k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    os.environ.update({k: env[k] for k in saved if k in env})
    try:
        client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
        costs: dict[str, float] = {}
        for label, call in (
            ("models", lambda: client.search_registered_models(max_results=1)),
            ("search_runs", lambda: client.search_runs(["0"], max_results=1)),
        ):
            call()
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                call()
                samples.append((time.perf_counter() - started) * 1000)
            costs[label] = statistics.median(samples)
        return costs
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _scoring(config: Path, env: dict[str, str], data: Path, out: Path, dask: str | None, repeats: int) -> float:
    """Median rows/s of `mlops score` on `data` (in one process, or on the Dask scheduler)."""
    import pandas as pd

    rows = len(pd.read_parquet(data, columns=["loan_id"]))
    cmd = [str(BIN / "mlops"), "score", "--config", str(config), "--name", MODEL, "--input", str(data),
           "--output", str(out)] + (["--dask-address", dask] if dask else [])  # fmt: skip
    return statistics.median(rows / _run(cmd, env) for _ in range(repeats))


def _score_input(source: Path, target: Path, rows: int) -> Path:
    import pandas as pd

    frame = pd.concat([pd.read_parquet(p) for p in sorted(source.glob("*.parquet"))], ignore_index=True)
    frame = pd.concat([frame] * (rows // len(frame) + 1), ignore_index=True).iloc[:rows]
    frame["loan_id"] = [f"L{i:09d}" for i in range(len(frame))]
    frame.drop(columns=["default"]).to_parquet(target, index=False)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--score-rows", type=int, default=1_000_000)
    args = parser.parse_args()

    from components.core.environment import TELEMETRY_OFF
    from components.simulation.simulate import write_batches

    base = {**os.environ, **TELEMETRY_OFF}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        base.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="mlops-bench-stack-") as tmp:
        work = Path(tmp)
        data = work / "data"
        write_batches(data, 4, 5_000, seed=42)
        scoring_input = _score_input(data, work / "score.parquet", args.score_rows)
        project = {"validation": {"suite_dir": str(work / "suites")}, "search": {"trials": 5}}
        model = loan_model(data, evaluation={"slices": ["home_ownership"]})
        sides: dict[str, dict[str, Any]] = {}
        embedded_env = {**base, "MLOPS_HOME": str(work / "ws-embedded")}
        config = write_project(work / "project", {**project, "home": str(work / "ws-embedded")}, MODEL, model)
        try:
            sides["embedded"] = _training(config, embedded_env, args.repeats, None)
            print(f"embedded: {sides['embedded']}", flush=True)
            sides["embedded"]["cost"] = _call_cost(
                {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'ws-embedded'}/mlflow/mlflow.db"}
            )
        finally:
            subprocess.run([str(BIN / "mlops"), "server", "stop", "--config", str(config)], env=embedded_env,
                           capture_output=True, check=False)  # fmt: skip
        with stack(dask_workers=2) as running:
            dask = running.env.pop("MLOPS_STACK_DASK")
            stack_env = {**base, **running.env, "MLOPS_HOME": str(work / "ws-stack")}
            config = write_project(work / "project-stack", {**project, "home": str(work / "ws-stack")}, MODEL, model)
            sides["stack"] = _training(config, stack_env, args.repeats, running.procs["mlflow"].log)
            print(f"stack: {sides['stack']}", flush=True)
            sides["stack"]["cost"] = _call_cost(stack_env)
            one = _scoring(config, stack_env, scoring_input, work / "scored-1.parquet", None, args.repeats)
            two = _scoring(config, stack_env, scoring_input, work / "scored-dask.parquet", dask, args.repeats)
        with stack(prefect=False, auth=True) as authed:  # MLflow's basic auth: what it adds to each call
            sides["stack + basic auth"] = {"cost": _call_cost({**base, **authed.env}), "cold": None, "median": None}
        _report(sides, one, two, args)


def _report(sides: dict[str, dict[str, Any]], one: float, two: float, args: argparse.Namespace) -> None:
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    e, s = sides["embedded"], sides["stack"]
    ratio = s["median"] / e["median"]
    print(f"\ntraining (mlops run, 20,000 rows, 5 trials; median of {args.repeats} after one cold run)")
    print(f"{'side':<20}{'cold':>8}{'run':>8}{'tracking requests/run':>23}{'search models':>15}{'search_runs':>13}")
    for label, side in sides.items():
        calls = "-" if side.get("calls") is None else f"{side['calls']:.0f}"
        cold = "-" if side["cold"] is None else f"{side['cold']:.1f}s"
        run = "-" if side["median"] is None else f"{side['median']:.1f}s"
        print(f"{label:<20}{cold:>8}{run:>8}{calls:>23}"
              f"{side['cost']['models']:>13.1f}ms{side['cost']['search_runs']:>11.1f}ms")  # fmt: skip
    print(f"stack / embedded: {ratio:.2f}  (goal <= {TRAINING_GOAL}: {'met' if ratio <= TRAINING_GOAL else 'NOT met'})")
    ratio = two / one
    print(f"\nbatch scoring ({args.score_rows:,} rows, mlops score; median of {args.repeats})")
    print(f"one process {one:,.0f} rows/s   two external Dask workers {two:,.0f} rows/s   ratio {ratio:.2f}")
    if cores >= SCORING_MIN_CORES:
        verdict = "met" if ratio >= SCORING_GOAL else "NOT met"
    else:
        verdict = f"not measurable here: {cores} cores (goal applies with {SCORING_MIN_CORES}+ free)"
    print(f"goal >= {SCORING_GOAL}: {verdict}; cores {cores}, load average {load:.1f} at the end")


if __name__ == "__main__":
    main()
