"""The batch-scoring flow: the champion scores a CSV or Parquet file into Parquet, here or on Dask.

fetch the champion (downloaded once under the workspace) -> plan (file-level checks, nothing written)
-> score partitions (a thread here, or Dask worker processes) -> assemble (temporary name, then rename).

Tasks pass paths and small plans, never frames: each partition reads its own rows from the input and
writes its own part files, so the same task runs in this process or in a Dask worker elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait

from components.core.cluster import ClusterError, ClusterInfo, check_cluster
from components.core.config import PipelineConfig, dataset_name
from components.core.files import write_text_atomic
from components.core.logs import PREFECT_RUN_LOGGERS, exception_of, quiet
from components.core.workspace import Workspace
from components.data import contract
from components.inference import batch
from components.inference.scoring import InputError
from components.tracking import registry
from flows.alerting import alert_failed_run

# One partition per worker thread: with two per worker (finer balancing) 5M rows on 2 workers took
# 15% longer; each task has fixed costs (Prefect task run, first chunk, part files, decoding the rows
# of a row group before the partition starts).
PARTITIONS_PER_WORKER = 1
PROGRESS_SECONDS = 0.5
STOP_FILE = "STOP"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class ModelRef:
    """A registered version downloaded to a local folder that every worker loads from."""

    name: str
    version: str
    path: Path


@dataclass(frozen=True)
class ScoringResult:
    """What a scoring run did; `as_json` is the CLI's machine-readable last line."""

    model_name: str
    model_version: str
    input: str
    output: str
    rejects: str | None
    rows: int
    scored: int
    rejected: int
    seconds: float  # the whole flow
    scoring_seconds: float  # after the plan: waiting for Dask workers, partitions, assembly, closing the cluster
    workers: int
    partitions: int

    @property
    def rows_per_second(self) -> float:
        return batch.rows_per_second(self.rows, self.seconds)

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "rows_per_second": round(self.rows_per_second, 1)}, sort_keys=True)


def _input_error_line(record: logging.LogRecord) -> str | None:
    exc = exception_of(record)
    expected = (InputError, batch.ScoringStopped, ClusterError)
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, expected) else None


def quiet_input_errors() -> None:
    """Bad input (or a Dask cluster that cannot take the job) is an expected outcome: Prefect's run
    loggers say so in one line, without a traceback."""
    quiet("input errors", PREFECT_RUN_LOGGERS, _input_error_line)


@task(name="fetch_model", cache_policy=NO_CACHE)
def fetch_model_task(config: PipelineConfig, model_name: str) -> ModelRef:
    """The champion's version, downloaded once to <workspace>/cache/models/<name>/<version>/."""
    workspace = Workspace.at(config.home)
    client = registry.connect(workspace)
    champion = registry.get_champion(client, model_name)
    if champion is None:
        raise registry.RegistryError(f"registered model {model_name!r} has no champion yet; run `mlops run` first")
    folder = workspace.model_cache(model_name, champion.version)
    path = registry.download_model(model_name, champion.version, folder, run_id=champion.run_id)
    get_run_logger().info("scoring with %s v%s (champion), local copy %s", model_name, champion.version, path)
    return ModelRef(model_name, champion.version, path)


