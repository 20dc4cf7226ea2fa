"""The monitoring flow: is new data still what the champion was trained on, and does it still score well?

fetch the champion and its training reference -> read the window (a batch file, or the service's
prediction log since the last window) -> check it against the data contract -> score it -> compare
with the reference (drift, quality), measure decay with labels and estimate it without -> debounce
over recent windows -> write the HTML and JSON report (workspace and MLflow) -> on a sustained alarm,
retrain here ('inline') or emit `mlops.retrain.requested` for the training deployment ('event').
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.core.alerts import Alerter
from components.core.config import PipelineConfig, dataset_name
from components.core.files import write_text_atomic
from components.core.workspace import Workspace
from components.data import contract
from components.data.contract import ValidationReport
from components.data.extract import Batch, ExtractionError, combine, read_batches
from components.data.quarantine import Screening, screen_with
from components.inference.predlog import LOGGED_AT, PREDICTION, PROBABILITY, answers_of, read_prediction_log
from components.inference.scoring import ModelSchema, coerce_rows, decision_threshold, read_model_info
from components.modeling.evaluate import higher_is_better
from components.modeling.tasks import Task, labeled_target, task_named, task_of_model
from components.monitoring import monitor
from components.monitoring.labelqueue import label_sources
from components.monitoring.monitor import MonitoringError
from components.tracking import registry
from components.tracking.audit import check_trail
from flows.alerting import alert_failed_run
from flows.challenger import judge_challenger_task

PREDICTION_LOG = "prediction-log"


@dataclass(frozen=True)
class MonitorResult:
    """What a monitoring run found and did; `as_json` is the CLI's machine-readable last line."""

    model_name: str
    model_version: str | None
    window: str
    verdict: str  # stable | watching | retrain | insufficient | rejected
    reason: str
    rows: int
    drift: bool = False
    drift_share: float = 0.0
    drifted_features: list[str] = field(default_factory=list)
    score_distance: float | None = None
    decay: dict[str, Any] | None = None
    estimated: dict[str, Any] | None = None  # the metric estimated without labels (CBPE), beside `decay`
    quality: list[str] = field(default_factory=list)
    report_html: str | None = None
    report_json: str | None = None
    mlflow_run_id: str | None = None
    retraining: str = "none"  # none | ran | event | off
    training: dict[str, Any] | None = None
    contract: str = ""  # the contract's judgement of the window: clean, drift or corrupt, and why
    rows_set_aside: int = 0  # rows breaking a row rule, left out of the verdict
    challenger: dict[str, Any] | None = None  # the challenger's online test, when one is tried

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


@dataclass(frozen=True)
class Champion:
    info: registry.ChampionInfo
    model: Any
    reference: pd.DataFrame
    baseline: dict[str, float]
    task: Task
    metric: str  # the metric the model was gated on (its held-out score is the decay baseline)
    residuals: pd.DataFrame | None = None  # a regressor's held-out errors: its metric estimated without labels

    @property
    def classes(self) -> list[Any]:
        return [c.item() if isinstance(c, np.generic) else c for c in getattr(self.model, "classes_", [])]


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except (OSError, ConnectionError, TimeoutError):
        return True
    except Exception as exc:  # noqa: BLE001 - MLflow wraps connection failures in its own exception
        return type(exc).__name__ in ("MlflowException", "RestException") and "RESOURCE_DOES_NOT_EXIST" not in str(exc)
    return False


# Registry reads and logs are safe to repeat: three more tries, 2, 10 and 30 s apart.
REGISTRY_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 10, 30],
    "retry_condition_fn": _retry_transient,
}


