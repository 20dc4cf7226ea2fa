"""Evaluation: metrics that stay meaningful for imbalanced and multiclass targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from components.config import LOWER_IS_BETTER_METRICS as LOWER_IS_BETTER


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def label_positions(y_true: pd.Series | np.ndarray | Sequence[Any], classes: Sequence[Any]) -> np.ndarray:
    """Labels as positions in `classes`, so int, str and bool labels behave alike."""
    position = {label: index for index, label in enumerate(classes)}
    labels = pd.Series(y_true).tolist()
    unknown = sorted({str(label) for label in labels if label not in position})
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's classes {list(classes)}")
    return np.array([position[label] for label in labels], dtype=np.int64)


def predicted_positions(proba: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Binary: positive when its probability reaches `threshold` (default 0.5); multiclass: argmax."""
    if proba.shape[1] == 2 and threshold is not None:
        return (proba[:, 1] >= threshold).astype(np.int64)
    return proba.argmax(axis=1)


def _metrics(y: np.ndarray, proba: np.ndarray, n_classes: int, threshold: float | None) -> dict[str, float]:
    predicted = predicted_positions(proba, threshold)
    indices = list(range(n_classes))
    result = {
        "accuracy": skm.accuracy_score(y, predicted),
        "balanced_accuracy": skm.balanced_accuracy_score(y, predicted),
        "log_loss": skm.log_loss(y, proba, labels=indices),
        "brier": float(np.mean(np.sum((proba - np.eye(n_classes)[y]) ** 2, axis=1)))
        if n_classes > 2
        else skm.brier_score_loss(y, proba[:, 1], pos_label=1),
    }
    present = set(np.unique(y).tolist())
    average = "binary" if n_classes == 2 else "macro"
    labels = None if n_classes == 2 else indices
    result["f1"] = skm.f1_score(y, predicted, average=average, labels=labels, zero_division=0)
    result["precision"] = skm.precision_score(y, predicted, average=average, labels=labels, zero_division=0)
    result["recall"] = skm.recall_score(y, predicted, average=average, labels=labels, zero_division=0)
    if n_classes == 2:
        if len(present) == 2:
            result["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
            result["average_precision"] = skm.average_precision_score(y, proba[:, 1])
    elif len(present) == n_classes:
        result["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=indices)
        result["average_precision"] = skm.average_precision_score(
            label_binarize(y, classes=indices), proba, average="macro"
        )
    return {name: float(value) for name, value in result.items()}


def _binary_metric(metric: str, y: np.ndarray, positive: np.ndarray, threshold: float | None) -> float | None:
    """One binary metric with numpy alone: the bootstrap calls this thousands of times."""
    if metric == "roc_auc":
        n_pos = int(y.sum())
        n_neg = len(y) - n_pos
        if not n_pos or not n_neg:
            return None
        ranks = rankdata(positive)
        return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    if metric == "log_loss":
        p = np.clip(positive, 1e-15, 1 - 1e-15)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    if metric == "brier":
        return float(np.mean((positive - y) ** 2))
    predicted = positive >= (0.5 if threshold is None else threshold)
    tp = float(np.sum(predicted & (y == 1)))
    fp = float(np.sum(predicted & (y == 0)))
    fn = float(np.sum(~predicted & (y == 1)))
    tn = float(len(y) - tp - fp - fn)
    if metric == "accuracy":
        return (tp + tn) / len(y)
    if metric == "precision":
        return tp / (tp + fp) if tp + fp else 0.0
    if metric == "recall":
        return tp / (tp + fn) if tp + fn else 0.0
    if metric == "f1":
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    if metric == "balanced_accuracy":
        return ((tp / (tp + fn) if tp + fn else 0.0) + (tn / (tn + fp) if tn + fp else 0.0)) / 2
    return None


def score_metric(
    metric: str, y: np.ndarray, proba: np.ndarray, n_classes: int, threshold: float | None = None
) -> float | None:
    """One metric for labels given as positions; the same definitions as `compute_metrics`."""
    if n_classes == 2 and metric != "average_precision":
        return _binary_metric(metric, y, proba[:, 1], threshold)
    return _metrics(y, proba, n_classes, threshold).get(metric)


def compute_metrics(
    y_true: pd.Series | np.ndarray, proba: np.ndarray, classes: Sequence[Any], threshold: float | None = None
) -> dict[str, float]:
    """Held-out metrics from class probabilities (columns ordered as `classes`).

    f1, precision and recall use the decision threshold for binary targets (default 0.5)
    and are macro averages for multiclass ones, like roc_auc and average_precision.
    """
    classes = list(classes)
    return _metrics(label_positions(y_true, classes), proba, len(classes), threshold)


def evaluate_model(model: Any, X: pd.DataFrame, y: pd.Series, threshold: float | None = None) -> dict[str, float]:
    """Score a fitted classifier (anything with predict_proba and classes_) on labeled rows."""
    return compute_metrics(y, model.predict_proba(X), model.classes_, threshold)


def slice_metrics(
    y_true: pd.Series,
    proba: np.ndarray,
    classes: Sequence[Any],
    frame: pd.DataFrame,
    columns: Sequence[str],
    metric: str,
    *,
    min_rows: int = 100,
    threshold: float | None = None,
) -> dict[str, float]:
    """`metric` on each value of each slice column (`column=value`), for slices with enough rows."""
    classes = list(classes)
    y = label_positions(y_true, classes)
    result: dict[str, float] = {}
    for column in columns:
        if column not in frame.columns:
            raise ValueError(f"slice column {column!r} is not in the data")
        values = frame[column].astype(object).where(frame[column].notna(), "<missing>").to_numpy()
        for value in pd.unique(values):
            mask = values == value
            if mask.sum() < min_rows:
                continue
            score = score_metric(metric, y[mask], proba[mask], len(classes), threshold)
            if score is not None:
                result[f"{column}={value}"] = score
    return result


def paired_bootstrap(
    y_true: pd.Series | np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    classes: Sequence[Any],
    metric: str,
    *,
    samples: int = 1000,
    confidence: float = 0.95,
    max_rows: int | None = 20_000,
    seed: int = 0,
    threshold: float | None = None,
    champion_threshold: float | None = None,
) -> dict[str, float]:
    """Bootstrap interval of (candidate - champion) on the same resampled rows, positive = better.

    Resampling the rows once for both models keeps their correlation, so the interval is far
    tighter than comparing two separate intervals. Above `max_rows` rows a seeded subsample is
    used: a wider interval, never a falsely narrow one.
    """
    classes = list(classes)
    y = label_positions(y_true, classes)
    if not (np.isfinite(candidate).all() and np.isfinite(champion).all()):
        raise ValueError("non-finite probabilities: the models cannot be compared")
    rng = np.random.default_rng(seed)
    if max_rows is not None and len(y) > max_rows:
        keep = rng.choice(len(y), size=max_rows, replace=False)
        y, candidate, champion = y[keep], candidate[keep], champion[keep]
    sign = 1.0 if higher_is_better(metric) else -1.0
    n_classes = len(classes)

    def score(rows: np.ndarray, proba: np.ndarray, cut: float | None) -> float:
        value = score_metric(metric, y[rows], proba[rows], n_classes, cut)
        return float("nan") if value is None else value

    everything = np.arange(len(y))
    observed = sign * (score(everything, candidate, threshold) - score(everything, champion, champion_threshold))
    diffs = []
    for _ in range(samples):
        rows = rng.integers(0, len(y), size=len(y))
        diffs.append(sign * (score(rows, candidate, threshold) - score(rows, champion, champion_threshold)))
    values = np.array(diffs)
    values = values[np.isfinite(values)]
    if not len(values):
        raise ValueError(f"{metric} could not be computed on any bootstrap sample")
    tail = (1 - confidence) / 2
    return {
        "mean": float(observed),
        "low": float(np.quantile(values, tail)),
        "high": float(np.quantile(values, 1 - tail)),
        "confidence": confidence,
        "samples": len(values),
        "rows": len(y),
    }