@task(name="plan_scoring", cache_policy=NO_CACHE)
def plan_task(
    config: PipelineConfig, ref: ModelRef, input_path: Path, id_column: str | None, scored_at: datetime
) -> batch.ScoringPlan:
    """The file-level checks against the model and the training suite; nothing is written yet."""
    logger = get_run_logger()
    suite = contract.load_suite(contract.suite_path(config.validation.suite_dir, ref.name))
    meta = suite.get("meta") or {}
    same_dataset = config.data.name == ref.name or (config.data.source is not None and dataset_name(config) == ref.name)
    if id_column is None:
        id_column = config.data.id_column if same_dataset else meta.get("id_column")
    target = meta.get("target") or (config.data.target if same_dataset else None)
    served = batch.load_model_dir(ref.path)
    logger.info(
        "answers through the %s%s",
        served.inference.name if served.inference else "pipeline",
        f" ({served.inference.reason})" if served.inference and served.inference.reason else "",
    )
    interval = served.info.get("interval") or {}
    plan = batch.plan_scoring(
        input_path,
        served.model,
        schema=served.schema,
        model_version=ref.version,
        suite=suite,
        id_column=id_column,
        target=target,
        on_invalid=config.scoring.on_invalid,
        chunk_rows=config.scoring.chunk_rows,
        scored_at=scored_at,
        half_width=interval.get("half_width"),
    )
    rules = plan.contract.rules
    logger.info(
        "%s: %s; suite %r: %d row rule(s) on %d column(s), %d expectation(s) not checked per row; on invalid rows: %s",
        input_path,
        f"{plan.rows:,} rows" if plan.rows is not None else f"{plan.progress_total:,} bytes of CSV",
        plan.contract.suite,
        len(rules),
        len(plan.contract.columns),
        len(plan.contract.skipped),
        plan.on_invalid,
    )
    for note in plan.contract.skipped:
        logger.debug("not checked per row: %s", note)
    return plan


def _write_progress(path: Path, rows: int, consumed: int) -> None:
    write_text_atomic(path, f"{rows} {consumed}", durable=False)  # progress: a crash may lose the last one


def _read_progress(scratch: Path) -> tuple[int, int]:
    rows = consumed = 0
    for path in scratch.glob("*.progress"):
        try:
            done, read = path.read_text().split()
        except (OSError, ValueError):
            continue  # being replaced right now: counted on the next poll
        rows, consumed = rows + int(done), consumed + int(read)
    return rows, consumed


@task(name="score_partition", cache_policy=NO_CACHE)
def score_partition_task(
    plan: batch.ScoringPlan, part: batch.Partition, model_dir: Path, scratch: Path, single_threaded: bool
) -> batch.PartitionResult:
    """Score one partition into part files under `scratch`; the model is loaded once per process."""
    started = time.perf_counter()
    model = batch.load_model_dir(model_dir)
    loaded = time.perf_counter()
    output, rejects = batch.part_paths(scratch, part)
    progress = scratch / f"{part.index:05d}.progress"
    stop = scratch / STOP_FILE

    def score() -> batch.PartitionResult:
        return batch.score_partition(
            model,
            plan,
            part,
            output,
            rejects if plan.on_invalid == "reject" else None,
            on_progress=lambda rows, consumed: _write_progress(progress, rows, consumed),
            should_stop=stop.exists,
            use_threads=not single_threaded,
        )

    if single_threaded:
        from threadpoolctl import threadpool_limits

        # N workers on N cores: one BLAS/OpenMP thread each, or they fight over the cores.
        with threadpool_limits(limits=1):
            result = score()
    else:
        result = score()
    get_run_logger().info(
        "partition %d: %d rows in %.1f s (model ready after %.1f s, pid %d)",
        part.index,
        result.rows,
        time.perf_counter() - started,
        loaded - started,
        os.getpid(),
    )
    return result


class _Progress:
    """A rich progress bar on stderr (rows, rate, time left), or nothing."""

    def __init__(self, plan: batch.ScoringPlan, show: bool):
        self._plan = plan
        self._started = time.perf_counter()
        self._bar: Any = None
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("scoring"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rows]:>13,} rows  {task.fields[rate]:>9,.0f} rows/s  left"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("scoring", total=plan.progress_total, rows=0, rate=0.0)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, rows: int, consumed: int, finished: bool = False) -> None:
        if self._bar is None:
            return
        done = rows if self._plan.progress_unit == "rows" else consumed
        rate = rows / max(time.perf_counter() - self._started, 1e-9)
        total = self._plan.progress_total
        self._bar.update(self._task, completed=total if finished else min(done, total), rows=rows, rate=rate)


