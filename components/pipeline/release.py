"""The release steps of training: log the candidate, register it, judge it against the champion
and apply the decision. They need a tracking run (`MlflowRun`): the registry is MLflow's."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import EvaluationConfig, PromotionConfig
from components.core.faults import fault_point
from components.core.workspace import Workspace
from components.inference.scoring import measure_serving
from components.modeling import gate
from components.modeling.prepare import Split
from components.modeling.promotion import Decision, Evidence, PromotionPolicy, decide_promotion
from components.modeling.tasks import Task
from components.modeling.train import FinalModel
from components.monitoring import monitor
from components.pipeline.data import LOG, Log
from components.pipeline.results import Curated, Evaluation, Prepared
from components.tracking import decisions, registry

GATE_ARTIFACT = "gate_model"  # the candidate as the gate judged it, beside a refitted served model


@dataclass(frozen=True)
class Release:
    """Where the release happens and under what rules."""

    workspace: Workspace
    model_name: str
    metric: str
    promotion: PromotionConfig
    evaluation: EvaluationConfig
    reference_rows: int  # monitoring.reference_rows
    seed: int
    dry_run: bool = False


def _example_rows(X: pd.DataFrame, rows: int = 5) -> list[dict[str, Any]]:
    head = X.head(rows).astype(object)
    return head.where(head.notna(), None).to_dict(orient="records")  # type: ignore[return-value]


def log_reference(run_id: str, model: Any, X: pd.DataFrame, rows: int, seed: int, task: Task) -> None:
    """A sample of the training rows with the model's scores: what monitoring compares new data with."""
    sample = X if len(X) <= rows else X.sample(n=rows, random_state=seed)
    reference = monitor.build_reference(sample, task.scores(task.output(model, sample)), rows, seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(monitor.REFERENCE_ARTIFACT).name
        reference.to_parquet(path, index=False)
        registry.log_artifact(run_id, path, str(Path(monitor.REFERENCE_ARTIFACT).parent))


def log_residuals(run_id: str, final: FinalModel, split: Split, rows: int, seed: int, task: Task) -> None:
    """A regressor's errors on rows it was not fitted on, with their features and its answers: the
    held-out rows, and the training rows' out-of-fold answers where the fit computed them (five
    times the rows, so the errors' level is less a matter of which rows were held out). Monitoring
    estimates the metric from them before labels arrive (`monitor.estimate_loss_decay`)."""
    if task.classification or not len(split.X_test):
        return
    X, predicted, y = split.X_test, task.output(final.model, split.X_test), split.y_test
    if final.out_of_fold is not None and len(final.out_of_fold) == len(split.X_train):
        X, y = pd.concat([X, split.X_train]), pd.concat([y, split.y_train])
        predicted = np.concatenate([np.asarray(predicted, dtype="float64"), final.out_of_fold])
    residuals = monitor.build_residuals(X, predicted, y, rows, seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(monitor.RESIDUALS_ARTIFACT).name
        residuals.to_parquet(path, index=False)
        registry.log_artifact(run_id, path, str(Path(monitor.RESIDUALS_ARTIFACT).parent))


def log_candidate(
    final: FinalModel, refit: FinalModel | None, prepared: Prepared, release: Release, run_id: str
) -> tuple[str, dict[str, Any]]:
    """Log the model to serve (and, when it was refitted on every row, the one the gate judges) with
    the notes every loader reads, and the monitoring reference; returns its URI and the notes."""
    split, task, served = prepared.split, prepared.task, refit or final
    info: dict[str, Any] = {"task": task.name, "metric": release.metric}
    if served.interval is not None:
        info["interval"] = asdict(served.interval)
    if served.calibration:
        info["calibration"] = served.calibration
    X_served = split.X_train
    if refit is not None:
        # The gate judges models fitted without the held-out rows: this run's candidate now, and
        # this model (as the champion) in later runs, where the refitted one has seen those rows.
        info["gate_model_uri"] = registry.log_model(run_id, final.model, split.X_train, {**info}, name=GATE_ARTIFACT)
        X_served = split.all_rows()[0]
        info["refit_rows"] = len(X_served)
    model_uri = registry.log_model(run_id, served.model, X_served, info)
    fault_point("logged")
    log_reference(run_id, served.model, X_served, release.reference_rows, release.seed, task)
    log_residuals(run_id, final, split, release.reference_rows, release.seed, task)
    return model_uri, info


def promote(
    final: FinalModel,
    prepared: Prepared,
    curated: Curated,
    evaluation: Evaluation,
    *,
    release: Release,
    run_id: str,
    refit: FinalModel | None = None,
    log: Log | None = None,
) -> tuple[str | None, Decision]:
    """Register the candidate (unless a dry run), measure it against the champion on the same rows,
    check it loads and answers through the serving path, decide, and apply the decision.

    With `refit`, the registered model is the candidate refitted on every labeled row; the
    candidate as judged (fitted without the held-out rows) is logged beside it for later gates."""
    log = log or LOG
    task, name = prepared.task, release.model_name
    model_uri, info = log_candidate(final, refit, prepared, release, run_id)
    version = None
    if not release.dry_run:
        tags = {"data_fingerprint": curated.fingerprint, "run_id": run_id, "task": task.name}
        version = registry.register_model(model_uri, name, tags=tags)
        fault_point("registered")
    client = registry.connect(release.workspace)
    champion = registry.get_champion(client, name)
    evidence, policy, note = _evidence(final, prepared, curated, evaluation, release, champion, version, model_uri)
    decision = decide_promotion(evidence, policy)
    if note:
        decision = replace(decision, reason=note + decision.reason)
    candidate = {
        "run_id": run_id,
        "version": version,
        "model_uri": model_uri,
        "dry_run": release.dry_run,
        "refit_rows": info.get("refit_rows"),
        "gate_model_uri": info.get("gate_model_uri"),
    }
    settings = release.promotion.model_dump(mode="json")
    decisions.record_decision(run_id, decision, evidence, policy, settings, candidate, champion)
    if version is None:
        log.info("dry run: would %s: %s", "promote" if decision.promote else "hold", decision.reason)
        return None, decision
    expected = champion.version if champion else None
    applied = decisions.apply_decision(
        client,
        name,
        version,
        decision,
        run_id=run_id,
        expected_champion=expected,
        lock_dir=release.workspace.root,
        approval=release.promotion.approval,
        rollout=(release.promotion.rollout, release.promotion.canary_share),
    )
    return version, _outcome(applied, name, version, log)


def _outcome(applied: decisions.Applied, name: str, version: str, log: Log) -> Decision:
    """The decision as applied, logged: promoted, kept, raced, or waiting for approval."""
    decision = applied.decision
    if applied.challenger:
        log.info("%s v%s passed every check and is now the challenger: %s", name, version, decision.reason)
        reason = (
            "challenger: passed the gate; tried against the champion on live requests until "
            f"`mlops monitor` promotes or retires it on labelled ones: {decision.reason}"
        )
        return replace(decision, promote=False, challenger=True, reason=reason)
    if applied.pending:
        log.info("%s v%s passed every check and waits for approval (mlops approve / mlops reject)", name, version)
        reason = f"ready, waiting for approval (mlops approve / mlops reject): {decision.reason}"
        return replace(decision, promote=False, awaiting_approval=True, reason=reason)
    if applied.raced:
        log.warning("%s", decision.reason)
    elif decision.promote:
        outgoing = f" (v{applied.outgoing} is now previous-champion)" if applied.outgoing else ""
        log.info("promoted %s v%s to champion%s: %s", name, version, outgoing, decision.reason)
    else:
        log.info("kept the champion; %s v%s not promoted: %s", name, version, decision.reason)
    return decision


def _evidence(
    final: FinalModel,
    prepared: Prepared,
    curated: Curated,
    evaluation: Evaluation,
    release: Release,
    champion: registry.ChampionInfo | None,
    version: str | None,
    model_uri: str,
) -> tuple[Evidence, PromotionPolicy, str | None]:
    """The gate's evidence on the held-out rows (the champion scored on the same ones, the serving
    check), the policy it is judged by, and a note on how the champion was scored."""
    split, task, metric = prepared.split, prepared.task, release.metric
    scores = gate.score_champion(
        champion,
        final.model,
        evaluation.output,
        task,
        split.X_test,
        split.y_test,
        curated.frame.loc[split.X_test.index],
        metric=metric,
        slices=release.evaluation.slices,
        slice_min_rows=release.evaluation.slice_min_rows,
        promotion=release.promotion,
        seed=release.seed,
    )
    uri = f"models:/{release.model_name}/{version}" if version else model_uri
    evidence = gate.gather_evidence(
        len(split.y_test),
        evaluation.metrics,
        scores,
        champion.version if champion else None,
        dummy=evaluation.dummy,
        train_gap=evaluation.train_gap,
        candidate_slices=evaluation.slices,
        serving=measure_serving(uri, _example_rows(split.X_test)),
    )
    promotion = release.promotion
    policy = PromotionPolicy.from_config(
        promotion, metric=metric, min_score=task.floor_for(metric, promotion.min_score)
    )
    return evidence, policy, scores.note
