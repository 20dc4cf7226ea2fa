"""The probability cut-off of a binary classifier, tuned for F1 on out-of-fold probabilities."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from components.modeling.search.crossval import out_of_fold_proba
from components.modeling.train import ThresholdChoice


def tune_threshold(
    y_true: pd.Series | np.ndarray,
    positive_proba: np.ndarray,
    *,
    pos_label: Any,
    metric: Literal["f1"] = "f1",
) -> ThresholdChoice:
    """The probability cut-off that maximizes F1 (binary targets); ties go to the higher threshold.

    Use out-of-fold probabilities: thresholds tuned on in-sample ones are too optimistic.
    """
    if metric != "f1":
        raise ValueError(f"threshold tuning supports metric 'f1' only, got {metric!r}")
    labels = pd.Series(y_true).to_numpy()
    proba = np.asarray(positive_proba, dtype="float64")
    if proba.ndim != 1 or len(proba) != len(labels):
        raise ValueError(f"positive_proba must be 1-D with one value per label; got shape {proba.shape}")
    if not np.isfinite(proba).all():
        raise ValueError("positive_proba holds non-finite values")
    classes = pd.unique(labels)
    if len(classes) > 2:
        raise ValueError(f"threshold tuning is for binary targets; got {len(classes)} classes")
    positive = labels == pos_label
    if positive.all() or not positive.any():
        raise ValueError(f"need both positive ({pos_label!r}) and negative rows; classes present: {list(classes)}")
    precision, recall, thresholds = skm.precision_recall_curve(positive, proba)
    precision, recall = precision[: len(thresholds)], recall[: len(thresholds)]
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    # thresholds ascend: the last of the maxima is the highest threshold.
    best = int(np.flatnonzero(f1 >= f1.max() - 1e-12)[-1])
    return ThresholdChoice(
        threshold=float(thresholds[best]),
        f1=float(f1[best]),
        precision=float(precision[best]),
        recall=float(recall[best]),
    )


def tune_threshold_oof(model: Any, X: pd.DataFrame, y: pd.Series, *, folds: int, seed: int) -> ThresholdChoice | None:
    """The F1-best cut-off of `model` from out-of-fold probabilities on (X, y); None unless the target is binary."""
    if y.nunique() != 2:
        return None
    proba = out_of_fold_proba(model, X, y, folds=folds, seed=seed)
    return tune_threshold(y, proba[:, 1], pos_label=sorted(y.unique())[1])
