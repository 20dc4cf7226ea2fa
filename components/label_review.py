"""Label review: a model's confident mistakes point at mislabeled rows (confident learning).

Classification: out-of-fold probabilities come from cross-validating the same pipeline on the
training split; cleanlab's `find_label_issues` picks the rows whose given label the model finds
implausible, ranked by self-confidence (the probability of the given label, lowest first): the
most confident mistakes come first.

Regression: out-of-fold predictions of the same pipeline; a row is flagged when its residual is
an outlier among the residuals of rows predicted alike (robust z-score over `RESIDUAL_Z`: median
and MAD within quantile bins of the prediction, since errors usually grow with the value), ranked
by cleanlab's regression label quality score (lowest first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline

MIN_ROWS_PER_CLASS = 5
MIN_REGRESSION_ROWS = 20
RESIDUAL_Z = 3.5  # a residual this many robust standard deviations from the median is suspect


class LabelReviewError(ValueError):
    """The training split is too small, or too thin in some class, for out-of-fold review."""


COLUMNS = ["row", "id", "given_label", "predicted_label", "confidence", "given_label_probability"]
REGRESSION_COLUMNS = ["row", "id", "given_label", "predicted_label", "residual", "robust_z", "label_quality"]


@dataclass(frozen=True)
class LabelReview:
    """Flagged rows (most confident mistakes first) and what was reviewed."""

    issues: pd.DataFrame
    reviewed_rows: int
    total_rows: int
    folds: int
    per_class: dict[str, int] = field(default_factory=dict)

    @property
    def flagged_index(self) -> pd.Index:
        """Index labels (of the training frame) of the flagged rows."""
        return pd.Index(self.issues["row"])

    def summary(self) -> dict[str, Any]:
        return {
            "reviewed_rows": self.reviewed_rows,
            "total_rows": self.total_rows,
            "folds": self.folds,
            "flagged": len(self.issues),
            "flagged_share": round(len(self.issues) / max(self.reviewed_rows, 1), 6),
            "flagged_per_given_class": self.per_class,
        }


def out_of_fold_probabilities(
    model: Pipeline, X: pd.DataFrame, y: pd.Series, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(probabilities, classes, folds used): each row scored by a copy of `model` that never saw it.

    The folds are capped by the smallest class, so each fold can hold out every class.
    """
    classes = np.array(sorted(pd.unique(y)))
    counts = y.value_counts()
    if len(counts) < 2 or int(counts.min()) < MIN_ROWS_PER_CLASS:
        raise LabelReviewError(
            f"label review needs at least {MIN_ROWS_PER_CLASS} training rows per class; got {counts.to_dict()}"
        )
    folds = min(folds, int(counts.min()))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(clone(model), X, y, cv=cv, method="predict_proba")
    return probabilities, classes, folds


def review_labels(
    model: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    ids: pd.Series | None = None,
    folds: int = 5,
    seed: int = 0,
    max_rows: int | None = None,
    regression: bool = False,
) -> LabelReview:
    """Find likely label errors in (X, y); at most `max_rows` rows (a seeded sample) are reviewed."""
    from cleanlab.filter import find_label_issues

    total = len(X)
    if max_rows is not None and total > max_rows:
        keep = X.sample(n=max_rows, random_state=seed).index
        X, y = X.loc[keep], y.loc[keep]
        ids = ids.loc[keep] if ids is not None else None
    if regression:
        return _review_regression(model, X, y, ids, folds, seed, total)
    probabilities, classes, folds = out_of_fold_probabilities(model, X, y, folds, seed)
    labels = np.searchsorted(classes, y.to_numpy())
    # n_jobs=1: cleanlab otherwise forks a multiprocessing pool, and forking a process that runs
    # threads (Prefect's, MLflow's) can leave a worker blocked on a lock copied mid-use: a hung run.
    ranked = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
    ranked = np.asarray(ranked, dtype=int)
    predicted = probabilities[ranked].argmax(axis=1)
    issues = pd.DataFrame(
        {
            "row": X.index[ranked],
            "id": (ids.to_numpy()[ranked] if ids is not None else X.index[ranked]),
            "given_label": classes[labels[ranked]],
            "predicted_label": classes[predicted],
            "confidence": probabilities[ranked, predicted].round(6),
            "given_label_probability": probabilities[ranked, labels[ranked]].round(6),
        },
        columns=COLUMNS,
    )
    per_class = {str(k): int(v) for k, v in issues["given_label"].value_counts().sort_index().items()}
    return LabelReview(
        issues=issues,
        reviewed_rows=len(X),
        total_rows=total,
        folds=folds,
        per_class=per_class,
    )


def _review_regression(
    model: Pipeline, X: pd.DataFrame, y: pd.Series, ids: pd.Series | None, folds: int, seed: int, total: int
) -> LabelReview:
    """Rows whose out-of-fold residual is an outlier, worst label quality first."""
    from cleanlab.regression.rank import get_label_quality_scores
    from sklearn.model_selection import KFold

    if len(X) < MIN_REGRESSION_ROWS:
        raise LabelReviewError(f"label review needs at least {MIN_REGRESSION_ROWS} training rows; got {len(X)}")
    folds = min(folds, len(X) // 2)
    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    given = y.to_numpy(dtype="float64")
    predicted = np.asarray(cross_val_predict(clone(model), X, y, cv=cv, n_jobs=1), dtype="float64")
    residual = given - predicted
    robust_z = np.abs(residual - np.median(residual)) / _local_spread(residual, predicted)
    quality = np.asarray(get_label_quality_scores(given, predicted), dtype="float64")
    flagged = np.flatnonzero(robust_z > RESIDUAL_Z)
    ranked = flagged[np.argsort(quality[flagged], kind="stable")]
    issues = pd.DataFrame(
        {
            "row": X.index[ranked],
            "id": (ids.to_numpy()[ranked] if ids is not None else X.index[ranked]),
            "given_label": given[ranked],
            "predicted_label": predicted[ranked].round(6),
            "residual": residual[ranked].round(6),
            "robust_z": robust_z[ranked].round(3),
            "label_quality": quality[ranked].round(6),
        },
        columns=REGRESSION_COLUMNS,
    )
    per_side = {
        "above_prediction": int((issues["residual"] > 0).sum()),
        "below_prediction": int((issues["residual"] < 0).sum()),
    }
    return LabelReview(issues=issues, reviewed_rows=len(X), total_rows=total, folds=folds, per_class=per_side)


def _local_spread(residual: np.ndarray, predicted: np.ndarray, bins: int = 10, min_rows: int = 30) -> np.ndarray:
    """1.4826 x the MAD of the residuals within quantile bins of the prediction, per row (a robust
    standard deviation that follows how errors grow with the predicted value)."""

    def mad(values: np.ndarray) -> float:
        return 1.4826 * float(np.median(np.abs(values - np.median(values))))

    overall = mad(residual) or float(np.std(residual)) or 1.0
    count = max(1, min(bins, len(residual) // min_rows))
    edges = np.unique(np.quantile(predicted, np.linspace(0, 1, count + 1)[1:-1]))
    which = np.searchsorted(edges, predicted, side="right")
    spread = np.full(len(residual), overall)
    for group in np.unique(which):
        members = which == group
        local = mad(residual[members])
        spread[members] = local if local > 0 else overall
    return spread
