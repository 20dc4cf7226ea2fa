"""The continuous-training flow: extract -> validate -> curate -> prepare -> review labels -> select model
-> train -> evaluate -> gated promotion.

The chain is `components.pipeline.run_training`; this module wraps each of its steps in a Prefect
task (names, retries, logging to the run) and runs the search's trials on Dask when asked.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from components.core.cluster import ClusterError, check_cluster
from components.core.config import PipelineConfig, SearchConfig
from components.core.logs import PREFECT_RUN_LOGGERS, exception_of, quiet
from components.data.contract import DataRejected
from components.data.extract import ExtractionError
from components.modeling import search, selection
from components.modeling.tasks import Task
from components.pipeline import Steps, TrainingResult, data, model, release, run_training

__all__ = ["TrainingResult", "quiet_rejections", "training_flow"]


def _rejection_line(record: logging.LogRecord) -> str | None:
    exc = exception_of(record)
    if isinstance(exc, ClusterError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, DataRejected) or "DataRejected" in record.getMessage():
        where = f"; report: {exc.report_path}" if isinstance(exc, DataRejected) and exc.report_path else ""
        return f"data rejected by the contract (failed expectations above){where}"
    return None


def quiet_rejections() -> None:
    """A rejection is an expected outcome, not a crash: Prefect's task and flow loggers report it
    in one line instead of a traceback that repeats every failed expectation (and a Dask scheduler
    that cannot take the trials in one line too)."""
    quiet("rejections", PREFECT_RUN_LOGGERS, _rejection_line)


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only failures that may pass on a second try (I/O, a database that did not answer)."""
    try:
        state.result()
    except ExtractionError as exc:
        return exc.transient
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - anything else fails the same way again
        return False
    return False


def _as_task(step: Callable[..., Any], name: str, fixed: dict[str, Any] | None = None, **options: Any) -> Any:
    """A pipeline step as a Prefect task of the same signature that logs to the task run.

    Frames stay in memory between tasks of one flow run: NO_CACHE avoids hashing them."""

    signature = inspect.signature(step)

    @functools.wraps(step)
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind_partial(*args, **kwargs)
        bound.arguments.update({**(fixed or {}), "log": get_run_logger()})
        return step(*bound.args, **bound.kwargs)

    return task(name=name, cache_policy=NO_CACHE, **options)(call)


@task(name="trial", cache_policy=NO_CACHE)
def trial_task(
    factory: Callable[[dict[str, Any]], Any],
    params: dict[str, Any],
    X: pd.DataFrame,
    y: pd.Series,
    metric: str,
    folds: int,
    seed: int,
    number: int,
    task: Task,
    by_time: bool,
    repeats: int,
) -> search.TrialResult:
    return search.cross_validate_params(
        factory, params, X, y, metric=metric, folds=folds, seed=seed, number=number, task=task, by_time=by_time,
        repeats=repeats,
    )  # fmt: skip


def _dask_runner(config: SearchConfig) -> Any:
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    # One thread per worker and per BLAS/OpenMP pool: the workers are the parallelism.
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": config.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "env": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        }
    )


def _spread_on_dask(
    plan: selection.SelectionPlan, choose: Callable[..., selection.Selection], X: pd.DataFrame, y: pd.Series,
    metric: str, seed: int, task: Task,
) -> selection.Selection:  # fmt: skip
    """The search with its trials as tasks of a nested flow on a Dask task runner; a configured
    scheduler is checked first (reachable, with workers, on this project's and scikit-learn's versions)."""
    if plan.search.dask_address:
        info = check_cluster(plan.search.dask_address)
        get_run_logger().info("trials on %s: %d worker(s), %d thread(s)", info.address, len(info.workers), info.threads)
    (X_rows, y_rows), repeats = selection.trial_inputs(plan, X, y, seed, task)

    @flow(name="search_trials", task_runner=_dask_runner(plan.search))
    def search_trials_flow() -> selection.Selection:
        def on_dask(batch: list[tuple[int, dict[str, Any]]]) -> list[search.TrialResult]:
            futures = [
                trial_task.submit(
                    plan.factory, params, X_rows, y_rows, metric, plan.folds, seed, number, task, plan.by_time, repeats
                )
                for number, params in batch
            ]
            return [future.result() for future in futures]

        return choose(on_dask)

    return search_trials_flow()


@task(name="select_model", cache_policy=NO_CACHE)
def select_model_task(prepared: Any, **settings: Any) -> Any:
    """`components.pipeline.model.select`, its trials spread over Dask when workers or a scheduler are set."""

    def spread(plan: selection.SelectionPlan, choose: Callable[..., selection.Selection]) -> selection.Selection:
        split = prepared.split
        return _spread_on_dask(
            plan, choose, split.X_train, split.y_train, settings["metric"], settings["seed"], prepared.task
        )

    return model.select(prepared, **settings, spread=spread, log=get_run_logger())


# No retries for promote: logging and registering are not idempotent, a retry would add a second version.
TASKS = Steps(
    extract=_as_task(
        data.extract, "extract", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_transient
    ),
    infer_task=_as_task(data.infer_target_task, "infer_task"),
    validate=_as_task(data.validate, "validate"),
    curate=_as_task(data.curate, "curate"),
    prepare=_as_task(model.prepare, "prepare"),
    review=_as_task(model.review, "review_labels"),
    select=select_model_task,
    train=_as_task(model.train, "train"),
    evaluate=_as_task(model.evaluate, "evaluate"),
    refit=_as_task(model.refit, "refit"),
    promote=_as_task(release.promote, "promote"),
)


@flow(name="training_flow")
def training_flow(config: PipelineConfig, dry_run: bool = False) -> TrainingResult:
    """Train a candidate on the configured data and promote it if the gate lets it through.

    A dry run evaluates and decides, logging everything to MLflow, but registers nothing.
    """
    quiet_rejections()
    return run_training(
        config, dry_run=dry_run, steps=TASKS, tags={"prefect.flow_run_id": str(flow_run.id)}, log=get_run_logger()
    )