def _run_partitions(
    plan: batch.ScoringPlan,
    partitions: Sequence[batch.Partition],
    model_dir: Path,
    scratch: Path,
    progress: _Progress,
    single_threaded: bool,
) -> list[batch.PartitionResult]:
    """Submit every partition to the flow's task runner and follow their progress files until done.

    The first failure stops the other partitions (a STOP file they look for between chunks) and is
    raised once all have ended.
    """
    futures: list[PrefectFuture[batch.PartitionResult]] = [
        score_partition_task.submit(plan, part, model_dir, scratch, single_threaded) for part in partitions
    ]
    pending = set(futures)
    while pending:
        done, pending = wait(list(pending), timeout=PROGRESS_SECONDS)
        for future in done:
            future.wait()
            if not future.state.is_completed():
                (scratch / STOP_FILE).touch()
        progress.update(*_read_progress(scratch))
    results: list[batch.PartitionResult] = []
    failure: BaseException | None = None
    stopped: BaseException | None = None
    for future in futures:
        try:
            results.append(future.result())
        except batch.ScoringStopped as exc:
            stopped = stopped or exc
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after every partition has ended
            failure = failure or exc
    if failure is not None or stopped is not None:
        raise failure or stopped  # type: ignore[misc]
    progress.update(sum(r.rows for r in results), plan.progress_total, finished=True)
    return results


class _LocalCluster:
    """A local Dask cluster started in the background when the flow starts, so that starting worker
    processes and their imports (preloaded: `dask_setup` below) overlap the driver's model download
    and plan instead of following them."""

    def __init__(self, workers: int):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dask-cluster")
        self._cluster = self._pool.submit(self._start, workers)
        self._closing: Future[None] | None = None

    @staticmethod
    def _start(workers: int) -> Any:
        import dask
        from distributed import LocalCluster

        # Workers inherit these from here. By default they sample their threads' stacks every 10 ms,
        # which doubled the time of imports and of scoring (pandas, scikit-learn); and they start
        # with MALLOC_TRIM_THRESHOLD_ set, which turns off glibc's adaptive mmap threshold so every
        # chunk-sized array is a fresh mmap (a quarter slower here). Chunks bound the memory anyway.
        settings = {
            "distributed.worker.profile.enabled": False,
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        }
        with dask.config.set(settings):
            return LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                env=ONE_THREAD,
                preload=["flows.scoring"],
            )

    @property
    def address(self) -> str:
        return str(self._cluster.result().scheduler_address)

    def release(self) -> None:
        """Start closing the cluster: its workers' teardown (seconds) overlaps the assembly."""
        if self._closing is None:
            self._closing = self._pool.submit(lambda: self._cluster.result().close())

    def close(self) -> None:
        self.release()
        assert self._closing is not None
        try:
            self._closing.result()
        finally:
            self._pool.shutdown()


@task(name="check_cluster", cache_policy=NO_CACHE)
def check_cluster_task(address: str, plan: batch.ScoringPlan, ref: ModelRef, scratch: Path) -> ClusterInfo:
    """Before any partition: a scheduler's workers must read the input and the model folder and write
    in the output folder (the scratch folder's parent), at the paths this process uses."""
    info = check_cluster(address, read=(plan.input_path, ref.path), write=(scratch.parent,))
    get_run_logger().info(
        "Dask scheduler %s: %d worker(s), %d thread(s), each sees the input, the model and the output folder",
        address,
        len(info.workers),
        info.threads,
    )
    return info


def _score_on_dask(
    address: str, plan: batch.ScoringPlan, ref: ModelRef, scratch: Path, progress: _Progress
) -> tuple[list[batch.PartitionResult], int]:
    """Partitions on a Dask scheduler's workers through prefect-dask; returns the results and the slots used."""
    from prefect_dask import DaskTaskRunner

    runner: Any = DaskTaskRunner(address=address)

    @flow(name="score_partitions", task_runner=runner)
    def score_partitions_flow() -> tuple[list[batch.PartitionResult], int]:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        client = getattr(context.task_runner, "client", None) if context else None
        slots = max(sum(client.nthreads().values()) if client is not None else 1, 1)
        partitions = batch.split_partitions(plan, PARTITIONS_PER_WORKER * slots)
        get_run_logger().info("%d partition(s) on %d Dask worker thread(s) at %s", len(partitions), slots, address)
        return _run_partitions(plan, partitions, ref.path, scratch, progress, single_threaded=True), slots

    return score_partitions_flow()


