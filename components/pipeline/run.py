"""The training pipeline as one plain function: `run_training(config)`.

It chains the steps (extract -> infer the task -> validate -> curate -> prepare -> review labels
-> select -> train -> evaluate -> refit -> promote) and records them in one MLflow run. The
Prefect flow (`flows.training.training_flow`) runs this same chain with each step wrapped in a
task (`Steps`); a plain script runs it as it is:

    python -c "from components.core.project import load_project; from components.pipeline import run_training; \\
    print(run_training(load_project().model_config('loan_default')).as_json())"

Given a `MemoryRun` (`record=`), nothing is tracked or registered: the chain stops after
evaluation and everything the steps recorded stays in that object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from components.core.alerts import Alerter
from components.core.config import PipelineConfig, dataset_name, resolve_source
from components.core.faults import fault_point
from components.core.secrets import redact
from components.core.workspace import Workspace
from components.data import contract
from components.data.contract import DataRejected
from components.modeling import search
from components.modeling.tasks import Task, task_named
from components.pipeline import data, model, release, reproduce
from components.pipeline.data import LOG, Log
from components.pipeline.results import Curated, Evaluation, Prepared, Selected, TrainingResult, Validated
from components.tracking import audit, registry
from components.tracking.runlog import MemoryRun, MlflowRun, RunLog


@dataclass(frozen=True)
class Steps:
    """The steps the chain calls. The Prefect flow passes each wrapped in a task, with the same signature."""

    extract: Callable[..., Any] = data.extract
    infer_task: Callable[..., Any] = data.infer_target_task
    validate: Callable[..., Any] = data.validate
    curate: Callable[..., Any] = data.curate
    prepare: Callable[..., Any] = model.prepare
    review: Callable[..., Any] = model.review
    select: Callable[..., Any] = model.select
    train: Callable[..., Any] = model.train
    evaluate: Callable[..., Any] = model.evaluate
    refit: Callable[..., Any] = model.refit
    promote: Callable[..., Any] = release.promote


@dataclass(frozen=True)
class _Run:
    """One training run's fixed facts: the config, where it reads and records, and the metric."""

    config: PipelineConfig
    workspace: Workspace
    source: str
    dataset: str
    run: RunLog
    steps: Steps
    log: Log
    experiment_id: str | None = None


@dataclass(frozen=True)
class _Trained:
    task: Task
    metric: str
    validated: Validated
    curated: Curated
    prepared: Prepared
    selected: Selected
    final: Any
    evaluation: Evaluation


def run_training(
    config: PipelineConfig,
    *,
    dry_run: bool = False,
    record: MemoryRun | None = None,
    steps: Steps | None = None,
    tags: dict[str, str] | None = None,
    log: Log | None = None,
) -> TrainingResult:
    """Train a candidate on the configured data and promote it if the gate lets it through.

    A dry run evaluates and decides, logging everything to MLflow, but registers nothing. With
    `record`, nothing is tracked: the steps record into it and the chain stops after evaluation.
    """
    workspace = Workspace.at(config.home)
    source = resolve_source(config, workspace.root)
    dataset = dataset_name(config)
    steps, log = steps or Steps(), log or LOG
    if record is not None:
        trained = _train(_Run(config, workspace, source, dataset, record, steps, log))
        reason = "not released: a run recorded in memory registers nothing"
        return _result(None, dataset, trained, None, reason, dry_run=True)
    client = registry.connect(workspace)
    experiment_id = registry.ensure_experiment(client, dataset, workspace)
    commit = registry.git_commit()
    run_id = registry.start_run(
        client,
        experiment_id,
        tags={"dataset": dataset, "mlops.dry_run": str(dry_run).lower()}
        | ({"mlflow.source.git.commit": commit} if commit else {})
        | (tags or {}),
        params={"data.source": redact(source), **registry.flatten_config(config)},
    )
    alerter = Alerter(config.alerts, dataset, workspace.alerts)
    audit.check_trail(client, dataset, workspace, alerter)
    alerter.send("retraining_started", f"training run {run_id} started", run_id=run_id, dry_run=dry_run)
    this = _Run(config, workspace, source, dataset, MlflowRun(run_id), steps, log, experiment_id)
    try:
        trained = _train(this)
        if config.data.snapshot:
            suite = contract.suite_path(config.validation.suite_dir, dataset)
            reproduce.record_inputs(run_id, config, trained.validated.frame, suite)
        version, decision = _release(this, trained, run_id, dry_run)
    except DataRejected as exc:
        registry.end_run(client, run_id, "FAILED", {"outcome": "rejected"})
        alerter.send("rejected_batch", str(exc), run_id=run_id)
        raise
    except Exception as exc:
        registry.end_run(client, run_id, "FAILED", {"outcome": "error"})
        alerter.send("failed_run", f"training run {run_id} failed: {type(exc).__name__}: {exc}", run_id=run_id)
        raise
    except BaseException:
        registry.end_run(client, run_id, "FAILED", {"outcome": "error"})
        raise
    result = _result(run_id, dataset, trained, version, decision.reason, dry_run=dry_run, decision=decision)
    registry.end_run(client, run_id, "FINISHED", {"outcome": _outcome(result)})
    alert_outcome(alerter, result)
    return result


def _outcome(result: TrainingResult) -> str:
    if result.dry_run:
        return "dry_run"
    if result.challenger:
        return "challenger"
    return "promoted" if result.promoted else "awaiting_approval" if result.awaiting_approval else "held_back"