@task(
    name="fetch_champion",
    cache_policy=NO_CACHE,
    **REGISTRY_RETRIES,
)
def fetch_champion_task(config: PipelineConfig, model_name: str) -> Champion:
    workspace = Workspace.at(config.home)
    client = registry.connect(workspace)
    check_trail(client, model_name, workspace, Alerter(config.alerts, model_name, workspace.alerts))
    info = registry.get_champion(client, model_name)
    if info is None:
        raise MonitoringError(f"{model_name} has no champion yet: run `mlops run` first")
    if info.run_id is None:
        raise MonitoringError(f"{model_name} v{info.version} has no training run to take a reference from")
    cache = workspace.model_cache(model_name, info.version)
    path = registry.download_model(model_name, info.version, cache / "model", info.run_id)
    reference_path = registry.download_artifact(info.run_id, monitor.REFERENCE_ARTIFACT, cache / "reference.parquet")
    if reference_path is None:
        raise MonitoringError(
            f"{model_name} v{info.version} was trained before references were stored with models; "
            "retrain it (`mlops run`) to monitor it"
        )
    model = registry.load_model(str(path))
    notes = read_model_info(str(path))
    task = task_named(notes["task"]) if "task" in notes else task_of_model(model)
    residuals = None  # a regressor's held-out errors (its metric without labels); a classifier has none
    if not task.classification:
        residuals = registry.download_artifact(info.run_id, monitor.RESIDUALS_ARTIFACT, cache / "residuals.parquet")
    return Champion(
        info=info,
        model=model,
        reference=pd.read_parquet(reference_path),
        baseline=registry.run_metrics(client, info.run_id),
        task=task,
        metric=str(notes.get("metric") or task.metric_for(config.promotion.metric)),
        residuals=pd.read_parquet(residuals) if residuals is not None else None,
    )