@task(name="assemble", cache_policy=NO_CACHE)
def assemble_task(
    plan: batch.ScoringPlan, results: list[batch.PartitionResult], output: Path, rejects: Path | None
) -> batch.ScoreSummary:
    return batch.assemble(plan, results, output, rejects)


@flow(name="scoring_flow", on_failure=[alert_failed_run])
def scoring_flow(
    config: PipelineConfig,
    input_path: Path,
    output_path: Path,
    model_name: str | None = None,
    id_column: str | None = None,
    rejects_path: Path | None = None,
    show_progress: bool = False,
) -> ScoringResult:
    """Score a CSV or Parquet file with the champion into Parquet: id, prediction, probability, model
    version and scoring time per row, in input order.

    `config.scoring` decides chunk size, what happens to rows that break the contract (`fail` or
    `reject` into `rejects_path`, default <output stem>.rejects.parquet) and where partitions run
    (this process, `workers` local Dask processes or the `dask_address` scheduler's workers).
    """
    quiet_input_errors()
    started = time.perf_counter()
    logger = get_run_logger()
    scoring = config.scoring
    name = model_name or dataset_name(config)
    rejects = (rejects_path or batch.default_rejects_path(output_path)) if scoring.on_invalid == "reject" else None
    batch.check_paths(input_path, output_path, rejects)
    cluster = _LocalCluster(scoring.workers) if scoring.workers > 1 and not scoring.dask_address else None
    scoring_started = started
    try:
        ref = fetch_model_task(config, name)
        plan = plan_task(config, ref, input_path, id_column, datetime.now(UTC))
        scoring_started = time.perf_counter()
        with batch.scratch_dir(output_path) as scratch, _Progress(plan, show_progress) as progress:
            results, workers = _score_here_or_on_dask(plan, ref, scratch, progress, cluster, scoring.dask_address)
            summary = assemble_task(plan, results, output_path, rejects)
    finally:
        if cluster is not None:
            cluster.close()
    seconds = time.perf_counter() - started
    scoring_seconds = time.perf_counter() - scoring_started
    result = ScoringResult(
        model_name=name,
        model_version=ref.version,
        input=str(input_path),
        output=str(summary.output),
        rejects=str(summary.rejects) if summary.rejects else None,
        rows=summary.rows,
        scored=summary.scored,
        rejected=summary.rejected,
        seconds=round(seconds, 3),
        scoring_seconds=round(scoring_seconds, 3),
        workers=workers,
        partitions=len(results),
    )
    _log_scored(logger, result, seconds)
    return result


def _score_here_or_on_dask(
    plan: batch.ScoringPlan,
    ref: ModelRef,
    scratch: Path,
    progress: _Progress,
    cluster: _LocalCluster | None,
    dask_address: str | None,
) -> tuple[list[batch.PartitionResult], int]:
    """The partitions' results and the worker slots used: on the local cluster or the configured
    scheduler (the local cluster is released once its work is done), else one partition here."""
    address = cluster.address if cluster is not None else dask_address
    if cluster is None and address:  # only a given scheduler: our own cluster shares this machine's files
        check_cluster_task(address, plan, ref, scratch)
    if address:
        results, workers = _score_on_dask(address, plan, ref, scratch, progress)
        if cluster is not None:
            cluster.release()
        return results, workers
    partitions = batch.split_partitions(plan, 1)
    return _run_partitions(plan, partitions, ref.path, scratch, progress, False), 1


def _log_scored(logger: Any, result: ScoringResult, seconds: float) -> None:
    logger.info(
        "scored %d of %d rows (%d rejected) with %s v%s in %.1f s (%.0f rows/s, %d worker(s)) -> %s",
        result.scored,
        result.rows,
        result.rejected,
        result.model_name,
        result.model_version,
        seconds,
        result.rows_per_second,
        result.workers,
        result.output,
    )


def dask_setup(worker: Any) -> None:
    """Dask preload hook (`preload=["flows.scoring"]`): import what scoring needs while the driver
    fetches the model and plans, so the first partition does not pay seconds of imports."""
    import mlflow.sklearn  # noqa: F401
    import skops.io  # noqa: F401
