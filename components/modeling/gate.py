"""The promotion gate's evidence: the champion scored on the candidate's held-out rows, beside the
candidate's own figures, for the pure decision (`promotion.decide_promotion`) to judge.

`score_champion` loads the champion (the model it was judged as, when it was refitted on every
row), checks it is comparable (same task, same classes, finite answers) and scores it on the same
rows the candidate was evaluated on: its metrics, per slice, and the paired bootstrap interval of
the candidate's gain. A champion that cannot score them is no reason to keep a working candidate
out: its metrics are empty and a note says why. `gather_evidence` puts everything together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import PromotionConfig
from components.inference.scoring import decision_threshold, read_model_info
from components.modeling.evaluate import paired_bootstrap, slice_metrics
from components.modeling.promotion import Evidence, Interval, ServingCheck
from components.modeling.tasks import Task
from components.tracking import registry


@dataclass(frozen=True)
class ChampionScores:
    """The champion on the candidate's held-out rows: its metrics (None without a champion, empty
    when it could not score them), per slice, the candidate's gain over it, and why it could not."""

    metrics: dict[str, float] | None = None
    slices: dict[str, float] = field(default_factory=dict)
    interval: Interval | None = None
    note: str = ""


def classes_of(model: Any) -> list[Any]:
    """A classifier's classes as a plain list; [] for a regressor."""
    return [c.item() if isinstance(c, np.generic) else c for c in getattr(model, "classes_", [])]


def task_of(model: Any) -> str:
    classes = getattr(model, "classes_", None)
    return "regression" if classes is None else "binary" if len(classes) == 2 else "multiclass"


def score_champion(
    champion: registry.ChampionInfo | None,
    candidate: Any,
    candidate_output: np.ndarray,
    task: Task,
    X_test: pd.DataFrame,
    y_test: pd.Series,
    test_frame: pd.DataFrame,
    *,
    metric: str,
    slices: Sequence[str],
    slice_min_rows: int,
    promotion: PromotionConfig,
    seed: int,
) -> ChampionScores:
    """The champion scored on the candidate's held-out rows (`test_frame`: those rows with every
    column, for the slices)."""
    if champion is None:
        return ChampionScores()
    try:
        info = read_model_info(champion.uri)
        incumbent = registry.load_model(info.get("gate_model_uri") or champion.uri)
        champion_task = info.get("task") or task_of(incumbent)
        if champion_task != task.name:
            raise ValueError(f"it is a {champion_task} model, the candidate a {task.name} one")
        classes = classes_of(candidate)
        if classes_of(incumbent) != classes:
            raise ValueError(f"its classes {classes_of(incumbent)} differ from the candidate's {classes}")
        output = task.output(incumbent, X_test)
        if not np.isfinite(output).all():
            raise ValueError("it answered non-finite values")
        threshold = decision_threshold(incumbent)
        metrics = task.compute_metrics(y_test, output, classes, threshold)
        champion_scorer = task.scorer(metric, y_test, output, classes, threshold)
        candidate_scorer = task.scorer(metric, y_test, candidate_output, classes, decision_threshold(candidate))
        per_slice = slice_metrics(test_frame, slices, champion_scorer, min_rows=slice_min_rows)
        gain = paired_bootstrap(
            len(y_test),
            candidate_scorer,
            champion_scorer,
            metric,
            samples=promotion.bootstrap_samples,
            confidence=promotion.confidence,
            max_rows=promotion.bootstrap_max_rows,
            seed=seed,
        )
    except (ValueError, KeyError) as exc:
        return ChampionScores(
            metrics={}, note=f"champion v{champion.version} could not score the held-out rows ({exc}); "
        )
    return ChampionScores(metrics=metrics, slices=per_slice, interval=Interval(**gain))  # type: ignore[arg-type]


def gather_evidence(
    rows: int,
    candidate: Mapping[str, float],
    champion: ChampionScores,
    champion_version: str | None,
    *,
    dummy: Mapping[str, float] | None,
    train_gap: float | None,
    candidate_slices: Mapping[str, float],
    serving: ServingCheck | None,
) -> Evidence:
    """Everything the gate judges, on the same held-out rows."""
    return Evidence(
        rows=rows,
        candidate=candidate,
        champion=champion.metrics,
        champion_version=champion_version,
        dummy=dummy,
        improvement=champion.interval,
        train_gap=train_gap,
        candidate_slices=candidate_slices,
        champion_slices=champion.slices,
        serving=serving,
    )