@task(name="read_window", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def read_window_task(config: PipelineConfig, model_name: str, data: str | None) -> tuple[str, pd.DataFrame]:
    """The rows to judge: a file (or folder) of new data, or the prediction log since the last window."""
    workspace = Workspace.at(config.home)
    if data is not None:
        batches = read_batches(data.replace("{home}", str(workspace.root)))
        if not batches:
            raise MonitoringError(f"no data file in {data}")
        broken = [f"{b.name}: {b.error}" for b in batches if b.frame is None]
        if broken:
            raise ExtractionError(f"unreadable: {'; '.join(broken)}")
        return data, combine(batches)
    history = [
        w
        for w in monitor.read_history(monitor.history_file(workspace.monitoring, model_name))
        if w.window.startswith(PREDICTION_LOG)
    ]
    since = datetime.fromisoformat(history[-1].window.split("@", 1)[1]) if history else None
    frame = read_prediction_log(workspace.predictions / model_name, since=since)
    if since is not None and len(frame):
        frame = frame[frame[LOGGED_AT] > pd.Timestamp(since)]
    until = frame[LOGGED_AT].max() if len(frame) else pd.Timestamp(since or datetime.now(UTC))
    return f"{PREDICTION_LOG}@{pd.Timestamp(until).isoformat()}", frame.reset_index(drop=True)


@task(name="validate_window", cache_policy=NO_CACHE)
def validate_window_task(frame: pd.DataFrame, config: PipelineConfig, model_name: str) -> Screening | None:
    """The training contract on the window, the way training applies it (without the target's
    expectations when it has no labels): rows breaking a row rule are set aside, counted and kept
    out of the verdict; too many of them, or a batch-level break, rejects the window."""
    path = contract.suite_path(config.validation.suite_dir, model_name)
    if not path.is_file():
        get_run_logger().warning("no contract at %s: the window is not validated", path)
        return None
    suite = contract.load_suite(path)
    target = config.data.target
    if target and target not in frame.columns:
        suite = contract.without_column(suite, target)
    return screen_with(
        contract.Validator(Workspace.at(config.home).gx_dir, data_docs=False),
        [Batch(name="window", path=None, frame=frame)],
        suite,
        max_bad_row_share=config.validation.max_bad_row_share,
        target=target,
    )


def _decay(
    champion: Champion, frame: pd.DataFrame, output: np.ndarray | None, labels: pd.Series, config: PipelineConfig
) -> monitor.Decay | None:
    """The metric on the labelled rows; `output`: the champion's answers for every row, if computed."""
    task, metric = champion.task, champion.metric
    known = labels.notna().to_numpy()
    baseline = champion.baseline.get(f"test_{metric}")
    if known.sum() < config.monitoring.min_rows or baseline is None:
        return None
    given = labeled_target(labels[known])
    if output is None:  # a prediction-log window: the service logged one score per row, not every answer
        output = task.output(champion.model, coerce_rows(frame.loc[known], ModelSchema.of(champion.model)))
    else:
        output = output[known]
    classes, threshold = champion.classes, decision_threshold(champion.model)
    if not task.classification:
        given = pd.to_numeric(given, errors="coerce")
        if given.isna().any():
            raise MonitoringError(f"labels of {config.data.target!r} are not all numbers; the model predicts numbers")
    scorer = task.scorer(metric, given, output, classes, threshold)
    everything = np.arange(len(given))
    current = scorer(everything)
    if current is None:
        return None
    accuracy = task.scorer("accuracy", given, output, classes, threshold)(everything) if task.classification else None
    sample = everything if len(given) <= 20_000 else np.random.default_rng(config.seed).choice(len(given), 20_000)
    current_se = monitor.bootstrap_se(lambda rows: scorer(sample[rows]), len(sample), config.seed) * np.sqrt(
        len(sample) / len(given)
    )
    test_rows = champion.baseline.get("test_rows")
    return monitor.measure_decay(
        metric,
        float(baseline),
        float(current),
        int(known.sum()),
        config.monitoring,
        higher_is_better=higher_is_better(metric),
        accuracy=accuracy,
        current_se=float(current_se),
        baseline_rows=int(test_rows) if test_rows else None,
    )


@task(name="judge_window", cache_policy=NO_CACHE)
def judge_window_task(
    champion: Champion, window: str, frame: pd.DataFrame, labels_path: str | None, config: PipelineConfig
) -> monitor.DriftReport:
    model, task = champion.model, champion.task
    schema = ModelSchema.of(model)
    frame = answers_of(frame, champion.info.version)  # in a canary, the champion's answers, not the served ones
    output = None
    if PROBABILITY in frame.columns and frame[PROBABILITY].notna().any():  # the service logged its own scores
        scores = frame[PROBABILITY].to_numpy(dtype="float64")
    elif PREDICTION in frame.columns and not task.classification:  # ... or a regression model's numbers
        scores = pd.to_numeric(frame[PREDICTION], errors="coerce").to_numpy(dtype="float64")
    else:
        output = task.output(model, coerce_rows(frame, schema))
        scores = task.scores(output)
    report = monitor.compare(
        champion.reference,
        frame,
        numeric=schema.numeric,
        categorical=schema.categorical,
        current_scores=scores,
        config=config.monitoring,
        model_name=champion.info.name,
        model_version=champion.info.version,
        window=window,
        probabilities=task.classification,
    )
    target, id_column = config.data.target, config.data.id_column
    labels: pd.Series | None = None
    if labels_path is not None or not (target and target in frame.columns):
        sources = [labels_path] if labels_path else label_sources(config, champion.info.name)
        arrived = monitor.read_labels(sources, id_column, str(target), required=labels_path is not None)
        if arrived is not None:
            labels = monitor.join_labels(frame, arrived, str(id_column), str(target))
        elif config.monitoring.labels:
            get_run_logger().info("no labels at %s yet: decay is not measured", ", ".join(sources))
    else:
        labels = frame[target]
    if labels is not None:
        report.decay = _decay(champion, frame, output, labels, config)
    if task.classification:  # the metric without labels, beside the realized one
        proba = output if output is not None else task.output(model, coerce_rows(frame, schema))
        report.estimated = monitor.estimate_decay(
            champion.metric, champion.baseline, proba, decision_threshold(model), config.monitoring, seed=config.seed
        )
    elif champion.residuals is not None:  # ... a regressor's from a model of its held-out errors
        report.estimated = monitor.estimate_loss_decay(
            champion.metric, champion.baseline, frame, scores, champion.residuals, config.monitoring, seed=config.seed
        )
    return report


def _write_report(report: monitor.DriftReport, workspace: Workspace) -> tuple[Path, Path]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = workspace.monitoring / report.model_name / "reports" / stamp
    folder.mkdir(parents=True, exist_ok=True)
    html_path, json_path = folder / "report.html", folder / "report.json"
    write_text_atomic(html_path, monitor.render_html(report))
    write_text_atomic(json_path, json.dumps(report.as_dict(), indent=2))
    return html_path, json_path


@task(
    name="log_report",
    cache_policy=NO_CACHE,
    **REGISTRY_RETRIES,
)
def log_report_task(report: monitor.DriftReport, html_path: Path, json_path: Path, config: PipelineConfig) -> str:
    """A run in the `<model>-monitoring` experiment: the verdict's figures, the HTML and JSON report."""
    workspace = Workspace.at(config.home)
    client = registry.connect(workspace)
    experiment = registry.ensure_experiment(client, f"{report.model_name}-monitoring", workspace)
    metrics: dict[str, float] = {
        "drift_share": report.drift_share,
        "drifted_features": float(len(report.drifted_features)),
        "rows": float(report.current_rows),
        "quality_issues": float(len(report.quality)),
    }
    if report.score:
        metrics["score_js_distance"] = report.score.js_distance
    if report.decay:
        metrics[f"current_{report.decay.metric}"] = report.decay.current
        metrics[f"drop_{report.decay.metric}"] = report.decay.drop
    if report.estimated:
        metrics[f"estimated_{report.estimated.metric}"] = report.estimated.current
    metrics.update({f"psi/{f.name}": f.psi for f in report.features})
    run_id = registry.start_run(
        client,
        experiment,
        tags={"verdict": report.verdict, "model_version": report.model_version, "window": report.window[:250]},
        params={"window": report.window[:500]},
    )
    registry.log_metrics(run_id, metrics)
    registry.log_artifact(run_id, html_path, "monitoring")
    registry.log_artifact(run_id, json_path, "monitoring")
    registry.end_run(client, run_id, "FINISHED", {"reason": report.reason[:5000]})
    return run_id


def emit_retrain_event(report: monitor.DriftReport) -> str | None:
    """Emit `mlops.retrain.requested` for the model; returns the event id (None if not sent)."""
    from prefect.events import emit_event

    event = emit_event(
        event=monitor.RETRAIN_EVENT,
        resource={
            "prefect.resource.id": monitor.model_event_resource(report.model_name),
            "prefect.resource.name": report.model_name,
            "mlops.model.version": report.model_version,
        },
        payload={"reason": report.reason, "window": report.window, "drifted_features": report.drifted_features},
    )
    return str(event.id) if event is not None else None


@dataclass(frozen=True)
class _CheckedWindow:
    """A window after the contract: the rows judged, what the contract said, and its failing report."""

    frame: pd.DataFrame
    contract: str = "not validated"
    set_aside: int = 0
    failed: ValidationReport | None = None


def _apply_contract(validation: Screening | None, frame: pd.DataFrame, logger: Any) -> _CheckedWindow:
    """The window's rows without those set aside by row rules, or the report it fails."""
    if validation is None:
        return _CheckedWindow(frame)
    if not validation.success:
        return _CheckedWindow(frame, failed=validation.rejected[0].report if validation.rejected else validation.report)
    judged = validation.report
    contract_note = f"{judged.judgement}: {judged.why}"
    set_aside = validation.rows_set_aside
    if set_aside:
        reasons = "; ".join(f"{k} ({v})" for a in validation.set_aside for k, v in a.reasons().items())
        logger.warning("%d row(s) of the window set aside by row rules: %s", set_aside, reasons)
        assert validation.frame is not None
        frame = validation.frame
    logger.info("contract: %s", contract_note)
    return _CheckedWindow(frame, contract_note, set_aside)


def _debounce(report: monitor.DriftReport, history_path: Path, config: PipelineConfig) -> monitor.DriftReport:
    """Record the window in the model's history, then judge it over the recent windows."""
    monitor.append_history(
        history_path,
        monitor.Window(
            at=report.created_at,
            window=report.window,
            model_version=report.model_version,
            drift=report.drift,
            decay=report.decayed(config.monitoring.estimated_decay),
            rows=report.current_rows,
        ),
    )
    return monitor.decide(report, monitor.read_history(history_path), config.monitoring)


@dataclass(frozen=True)
class _Retraining:
    status: str  # none | ran | event | off
    training: dict[str, Any] | None = None


def _retrain(
    report: monitor.DriftReport, action: str, history_path: Path, config: PipelineConfig, logger: Any
) -> _Retraining:
    """On a retrain verdict: note it in the history, then train here, emit the event, or do nothing ('off')."""
    if report.verdict != "retrain":
        return _Retraining("none")
    if action == "off":
        return _Retraining("off")
    monitor.note_retraining(history_path, report.model_version, report.window)
    if action == "event":
        event_id = emit_retrain_event(report)
        logger.info("emitted %s (event %s) for %s", monitor.RETRAIN_EVENT, event_id, report.model_name)
        return _Retraining("event")
    from flows.training import training_flow

    outcome = training_flow(config)
    return _Retraining("ran", json.loads(outcome.as_json()))


def _result(
    report: monitor.DriftReport,
    checked: _CheckedWindow,
    paths: tuple[Path, Path],
    run_id: str,
    retraining: _Retraining,
) -> MonitorResult:
    html_path, json_path = paths
    return MonitorResult(
        model_name=report.model_name,
        model_version=report.model_version,
        window=report.window,
        verdict=report.verdict,
        reason=report.reason,
        rows=report.current_rows,
        drift=report.drift,
        drift_share=report.drift_share,
        drifted_features=report.drifted_features,
        score_distance=report.score.js_distance if report.score else None,
        decay=asdict(report.decay) if report.decay else None,
        estimated=asdict(report.estimated) if report.estimated else None,
        quality=[f"{q.column}: {q.detail}" for q in report.quality],
        report_html=str(html_path),
        report_json=str(json_path),
        mlflow_run_id=run_id,
        retraining=retraining.status,
        training=retraining.training,
        contract=checked.contract,
        rows_set_aside=checked.set_aside,
    )


@flow(name="monitoring_flow", on_failure=[alert_failed_run])
def monitoring_flow(
    config: PipelineConfig, data: str | None = None, labels: str | None = None, retrain: str | None = None
) -> MonitorResult:
    """Judge one window of new data against the champion; retrain on a sustained alarm.

    `data`: a file, folder or glob of new rows (default: the prediction log since the last window);
    `labels`: a file of `id, target` rows joined on the id column (a `data` file that holds the target
    is its own labels); `retrain`: inline | event | off (default: monitoring.retrain).
    """
    logger = get_run_logger()
    workspace = Workspace.at(config.home)
    model_name = dataset_name(config)
    action = retrain or config.monitoring.retrain
    if action not in ("inline", "event", "off"):
        raise MonitoringError(f"retrain must be inline, event or off, not {action!r}")
    champion = fetch_champion_task(config, model_name)
    version = champion.info.version
    window, frame = read_window_task(config, model_name, data)
    if len(frame) < config.monitoring.min_rows:
        reason = f"{len(frame)} row(s) in the window; a verdict needs at least {config.monitoring.min_rows}"
        logger.info("%s: %s", window, reason)
        trial = judge_challenger_task(config, model_name, champion)
        return MonitorResult(model_name, version, window, "insufficient", reason, len(frame), challenger=trial)
    validation = validate_window_task(frame, config, model_name) if data is not None else None
    checked = _apply_contract(validation, frame, logger)
    alerter = Alerter(config.alerts, model_name, workspace.alerts)
    if checked.failed is not None:
        reason = f"the window breaks the data contract: {checked.failed.summary()}"
        logger.error("%s", reason)
        alerter.send("rejected_batch", reason, window=window, version=version)
        return MonitorResult(
            model_name, version, window, "rejected", reason, len(frame), contract="corrupt: " + checked.failed.why
        )
    report = judge_window_task(champion, window, checked.frame, labels, config)
    history_path = monitor.history_file(workspace.monitoring, model_name)
    report = _debounce(report, history_path, config)
    html_path, json_path = _write_report(report, workspace)
    run_id = log_report_task(report, html_path, json_path, config)
    logger.info(
        "%s v%s, %s: %s: %s (report: %s)", model_name, version, window, report.verdict, report.reason, html_path
    )
    if report.verdict == "retrain":
        alerter.send("drift_alarm", report.reason, window=window, version=version, retraining=action, report=html_path)
    retraining = _retrain(report, action, history_path, config, logger)
    trial = judge_challenger_task(config, model_name, champion)
    return replace(_result(report, checked, (html_path, json_path), run_id, retraining), challenger=trial)
