"""The label-review part of the contract benchmark: precision and recall of the review with 5% of
labels flipped, beside the best any cut of each reviewer's ranking (or the generator's true
probabilities) could reach, chosen in hindsight."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contract_sources import Source, config_for

from components.data.label_review import LabelReviewError, _out_of_fold, _self_suspicion, review_labels
from components.modeling.prepare import infer_feature_spec
from components.modeling.tasks import task_named
from components.modeling.train import build_model, review_candidates
from components.simulation.simulate import default_probability

NOISE = 0.05
GOAL_PRECISION, GOAL_RECALL = 0.8, 0.6


def review(source: Source, seed: int, rows: int = 20_000) -> dict[str, Any] | str:
    """Flip 5% of the labels at known rows and review them as the training flow does."""
    frame = source.frame.dropna(subset=[source.target])
    frame = frame.sample(n=min(rows, len(frame)), random_state=seed).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    classes = np.array(sorted(frame[source.target].unique()))
    flipped = rng.choice(len(frame), size=round(NOISE * len(frame)), replace=False)
    labels = frame[source.target].to_numpy().copy()
    for row in flipped:
        labels[row] = rng.choice(classes[classes != labels[row]])
    frame[source.target] = labels
    config = config_for(source)
    task = task_named(source.task)
    spec = infer_feature_spec(frame, source.target, source.id_column)
    X = frame.loc[:, list(spec.features)]
    started = time.perf_counter()
    try:
        found = review_labels(
            {
                name: build_model(spec, member, seed, None, task)
                for name, member in review_candidates(config, task).items()
            },
            X,
            frame[source.target],
            folds=config.label_review.folds,
            seed=seed,
            max_rows=config.label_review.max_rows,
            target_precision=config.label_review.target_precision,
            error_rate=config.label_review.error_rate,
        )
    except LabelReviewError as exc:
        return str(exc)
    seconds = time.perf_counter() - started
    flagged = set(found.issues["row"].tolist())
    hits = len(flagged & set(flipped.tolist()))
    wrong = np.zeros(len(frame), dtype=bool)
    wrong[flipped] = True
    return {
        "ceilings": _ceilings(source, frame, X, spec, classes, wrong, seed),
        "rows": len(frame),
        "reviewer": found.reviewer,
        "estimated": (found.estimated_precision, found.estimated_recall),
        "note": found.note,
        "flagged": len(flagged),
        "precision": hits / max(len(flagged), 1),
        "recall": hits / max(len(flipped), 1),
        "seconds": seconds,
    }


def _ceilings(
    source: Source,
    frame: pd.DataFrame,
    X: pd.DataFrame,
    spec: Any,
    classes: np.ndarray,
    wrong: np.ndarray,
    seed: int,
) -> dict[str, float]:
    """What any cut could reach, chosen in hindsight (knowing the flipped rows): each candidate's
    out-of-fold suspicion on the labels as given, and for the generator its true P(default | x)."""
    config, task = config_for(source), task_named(source.task)
    given = frame[source.target]
    ceilings = {
        name: _best_recall(_self_suspicion(_out_of_fold(model, X, given, 5, seed, False), classes, given), wrong)
        for name, model in (
            (name, build_model(spec, member, seed, None, task))
            for name, member in review_candidates(config, task).items()
        )
    }
    if source.name == "loans":
        labels = given.to_numpy()
        p = default_probability(frame)  # missing inputs filled as the generator's formula fills them
        ceilings["true P(default | x)"] = _best_recall(
            np.where(labels == 1, NOISE * (1 - p) / (NOISE * (1 - p) + (1 - NOISE) * p), 0.0)
            + np.where(labels == 0, NOISE * p / (NOISE * p + (1 - NOISE) * (1 - p)), 0.0),
            wrong,
        )
    return ceilings


def _best_recall(suspicion: np.ndarray, wrong: np.ndarray) -> float:
    """The highest recall of the flipped rows at precision >= the goal, over every cut of a ranking."""
    order = np.argsort(-suspicion, kind="stable")
    hits = np.cumsum(wrong[order])
    precision = hits / np.arange(1, len(order) + 1)
    good = precision >= GOAL_PRECISION
    return float(hits[good].max() / max(wrong.sum(), 1)) if good.any() else 0.0
