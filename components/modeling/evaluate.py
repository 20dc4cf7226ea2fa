"""Evaluation: metrics that stay meaningful for imbalanced and multiclass targets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from components.core.config import LOWER_IS_BETTER_METRICS as LOWER_IS_BETTER


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
    result["calibration_error"] = calibration_error(y, proba)
    return {name: float(value) for name, value in result.items()}


def calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the gap between predicted probability and observed frequency,
    averaged over equal-width bins weighted by their rows (binary: the positive class; multiclass: the
    predicted class's probability against how often that prediction is right)."""
    if proba.shape[1] == 2:
        score, outcome = proba[:, 1], (y == 1).astype("float64")
    else:
        predicted = proba.argmax(axis=1)
        score, outcome = proba[np.arange(len(y)), predicted], (predicted == y).astype("float64")
    which = np.minimum((score * bins).astype(np.int64), bins - 1)
    predicted_sum = np.bincount(which, weights=score, minlength=bins)
    observed_sum = np.bincount(which, weights=outcome, minlength=bins)
    return float(np.abs(predicted_sum - observed_sum).sum() / max(len(y), 1))


def calibration_noise(rows: int, bins: int = 10) -> float:
    """An upper bound on the expected calibration error a perfectly calibrated model shows by chance on
    `rows` rows: each bin's gap is a binomial mean's deviation, E|gap_b| <= sqrt(2/pi) sqrt(n_b/4) / n,
    summed over bins at most sqrt(2/pi) sqrt(bins / (4 n)) (0.038 on 1,100 rows, 0.028 on 2,000)."""
    return float(np.sqrt(2 / np.pi) * np.sqrt(bins / (4 * max(rows, 1))))


def regression_metric(metric: str, y: np.ndarray, predicted: np.ndarray) -> float | None:
    """One regression metric with numpy alone (the bootstrap calls this thousands of times).

    MAPE is only defined when no true value is zero; R² needs a target that varies.
    """
    residual = predicted - y
    if metric == "rmse":
        return float(np.sqrt(np.mean(residual**2)))
    if metric == "mae":
        return float(np.mean(np.abs(residual)))
    if metric == "r2":
        total = float(np.sum((y - y.mean()) ** 2))
        return None if total <= 0 else float(1.0 - np.sum(residual**2) / total)
    if metric == "mape":
        return None if (y == 0).any() else float(np.mean(np.abs(residual / y)))
    return None


def regression_metrics(y_true: pd.Series | np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Held-out regression metrics: RMSE, MAE, R² and MAPE (where defined)."""
    y = np.asarray(y_true, dtype="float64")
    predicted = np.asarray(predicted, dtype="float64")
    result = {}
    for name in ("rmse", "mae", "r2", "mape"):
        value = regression_metric(name, y, predicted)
        if value is not None:
            result[name] = value
    return result


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
    if n_classes == 2 and metric not in ("average_precision", "calibration_error"):
        return _binary_metric(metric, y, proba[:, 1], threshold)
    if n_classes > 2 and metric not in ("average_precision", "calibration_error"):
        return _multiclass_metric(metric, y, proba)
    return _metrics(y, proba, n_classes, threshold).get(metric)


def _auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _multiclass_metric(metric: str, y: np.ndarray, proba: np.ndarray) -> float | None:
    """One multiclass metric with numpy alone (macro averages, as `compute_metrics`)."""
    n_classes = proba.shape[1]
    if metric == "log_loss":
        return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0))))
    if metric == "brier":
        return float(np.mean(np.sum((proba - np.eye(n_classes)[y]) ** 2, axis=1)))
    if metric == "roc_auc":
        scores = [_auc(y == k, proba[:, k]) for k in range(n_classes)]
        return None if any(s is None for s in scores) else float(np.mean(scores))  # type: ignore[arg-type]
    predicted = proba.argmax(axis=1)
    if metric == "accuracy":
        return float(np.mean(predicted == y))
    true_counts = np.bincount(y, minlength=n_classes).astype("float64")
    predicted_counts = np.bincount(predicted, minlength=n_classes).astype("float64")
    hits = np.bincount(y[predicted == y], minlength=n_classes).astype("float64")
    recall = np.divide(hits, true_counts, out=np.zeros(n_classes), where=true_counts > 0)
    precision = np.divide(hits, predicted_counts, out=np.zeros(n_classes), where=predicted_counts > 0)
    if metric == "balanced_accuracy":
        return float(recall[true_counts > 0].mean())
    if metric == "recall":
        return float(recall.mean())
    if metric == "precision":
        return float(precision.mean())
    if metric == "f1":
        total = precision + recall
        return float(np.divide(2 * precision * recall, total, out=np.zeros(n_classes), where=total > 0).mean())
    return None


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


RowScorer = Callable[[np.ndarray], float | None]
"""A metric of one model's answers on the rows an index array (or mask) selects (see `Task.scorer`)."""


def slice_metrics(
    frame: pd.DataFrame, columns: Sequence[str], scorer: RowScorer, *, min_rows: int = 100
) -> dict[str, float]:
    """The metric on each value of each slice column (`column=value`), for slices with enough rows.

    `frame` holds the scored rows in the scorer's order.
    """
    result: dict[str, float] = {}
    for column in columns:
        if column not in frame.columns:
            raise ValueError(f"slice column {column!r} is not in the data")
        values = frame[column].astype(object).where(frame[column].notna(), "<missing>").to_numpy()
        for value in pd.unique(values):
            mask = values == value
            if mask.sum() < min_rows:
                continue
            score = scorer(mask)
            if score is not None:
                result[f"{column}={value}"] = score
    return result


def paired_bootstrap(
    rows: int,
    candidate: RowScorer,
    champion: RowScorer,
    metric: str,
    *,
    samples: int = 1000,
    confidence: float = 0.95,
    max_rows: int | None = 20_000,
    seed: int = 0,
) -> dict[str, float]:
    """Bootstrap interval of (candidate - champion) on the same resampled rows, positive = better.

    Resampling the rows once for both models keeps their correlation, so the interval is far
    tighter than comparing two separate intervals. Above `max_rows` rows a seeded subsample is
    used: a wider interval, never a falsely narrow one.
    """
    rng = np.random.default_rng(seed)
    pool = np.arange(rows)
    if max_rows is not None and rows > max_rows:
        pool = np.sort(rng.choice(rows, size=max_rows, replace=False))
    sign = 1.0 if higher_is_better(metric) else -1.0

    def gain(selected: np.ndarray) -> float:
        a, b = candidate(selected), champion(selected)
        return float("nan") if a is None or b is None else sign * (a - b)

    observed = gain(pool)
    values = np.array([gain(pool[rng.integers(0, len(pool), size=len(pool))]) for _ in range(samples)])
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
        "rows": len(pool),
    }
