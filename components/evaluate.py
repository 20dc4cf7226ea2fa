"""Evaluation: metrics that stay meaningful for imbalanced and multiclass targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from components.config import LOWER_IS_BETTER_METRICS as LOWER_IS_BETTER


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def compute_metrics(y_true: pd.Series | np.ndarray, proba: np.ndarray, classes: Sequence[Any]) -> dict[str, float]:
    """Held-out metrics from class probabilities (columns ordered as `classes`).

    Labels are compared by position in `classes`, so int, str and bool labels behave alike.
    """
    classes = list(classes)
    position = {label: index for index, label in enumerate(classes)}
    labels = pd.Series(y_true).tolist()
    unknown = sorted({str(label) for label in labels if label not in position})
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's classes {classes}")
    y = np.array([position[label] for label in labels], dtype=np.int64)
    predicted = proba.argmax(axis=1)
    indices = list(range(len(classes)))
    result = {
        "accuracy": skm.accuracy_score(y, predicted),
        "balanced_accuracy": skm.balanced_accuracy_score(y, predicted),
        "log_loss": skm.log_loss(y, proba, labels=indices),
    }
    present = set(y.tolist())
    if len(classes) == 2:
        result["f1"] = skm.f1_score(y, predicted, zero_division=0)
        if len(present) == 2:
            result["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
            result["average_precision"] = skm.average_precision_score(y, proba[:, 1])
    else:
        result["f1"] = skm.f1_score(y, predicted, average="macro", labels=indices, zero_division=0)
        if len(present) == len(classes):
            result["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=indices)
            result["average_precision"] = skm.average_precision_score(
                label_binarize(y, classes=indices), proba, average="macro"
            )
    return {name: float(value) for name, value in result.items()}


def evaluate_model(model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Score a fitted classifier (anything with predict_proba and classes_) on labeled rows."""
    return compute_metrics(y, model.predict_proba(X), model.classes_)