def alert_outcome(alerter: Alerter, result: TrainingResult) -> None:
    """The run's outcome to the model's webhooks: what the gate did, then that retraining finished."""
    version, metric = result.model_version, result.metric or ""
    score = result.metrics.get(metric)
    facts = {"run_id": result.run_id, "version": version, "metric": metric, "score": score}
    if result.promoted:
        alerter.send("promoted", f"v{version} is champion: {result.reason}", **facts)
    elif result.awaiting_approval:
        alerter.send("approval_pending", f"v{version} {result.reason}", **facts)
    elif result.challenger:
        alerter.send("challenger_started", f"v{version}: {result.reason}", **facts)
    elif not result.dry_run:
        alerter.send("candidate_held", f"v{version} held back: {result.reason}", **facts)
    alerter.send("retraining_finished", f"training run {result.run_id}: {_outcome(result)}", **facts)


def _train(this: _Run) -> _Trained:
    """Every step up to the evaluation of the candidate on the held-out rows."""
    config, steps, run = this.config, this.steps, this.run
    batches = steps.extract(this.source, config.data.query)
    fault_point("extracted")
    inference = steps.infer_task(batches, str(config.data.target), config.task, run)
    task = task_named(inference.task)
    metric = task.metric_for(config.promotion.metric)
    search_metric = config.search.metric or metric
    task.check_metric(search_metric, "search.metric")
    suite = data.suite_for(batches, config, this.dataset, task.name, this.log)
    validated = steps.validate(
        batches,
        suite,
        this.dataset,
        validation=config.validation,
        target=config.data.target,
        workspace=this.workspace,
        source=this.source,
        run=run,
    )
    fault_point("validated")
    curated = steps.curate(
        validated.frame,
        data=config.data,
        curation=config.curation,
        duplicate_tolerance=config.validation.duplicate_tolerance,
        assumptions=config.assumptions,
        seed=config.seed,
        source=this.source,
        task=task,
        run=run,
    )
    prepared = _prepare(this, curated, task)
    selected = steps.select(
        prepared,
        model=config.model,
        search_config=config.search,
        seed=config.seed,
        metric=search_metric,
        run=run,
        on_trial=_trial_logger(this, search_metric),
    )
    final = steps.train(prepared, selected, cv_folds=config.search.cv_folds, seed=config.seed, run=run)
    fault_point("trained")
    evaluation = steps.evaluate(
        final,
        prepared,
        selected,
        curated,
        evaluation=config.evaluation,
        cv_folds=config.search.cv_folds,
        seed=config.seed,
        metric=metric,
        run=run,
    )
    return _Trained(task, metric, validated, curated, prepared, selected, final, evaluation)


def _prepare(this: _Run, curated: Curated, task: Task) -> Prepared:
    """The held-out split, then (when enabled) the label review of its training rows."""
    config, steps = this.config, this.steps
    prepared = steps.prepare(
        curated,
        split=config.split,
        curation=config.curation,
        time_column=config.data.time_column,
        min_test_rows=config.promotion.min_test_rows,
        seed=config.seed,
        task=task,
        run=this.run,
    )
    if not config.label_review.enabled:
        return prepared
    return steps.review(
        prepared, curated, label_review=config.label_review, model=config.model, seed=config.seed, run=this.run
    )


def _trial_logger(this: _Run, metric: str) -> Callable[[search.TrialResult], None] | None:
    """Each search trial as a child run of the training run (none for a run recorded in memory)."""
    if this.run.run_id is None or this.experiment_id is None:
        return None
    client = registry.connect(this.workspace)
    parent, experiment_id = this.run.run_id, this.experiment_id

    def log_trial(result: search.TrialResult) -> None:
        registry.log_child_run(
            client,
            experiment_id,
            parent,
            f"{'trial' if result.stage == 'search' else 'final'}-{result.number}",
            {**result.params, "trial": result.number, "stage": result.stage},
            {
                f"cv_{metric}": result.score,
                f"cv_{metric}_std": result.score_std,
                f"train_{metric}": result.train_score,
                "fit_seconds": result.fit_seconds,
            },
            failed=result.error is not None,
        )

    return log_trial


def _release(this: _Run, trained: _Trained, run_id: str, dry_run: bool) -> tuple[str | None, Any]:
    """Refit for serving when wanted, then register, judge and apply the gate's decision."""
    config, prepared = this.config, trained.prepared
    refit = None
    if model.refit_wanted(config.split.refit, len(prepared.split.X_train), config.search.small_rows):
        refit = this.steps.refit(
            prepared,
            trained.curated,
            trained.selected,
            outlier_policy=config.curation.outlier_policy,
            cv_folds=config.search.cv_folds,
            seed=config.seed,
            run=this.run,
        )
    rules = release.Release(
        workspace=this.workspace,
        model_name=this.dataset,
        metric=trained.metric,
        promotion=config.promotion,
        evaluation=config.evaluation,
        reference_rows=config.monitoring.reference_rows,
        seed=config.seed,
        dry_run=dry_run,
    )
    return this.steps.promote(
        trained.final, prepared, trained.curated, trained.evaluation, release=rules, run_id=run_id, refit=refit
    )


def _result(
    run_id: str | None,
    dataset: str,
    trained: _Trained,
    version: str | None,
    reason: str,
    *,
    dry_run: bool,
    decision: Any = None,
) -> TrainingResult:
    promote = bool(decision is not None and decision.promote)
    return TrainingResult(
        run_id=run_id,
        model_name=dataset,
        model_version=version,
        promoted=promote and not dry_run,
        reason=reason,
        metrics=trained.evaluation.metrics,
        dry_run=dry_run,
        would_promote=promote,
        failed_checks=[c.name for c in decision.failed] if decision is not None else [],
        awaiting_approval=bool(decision is not None and decision.awaiting_approval),
        challenger=bool(decision is not None and decision.challenger),
        task=trained.task.name,
        metric=trained.metric,
        data=trained.validated.summary(),
    )
