"""The continuous-training loop's test bed: a batch schedule with known shifts, and its goals.

`plan_batches` says what each replayed batch is (stable, covariate drift from batch `drift_at`,
concept drift from `concept_at`, a corrupted batch at `corrupt_at`); `best_model` trains, on fresh
rows of one batch's own distribution, the model the pipeline's recipe would give (without the
hyperparameter search), so the timeline can show what accuracy was achievable there; `check_goals`
judges the timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from components.config import PipelineConfig
from components.evaluate import compute_metrics
from components.prepare import features_frame, infer_feature_spec
from components.search import tune_threshold_oof
from components.simulate import ID_COLUMN, STABLE, TARGET, TIME_COLUMN, Scenario, generate_loans
from components.train import build_model, train_model, with_class_weight

Kind = Literal["stable", "covariate drift", "concept drift", "corrupted"]
RECOVERY_POINTS = 0.02


@dataclass(frozen=True)
class PlannedBatch:
    index: int
    kind: Kind
    scenario: Scenario


def plan_batches(
    batches: int, *, drift_at: int | None, concept_at: int | None, corrupt_at: int | None, strength: float = 1.0
) -> list[PlannedBatch]:
    """What each batch is. Shifts persist once they start; the corrupted batch is a one-off (a unit bug)."""
    for name, at in (("drift_at", drift_at), ("concept_at", concept_at), ("corrupt_at", corrupt_at)):
        if at is not None and not 0 <= at < batches:
            raise ValueError(f"{name} must be between 0 and {batches - 1} (batches are numbered from 0), got {at}")
    plan = []
    for index in range(batches):
        covariate = strength if drift_at is not None and index >= drift_at else 0.0
        concept = strength if concept_at is not None and index >= concept_at else 0.0
        kind: Kind = "stable"
        if covariate:
            kind = "covariate drift"
        if concept:
            kind = "concept drift"
        scenario = Scenario(covariate_drift=covariate, concept_drift=concept)
        if index == corrupt_at:
            kind, scenario = "corrupted", Scenario(covariate_drift=covariate, concept_drift=concept, unit_change=True)
        plan.append(PlannedBatch(index, kind, scenario))
    return plan


def onsets(plan: Sequence[PlannedBatch]) -> list[int]:
    """Batches where a lasting shift starts (the one-off corrupted batch is not one)."""
    found, previous = [], STABLE
    for batch in plan:
        if batch.kind == "corrupted":
            continue
        shifted = (batch.scenario.covariate_drift, batch.scenario.concept_drift)
        if shifted != (previous.covariate_drift, previous.concept_drift):
            found.append(batch.index)
        previous = batch.scenario
    return found


def best_model(scenario: Scenario, config: PipelineConfig, rows: int, seed: int, batch_index: int) -> Any:
    """The pipeline's recipe (class weights, F1-tuned threshold) fitted on fresh rows of `scenario`."""
    clean = Scenario(scenario.covariate_drift, scenario.concept_drift)
    frame = generate_loans(rows, seed, clean, batch_index=batch_index).frame
    spec = infer_feature_spec(frame, TARGET, ID_COLUMN, TIME_COLUMN)
    X, y = features_frame(frame, spec), frame[TARGET]
    model_config = with_class_weight(config.model, y)
    choice = tune_threshold_oof(build_model(spec, model_config, seed), X, y, folds=config.search.cv_folds, seed=seed)
    return train_model(X, y, spec, model_config, seed, threshold=choice.threshold if choice else None)


def accuracy(model: Any, frame: pd.DataFrame) -> float:
    """Accuracy of a model at its own decision threshold on a labelled batch."""
    from components.scoring import ModelSchema, coerce_rows, decision_threshold

    X = coerce_rows(frame, ModelSchema.of(model))
    metrics = compute_metrics(frame[TARGET], model.predict_proba(X), list(model.classes_), decision_threshold(model))
    return metrics["accuracy"]


@dataclass
class TimelineRow:
    batch: int
    kind: Kind
    validation: str  # passed | rejected
    drift: str  # the monitor's verdict: stable | watching | retrain | - (rejected)
    retrained: bool
    promoted: str | None  # the new champion's version
    served_version: str
    served_accuracy: float | None
    best_accuracy: float | None
    detail: str = ""

    @property
    def gap(self) -> float | None:
        if self.served_accuracy is None or self.best_accuracy is None:
            return None
        return self.best_accuracy - self.served_accuracy


@dataclass(frozen=True)
class Goal:
    name: str
    met: bool
    detail: str


def check_goals(rows: Sequence[TimelineRow], plan: Sequence[PlannedBatch]) -> list[Goal]:
    """The loop's goals on a finished timeline."""
    goals = []
    corrupted = [r for r in rows if r.kind == "corrupted"]
    if corrupted:
        rejected = all(r.validation == "rejected" for r in corrupted)
        goals.append(
            Goal(
                "the corrupted batch is rejected",
                rejected,
                ", ".join(f"batch {r.batch}: {r.validation}" for r in corrupted),
            )
        )
    starts = onsets(plan)
    usable = [r for r in rows if r.validation == "passed"]
    for position, onset in enumerate(starts):
        end = starts[position + 1] if position + 1 < len(starts) else len(plan)
        segment = [r for r in usable if onset <= r.batch < end]
        alarms = [r.batch for r in segment if r.drift in ("watching", "retrain")]
        detected = bool(alarms) and alarms[0] <= onset + 1
        goals.append(
            Goal(
                f"shift at batch {onset} detected within one batch",
                detected,
                f"first alarm at batch {alarms[0]}" if alarms else "no alarm",
            )
        )
        promoted = [r.batch for r in segment if r.promoted]
        after = [r for r in segment if promoted and r.batch > promoted[0] and r.gap is not None]
        recovered = bool(after) and all(r.gap <= RECOVERY_POINTS for r in after)  # type: ignore[operator]
        gaps = ", ".join(f"batch {r.batch}: {100 * r.gap:+.1f}" for r in after)  # type: ignore[operator]
        goals.append(
            Goal(
                f"after the shift at batch {onset}, served accuracy within {100 * RECOVERY_POINTS:.0f} points of "
                "the best achievable",
                recovered,
                (f"promoted at batch {promoted[0]}; points below best: {gaps}" if after else "")
                or ("no promotion after the shift" if not promoted else "no batch after the promotion to judge"),
            )
        )
    expected = {b for onset in starts for b in (onset, onset + 1)}
    false_retrains = [r.batch for r in rows if r.retrained and r.batch not in expected]
    goals.append(
        Goal(
            "no retraining on stable batches",
            not false_retrains,
            f"retrained at batch(es) {false_retrains}" if false_retrains else "retrained only at shifts",
        )
    )
    return goals
