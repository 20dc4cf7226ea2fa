"""Performance without labels: a classifier's metric estimated from its own probabilities.

Confidence-based performance estimation (CBPE, as NannyML does it): when the probabilities are
calibrated, a row predicted as class l is of class k with probability p_k, so the confusion matrix
has an expected value, and every metric built on it has an estimate; ROC AUC is the expected share
of (positive, negative) pairs ranked in order, each pair weighted by p_i (1 - p_j). Log loss and the
Brier score have expected values from the probabilities alone. The estimate is as good as the
calibration and holds under covariate shift, not when the concept itself moves (then only labels
tell): it is shown beside the realized metric once labels arrive.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from components.core.config import MonitoringConfig
from components.monitoring.monitor.decay import Decay, bootstrap_se, measure_decay

EPS = 1e-15


def expected_log_losses(proba: np.ndarray) -> np.ndarray:
    """Each row's expected log loss under its own (calibrated) probabilities: their entropy."""
    proba = np.asarray(proba, dtype="float64")
    return -(proba * np.log(np.clip(proba, EPS, 1))).sum(axis=1)


def predicted_index(proba: np.ndarray, threshold: float | None) -> np.ndarray:
    """The class index each row is predicted as (binary: positive at `threshold`, else 0.5)."""
    if proba.shape[1] == 2:
        return (proba[:, 1] >= (0.5 if threshold is None else threshold)).astype(int)
    return proba.argmax(axis=1)


def expected_confusion(proba: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """E[C[k, l]]: over the rows predicted as l, the expected count of true class k."""
    classes = proba.shape[1]
    confusion = np.zeros((classes, classes))
    for label in range(classes):
        confusion[:, label] = proba[predicted == label].sum(axis=0)
    return confusion


def expected_roc_auc(positive: np.ndarray) -> float | None:
    """The ROC AUC expected when each row is positive with probability `positive` (and ranked by it)."""
    values, group = np.unique(positive, return_inverse=True)
    pos = np.bincount(group, weights=positive, minlength=len(values))
    neg = np.bincount(group, weights=1 - positive, minlength=len(values))
    both = np.bincount(group, weights=positive * (1 - positive), minlength=len(values))
    above = pos[::-1].cumsum()[::-1] - pos  # expected positives ranked strictly higher than each group
    pairs = pos.sum() * neg.sum() - both.sum()
    if pairs <= 0:
        return None
    return float((neg * above).sum() + 0.5 * (pos * neg - both).sum()) / pairs


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def estimate_metric(metric: str, proba: np.ndarray, threshold: float | None = None) -> float | None:
    """`metric`'s expected value on these rows, or None where it has no estimate here."""
    proba = np.clip(np.asarray(proba, dtype="float64"), 0.0, 1.0)
    if len(proba) == 0:
        return None
    confusion = expected_confusion(proba, predicted_index(proba, threshold))
    total = confusion.sum()
    binary = proba.shape[1] == 2
    if metric == "accuracy":
        return float(np.trace(confusion) / total)
    if metric == "balanced_accuracy":
        recalls = [_ratio(confusion[k, k], confusion[k].sum()) for k in range(len(confusion))]
        known = [r for r in recalls if r is not None]
        return float(np.mean(known)) if known else None
    if metric == "log_loss":
        return float(expected_log_losses(proba).mean())
    if not binary:
        return None
    tp, fp, fn = confusion[1, 1], confusion[0, 1], confusion[1, 0]
    if metric == "precision":
        return _ratio(tp, tp + fp)
    if metric == "recall":
        return _ratio(tp, tp + fn)
    if metric == "f1":
        return _ratio(2 * tp, 2 * tp + fp + fn)
    if metric == "brier":
        return float((proba[:, 1] * (1 - proba[:, 1])).mean())
    if metric == "roc_auc":
        return expected_roc_auc(proba[:, 1])
    return None  # average_precision, calibration_error: no estimate from the probabilities alone


def estimate_decay(
    metric: str,
    baseline: dict[str, float],
    proba: np.ndarray,
    threshold: float | None,
    config: MonitoringConfig,
    *,
    seed: int = 0,
) -> Decay | None:
    """The estimated metric against its held-out score at training, judged like a realized decay
    (tolerance and the estimate's bootstrap noise); None without an estimate or a baseline."""
    from components.modeling.evaluate import higher_is_better

    reference = baseline.get(f"test_{metric}")
    proba = np.asarray(proba, dtype="float64")
    if reference is None or len(proba) < config.min_rows or proba.ndim != 2:
        return None
    value = estimate_metric(metric, proba, threshold)
    if value is None:
        return None
    sample = np.arange(len(proba)) if len(proba) <= 20_000 else np.random.default_rng(seed).choice(len(proba), 20_000)
    se = bootstrap_se(lambda rows: estimate_metric(metric, proba[sample[rows]], threshold), len(sample), seed, 100)
    se *= float(np.sqrt(len(sample) / len(proba)))
    test_rows = baseline.get("test_rows")
    decay = measure_decay(
        metric,
        float(reference),
        value,
        len(proba),
        config,
        higher_is_better=higher_is_better(metric),
        current_se=se,
        baseline_rows=int(test_rows) if test_rows else None,
    )
    return replace(decay, estimated=True)
