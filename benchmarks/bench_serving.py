"""Serving benchmark: the compiled inference path, our BentoML service and `mlflow models serve`, for every
model family x task the project trains, side by side in one run.

For each case (binary, multiclass and regression x linear, random forest, histogram boosting) a fresh
workspace trains and registers a champion with `mlops run` (a short search), then, on that champion:

- in-process: `load_serving_model(...).predict([row])` (the service's per-request call: rows to arrays,
  the compiled model, the answer) against the scikit-learn pipeline's own `predict_proba` / `predict`
  on the same row's one-row DataFrame, one BLAS/OpenMP thread, `--predict-calls` rows;
- ours: `mlops serve` (POST /predict, one row per request) at concurrency 1 and `--concurrency`, and its
  `GET /healthz` at concurrency 1 (the HTTP floor of the same server);
- mlflow: `mlflow models serve --env-manager local` (POST /invocations) on the same model URI, same
  workers and thread settings, at `--concurrency`;
- batch: `batch.score_file` (the scoring flow's per-partition code, chunked, through the same path as
  the service) against whole-frame `predict_frame` (the pipeline) on the same `--batch-rows` rows read
  whole into memory; peak memory of the `mlops score` command at 5M rows is `make bench-scoring`'s.

Load comes from `benchmarks/loadgen.py` in a separate process over loopback (closed loop, keep-alive, a
pool of real rows); the tables show the CPU the load generator itself used, so a figure bounded by the
client on a small machine is visible as such. Each server runs alone while it is measured.

Goals per case: in-process >= 15x the pipeline's call; service p50 at concurrency 1 <= 2x its /healthz
p50; at concurrency 32 over 30 s zero non-2xx, p99 <= 3x p50 and req/s >= 10x mlflow's; batch rows/s
>= 1.5x whole-frame. The exit status is 0 whenever everything was measured, goals met or not; 1 when
a server could not be started or the setup failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from serving_cases import request_rows, setup_case, signature_columns, write_bodies  # noqa: E402
from serving_inproc import in_process  # noqa: E402
from serving_report import goals, print_report, print_summary  # noqa: E402
from serving_servers import (  # noqa: E402
    BenchError,
    Server,
    batching,
    become_subreaper,
    free_port,
    load,
    probe,
    say,
)

BIN = Path(sys.executable).parent
ESTIMATORS = ("linear", "random_forest", "hist_gradient_boosting")
TASKS = ("binary", "multiclass", "regression")
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


# --------------------------------------------------------------------------------------------- in-process


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="Reuse this workspace's champion (one case).")
    parser.add_argument("--task", choices=TASKS, action="append", help="Only these tasks (repeatable; default all).")
    parser.add_argument(
        "--estimator", choices=ESTIMATORS, action="append", help="Only these families (repeatable; default all)."
    )
    parser.add_argument("--duration", type=float, default=30.0, help="Measured seconds at the high concurrency.")
    parser.add_argument("--c1-duration", type=float, default=10.0, help="Measured seconds at concurrency 1.")
    parser.add_argument("--mlflow-duration", type=float, default=10.0, help="Measured seconds for mlflow.")
    parser.add_argument("--healthz-duration", type=float, default=5.0, help="Measured seconds of GET /healthz.")
    parser.add_argument("--warmup", type=float, default=3.0, help="Seconds of load before each measurement.")
    parser.add_argument("--concurrency", type=int, default=32, help="The high concurrency.")
    parser.add_argument("--rows", type=int, default=500, help="Pool of distinct request rows.")
    parser.add_argument("--predict-calls", type=int, default=1000, help="In-process single-row calls timed.")
    parser.add_argument("--batch-rows", type=int, default=1_000_000, help="Batch figure's rows (0: skip it).")
    parser.add_argument("--profile", action="store_true", help="Print a cProfile of the in-process predict path.")
    parser.add_argument("--skip-mlflow", action="store_true", help="Measure our service only (no throughput goal).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary workspaces (and server logs).")
    parser.add_argument("--json", type=Path, default=None, help="Also write every figure to this JSON file.")
    args = parser.parse_args(argv)
    if args.config and (args.estimator or args.task):
        parser.error("--task/--estimator train fresh workspaces; --config reuses one: pass one of them")
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


def _config_path(args: argparse.Namespace, work: Path, env: dict[str, str], task: str, estimator: str) -> Path:
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
    return setup_case(work, task, estimator, setup_env)


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
    def case(self) -> str:
        return self.name

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
    rows = request_rows(config, workspace.root, args.rows, config.seed)
    signature = signature_columns(champion.uri)
    mlflow_rows = [{k: r[k] for k in signature if k in r} for r in rows] if signature else rows
    ours_bodies = write_bodies(work / "ours_bodies.jsonl", [{"rows": [r]} for r in rows])
    mlflow_bodies = write_bodies(work / "mlflow_bodies.jsonl", [{"dataframe_records": [r]} for r in mlflow_rows])
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
    ours_port = free_port()
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
        code, body = probe(ours, "/predict", {"rows": bench.check_rows}, headers)
        if code != 200:
            report["notes"].append(f"ours answered the probe with {code}: {body}")
        else:
            bench.answers["ours"] = body.get("predictions")
            if str(body.get("model_version")) != str(champion.version):
                report["notes"].append(f"ours serves v{body.get('model_version')}, champion is v{champion.version}")
        report["runs"]["ours GET /healthz c=1"] = load(
            ours, "/healthz", None, 1, args.healthz_duration, args.warmup, bench.env
        )
        for concurrency, duration in bench.levels:
            before = batching(ours, headers)
            run = load(ours, "/predict", bench.ours_bodies, concurrency, duration, args.warmup, bench.env)
            after = batching(ours, headers)
            if before is not None and after is not None:
                run["batching"] = {k: after[k] - before.get(k, 0) for k in after if k != "largest_batch_rows"}
                run["batching"]["largest_batch_rows"] = after.get("largest_batch_rows")
            report["runs"][f"ours c={concurrency}"] = run
    except BenchError as exc:
        report["runs"].setdefault(f"ours c={args.concurrency}", {"error": str(exc).splitlines()[0]})
        say(str(exc))
        return 1
    finally:
        ours.stop()
    return 0


def _bench_mlflow(bench: _Bench, stack: ExitStack) -> int:
    """`mlflow models serve` on the same model, workers and thread settings; 1 when it failed."""
    args, report = bench.args, bench.report
    mlflow_port = free_port()
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
        code, body = probe(mlflow, "/invocations", check, {})
        if code != 200:
            report["notes"].append(f"mlflow answered the probe with {code}: {body}")
        else:
            bench.answers["mlflow"] = body.get("predictions") if isinstance(body, dict) else None
        report["runs"][f"mlflow c={args.concurrency}"] = load(
            mlflow, "/invocations", bench.mlflow_bodies, args.concurrency, args.mlflow_duration, args.warmup, bench.env
        )
    except BenchError as exc:
        report["runs"].setdefault(f"mlflow c={args.concurrency}", {"error": str(exc).splitlines()[0]})
        say(str(exc))
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


def _batch(bench: _Bench) -> dict[str, Any]:
    """Batch scoring's path against whole-frame `predict_frame` on the same rows, in this process."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.inference import batch
    from components.inference.scoring import load_serving_model, predict_frame

    n = bench.args.batch_rows
    tile = pd.DataFrame.from_records(bench.rows)
    frame = pd.concat([tile] * (n // len(tile) + 1), ignore_index=True).head(n)
    source, out = bench.work / "batch.parquet", bench.work / "batch_scores.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source)
    del frame
    served = load_serving_model(bench.champion.uri)
    say(f"batch: {n:,} rows, score_file then whole-frame predict_frame")
    started = time.perf_counter()
    batch.score_file(served, source, out, model_version=str(bench.champion.version), id_column=None)
    ours = time.perf_counter() - started
    whole = pd.read_parquet(source)
    started = time.perf_counter()
    predict_frame(served.model, whole, served.schema, served.half_width)
    baseline = time.perf_counter() - started
    scored = pq.read_table(out, columns=["prediction"]).num_rows
    source.unlink()
    out.unlink()
    return {
        "rows": n,
        "scored": scored,
        "ours_s": ours,
        "whole_frame_s": baseline,
        "ours_rows_per_s": n / ours,
        "whole_frame_rows_per_s": n / baseline,
        "ratio": baseline / ours,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
    }


def _measure(bench: _Bench, stack: ExitStack, loadavg_before: str) -> int:
    """In-process, then each server alone, then batch; the goals judged and the case's report printed.
    1 when a server failed."""
    args, report, champion = bench.args, bench.report, bench.champion
    say(f"in-process: {args.predict_calls} single-row predictions of {champion.uri} (v{champion.version})")
    report["in_process"] = in_process(champion.uri, bench.rows, args.predict_calls, args.profile)
    if args.profile:
        print(report["in_process"]["profile"], file=sys.stderr)
    status = _bench_ours(bench, stack)
    if not args.skip_mlflow:
        status = _bench_mlflow(bench, stack) or status
    if "ours" in bench.answers and "mlflow" in bench.answers:
        same = _same_answers(bench.answers["ours"], bench.answers["mlflow"])
        report["notes"].append(
            f"same predictions from both servers on {len(bench.check_rows)} probe rows: {'yes' if same else 'NO'}"
        )
    if args.batch_rows > 0:
        report["batch"] = _batch(bench)
    report["meta"] = _meta(bench, loadavg_before)
    ok_runs = {k: v for k, v in report["runs"].items() if "error" not in v}
    report["goals"] = goals(report.get("in_process"), ok_runs, args.concurrency, report.get("batch"))
    print_report(report)
    if args.keep:
        print(f"\nworkspace kept: {bench.work} (rerun with --config {bench.config_path})")
    return status


def _same_answers(ours: Any, mlflow: Any) -> bool:
    """Same labels (a regression's numbers within 1e-9 relative: JSON round trips)."""
    if not isinstance(ours, list) or not isinstance(mlflow, list) or len(ours) != len(mlflow):
        return False
    if all(isinstance(v, float) for v in ours):
        return all(abs(a - float(b)) <= 1e-9 * max(1.0, abs(a)) for a, b in zip(ours, mlflow, strict=True))
    return ours == mlflow


def _cases(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.config is not None:
        return [("", "")]
    return [(t, e) for t in (args.task or TASKS) for e in (args.estimator or ESTIMATORS)]


def _run_case(args: argparse.Namespace, env: dict[str, str], task: str, estimator: str) -> tuple[dict[str, Any], int]:
    report: dict[str, Any] = {"runs": {}, "notes": [], "case": f"{task} {estimator}".strip()}
    loadavg_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    with ExitStack() as stack:
        if args.keep:
            work = Path(tempfile.mkdtemp(prefix="mlops-bench-serving-"))
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlops-bench-serving-")))
        say(f"=== {report['case'] or 'workspace ' + str(args.config)}")
        try:
            config_path = _config_path(args, work, env, task, estimator)
            bench = _prepare(args, env, work, config_path, report)
            status = _measure(bench, stack, loadavg_before)
        except BenchError as exc:
            say(str(exc))
            report["error"] = str(exc).splitlines()[0]
            return report, 1
    return report, status


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    env = _environment(args)
    # SIGTERM (e.g. from make) must still stop the servers: turn it into an exception.
    signal.signal(signal.SIGTERM, _interrupt)
    become_subreaper()
    reports: list[dict[str, Any]] = []
    status = 0
    try:
        for task, estimator in _cases(args):
            report, failed = _run_case(args, env, task, estimator)
            reports.append(report)
            status = status or failed
    except KeyboardInterrupt:
        say("interrupted; stopping the servers")
        return 130
    finally:
        if args.json:
            for report in reports:
                report.get("in_process", {}).pop("profile", None)
            args.json.write_text(json.dumps(reports, indent=2, default=str) + "\n")
    print_summary(reports)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
