"""`mlops run` against the plain in-process pipeline, side by side, same data, same machine.

Each side runs as its own process (start-up and imports included). The first `mlops run` of a
fresh workspace pays one-off costs (MLflow migrations, starting the local Prefect server); it is
reported separately. The ratio uses the median of the runs that follow.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from project import loan_model, timed_command, write_project  # noqa: E402 - the sibling module

BIN = Path(sys.executable).parent
GOALS = {"default": 1.5, "1M": 1.15}


MODEL = "bench_loans"


def _config(folder: Path, home: Path, source: Path, suites: Path) -> Path:
    """A project in `folder` with one model, `bench_loans`, on `source`."""
    # A search budget that keeps the 1M-row side in minutes; the overhead is what is measured.
    project = {"home": str(home), "validation": {"suite_dir": str(suites)}, "search": {"trials": 5, "max_rows": 50000}}
    model = loan_model(
        source, evaluation={"slices": ["home_ownership", "region"]}, promotion={"metric": "roc_auc", "min_score": 0.7}
    )
    return write_project(folder, project, MODEL, model)


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    return timed_command(cmd, env, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["default", "1M"], choices=["default", "1M"])
    args = parser.parse_args()

    from components.core.environment import TELEMETRY_OFF
    from components.simulation.simulate import write_batches

    env = {**os.environ, **TELEMETRY_OFF}
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        work = Path(tmp)
        home = work / "ws"
        env["MLOPS_HOME"] = str(home)
        shapes = {"default": (4, 5_000), "1M": (10, 100_000)}
        try:
            for size in args.sizes:
                batches, per_batch = shapes[size]
                data = work / f"data_{size}"
                write_batches(data, batches, per_batch, seed=42)
                config = _config(work / size, home, data, work / f"suites_{size}")
                plain_cmd = [
                    str(BIN / "python"),
                    str(ROOT / "benchmarks" / "plain_pipeline.py"),
                    "--config",
                    str(config),
                    "--name",
                    MODEL,
                ]
                mlops_cmd = [str(BIN / "mlops"), "run", "--config", str(config), "--name", MODEL]
                cold = _timed(mlops_cmd, env)  # first run: migrations, suite profiling, server start
                plain, timed = [], []
                for _ in range(args.repeats):
                    plain.append(_timed(plain_cmd, env))
                    timed.append(_timed(mlops_cmd, env))
                p, m = statistics.median(plain), statistics.median(timed)
                rows.append((size, batches * per_batch, cold, p, m, GOALS[size]))
                print(f"{size}: plain {p:.1f}s  mlops run {m:.1f}s ({m / p:.2f}x)", flush=True)
        finally:
            subprocess.run([str(BIN / "mlops"), "server", "stop"], env=env, cwd=ROOT, capture_output=True, check=False)

    print()
    header = f"{'size':<8}{'rows':>10}{'cold mlops':>12}{'plain':>9}{'mlops':>9}{'ratio':>7}{'goal':>6}  met"
    print(header)
    for size, n, cold, p, m, goal in rows:
        met = "yes" if m / p <= goal else "NO "
        print(f"{size:<8}{n:>10,}{cold:>11.1f}s{p:>8.1f}s{m:>8.1f}s{m / p:>7.2f}{goal:>6.2f}  {met}")
    print(f"(median of {args.repeats} runs per column; wall time of whole processes)")


if __name__ == "__main__":
    main()
