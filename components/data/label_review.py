"""Label review: a model's confident mistakes point at mislabeled rows (confident learning).

Classification: out-of-fold probabilities come from cross-validating a reviewer pipeline on the
training split; a row's suspicion is one minus the probability of its given label (cleanlab's
self-confidence score): the most confident mistakes come first.

Regression: out-of-fold predictions; a row's suspicion is how far its residual lies from the
residuals of rows predicted alike (a robust z-score: median and MAD within quantile bins of the
prediction, since errors usually grow with the value).

The reviewer and the cut are chosen for detection quality, on the data itself (`review_labels`):
`INJECTED` of the labels are replaced at known rows (another class; another row's value), every
candidate reviewer (the searched families, and their average) is cross-validated on that copy,
the one that ranks the replaced labels highest (average precision) reviews, and rows are flagged
down to the deepest cut whose estimated precision reaches `target_precision`: the replaced
labels measure a cut's recall, and the table's own errors (assumed `error_rate` of its rows, found
at that recall) are set against every other row the cut flags. Where no cut gets there, a table's
labels are too ambiguous for a reviewer to tell errors from noise: nothing is flagged, and the
summary says so with the best precision seen.
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
INJECTED = 0.05  # share of labels replaced at known rows to measure each reviewer
MIN_FLAGGED = 5  # a cut is judged on at least this many replaced labels found ...
MIN_RECALL = 0.1  # ... and at least this share of them: a thinner cut's estimate is noise
AVERAGE = "average"
RESIDUAL_Z = 3.5  # a residual this many robust standard deviations from the median may be a wrong label
INJECTION_STREAM = 0x1ABE1  # its own random stream: a plain `seed` stream may pick the very rows a user flipped


class LabelReviewError(ValueError):
    """The training split is too small, or too thin in some class, for out-of-fold review."""


COLUMNS = ["row", "id", "given_label", "predicted_label", "confidence", "given_label_probability"]
REGRESSION_COLUMNS = ["row", "id", "given_label", "predicted_label", "residual", "robust_z"]


@dataclass(frozen=True)
class LabelReview:
    """Flagged rows (most confident mistakes first) and what was reviewed."""

    issues: pd.DataFrame
    reviewed_rows: int
    total_rows: int
    folds: int
    per_class: dict[str, int] = field(default_factory=dict)
    reviewer: str = ""
    detection: dict[str, float] = field(default_factory=dict)  # reviewer -> average precision on replaced labels
    estimated_precision: float | None = None  # of the flags, from the replaced labels (None: nothing to flag)
    estimated_recall: float | None = None
    note: str = ""

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
            "reviewer": self.reviewer,
            "detection_average_precision": self.detection,
            "estimated_precision": self.estimated_precision,
            "estimated_recall": self.estimated_recall,
            "note": self.note,
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


def _replace_labels(y: pd.Series, rng: np.random.Generator, regression: bool) -> tuple[pd.Series, np.ndarray]:
    """A copy of `y` with `INJECTED` of its labels replaced at known positions: another class, or
    (regression) the value of another row drawn at random, at least one IQR away."""
    n = len(y)
    count = max(1, round(INJECTED * n))
    rows = rng.choice(n, size=count, replace=False)
    values = y.to_numpy().copy()
    if regression:
        numbers = values.astype("float64")
        q25, q75 = np.quantile(numbers, [0.25, 0.75])
        gap = max(float(q75 - q25), 1e-12)
        for row in rows:
            far = np.flatnonzero(np.abs(numbers - numbers[row]) >= gap)
            values[row] = numbers[rng.choice(far)] if len(far) else numbers[row] + gap
    else:
        classes = np.array(sorted(pd.unique(y)))
        for row in rows:
            values[row] = rng.choice(classes[classes != values[row]])
    return pd.Series(values, index=y.index, name=y.name), rows


def _out_of_fold(model: Pipeline, X: pd.DataFrame, y: pd.Series, folds: int, seed: int, regression: bool) -> np.ndarray:
    """Every row's out-of-fold answer: predicted values, or class probabilities."""
    if regression:
        from sklearn.model_selection import KFold

        cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
        return np.asarray(cross_val_predict(clone(model), X, y, cv=cv, n_jobs=1), dtype="float64")
    return out_of_fold_probabilities(model, X, y, folds, seed)[0]


def _self_suspicion(probabilities: np.ndarray, classes: np.ndarray, y: pd.Series) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    labels = np.searchsorted(classes, y.to_numpy())
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    return 1.0 - np.asarray(quality, dtype="float64")


def _residual_z(given: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    residual = given - predicted
    return np.abs(residual - np.median(residual)) / _local_spread(residual, predicted)


def _cut(
    suspicion: np.ndarray, replaced: np.ndarray, target: float, error_rate: float
) -> tuple[int | None, float, float, float]:
    """(rows flagged besides the replaced ones, estimated precision, estimated recall, best precision
    seen) of the deepest cut whose estimated precision reaches `target` (None if none does).

    The replaced labels give the recall of a cut (the share of them above it). The rows not
    replaced hold the table's own errors, assumed `error_rate` of them and found at that recall,
    among the clean rows the cut also flags: precision = error_rate x rows x recall / flagged.
    """
    order = np.argsort(-suspicion, kind="stable")
    hits = np.cumsum(replaced[order])
    others = np.cumsum(~replaced[order])
    total = max(int(replaced.sum()), 1)
    recall = hits / total
    expected = error_rate * int((~replaced).sum()) * recall
    precision = np.where(others > 0, np.minimum(1.0, expected / np.maximum(others, 1)), 1.0)
    judged = (hits >= max(MIN_FLAGGED, MIN_RECALL * total)) & (others >= 1)
    best = float(precision[judged].max()) if judged.any() else 0.0
    good = np.flatnonzero(judged & (precision >= target))
    if not len(good):
        return None, 0.0, 0.0, best
    k = int(good[-1])
    return int(others[k]), float(precision[k]), float(recall[k]), best


def _fold_count(y: pd.Series, folds: int, regression: bool) -> int:
    """The folds review can use: at most half the rows (regression), or the smallest class's rows."""
    if regression:
        if len(y) < MIN_REGRESSION_ROWS:
            raise LabelReviewError(f"label review needs at least {MIN_REGRESSION_ROWS} training rows; got {len(y)}")
        return min(folds, len(y) // 2)
    counts = y.value_counts()
    if len(counts) < 2 or int(counts.min()) < MIN_ROWS_PER_CLASS:
        raise LabelReviewError(
            f"label review needs at least {MIN_ROWS_PER_CLASS} training rows per class; got {counts.to_dict()}"
        )
    return min(folds, int(counts.min()))


def _suspicion(answer: np.ndarray, labels: pd.Series, classes: np.ndarray, regression: bool) -> np.ndarray:
    """How wrong each label looks: its residual's robust z-score, or one minus its probability."""
    if regression:
        return _residual_z(labels.to_numpy(dtype="float64"), answer)
    return _self_suspicion(answer, classes, labels)


@dataclass(frozen=True)
class _Detection:
    """Each reviewer's out-of-fold answers on the labels with replacements, how well each ranked the
    replaced ones (average precision), the best of them and the cut it allows (see `_cut`)."""

    answers: dict[str, np.ndarray]
    scores: dict[str, float]
    chosen: str
    classes: np.ndarray
    count: int | None
    precision: float
    recall: float
    best: float


def _detect(
    candidates: dict[str, Pipeline],
    X: pd.DataFrame,
    y: pd.Series,
    *,
    folds: int,
    seed: int,
    regression: bool,
    target_precision: float,
    error_rate: float,
) -> _Detection:
    """Replace labels at known rows, cross-validate every candidate on that copy, and keep the one
    that ranks the replaced labels highest."""
    from sklearn.metrics import average_precision_score

    noisy, rows = _replace_labels(y, np.random.default_rng([seed, INJECTION_STREAM]), regression)
    replaced = np.zeros(len(y), dtype=bool)
    replaced[rows] = True
    answers = {name: _out_of_fold(model, X, noisy, folds, seed, regression) for name, model in candidates.items()}
    if len(answers) > 1:
        answers[AVERAGE] = np.mean(list(answers.values()), axis=0)
    classes = np.array(sorted(pd.unique(noisy)))
    scores = {
        name: round(float(average_precision_score(replaced, _suspicion(answer, noisy, classes, regression))), 4)
        for name, answer in answers.items()
    }
    chosen = max(scores, key=lambda name: scores[name])
    suspicion = _suspicion(answers[chosen], noisy, classes, regression)
    count, precision, recall, best = _cut(suspicion, replaced, target_precision, error_rate)
    return _Detection(answers, scores, chosen, classes, count, precision, recall, best)


@dataclass(frozen=True)
class _Flags:
    """The reviewer's answers on the labels as given, each row's suspicion, and the flagged rows."""

    answer: np.ndarray
    suspicion: np.ndarray
    flagged: np.ndarray


def _flag(
    found: _Detection,
    candidates: dict[str, Pipeline],
    X: pd.DataFrame,
    y: pd.Series,
    *,
    folds: int,
    seed: int,
    regression: bool,
) -> _Flags:
    """The rows the chosen reviewer flags on the labels as given (none when no cut reached the target)."""
    if found.count is None:
        answer = found.answers[found.chosen]
        return _Flags(answer, _suspicion(answer, y, found.classes, regression), np.array([], dtype=int))
    # The flags are on the labels as given: as many rows as the cut flagged besides the replaced
    # ones, ranked by the chosen reviewer cross-validated on these labels (models that learned
    # from fewer wrong labels rank the wrong ones higher, so precision is at least the estimate's).
    members = list(candidates) if found.chosen == AVERAGE else [found.chosen]
    answer = np.mean([_out_of_fold(candidates[m], X, y, folds, seed, regression) for m in members], axis=0)
    given = _suspicion(answer, y, found.classes, regression)
    flagged = np.argsort(-given, kind="stable")[: found.count]
    # ... and only rows the reviewer itself finds wrong: a residual beyond `RESIDUAL_Z` robust
    # standard deviations, or another class more likely than the given one.
    if regression:
        flagged = flagged[given[flagged] > RESIDUAL_Z]
    else:
        labels = np.searchsorted(found.classes, y.to_numpy())
        flagged = flagged[answer[flagged].argmax(axis=1) != labels[flagged]]
    return _Flags(answer, given, flagged)


def _per_class(issues: pd.DataFrame, regression: bool) -> dict[str, int]:
    """Flagged rows per given class, or above and below their prediction (regression)."""
    if regression:
        return {
            "above_prediction": int((issues["residual"] > 0).sum()),
            "below_prediction": int((issues["residual"] < 0).sum()),
        }
    return {str(k): int(v) for k, v in issues["given_label"].value_counts().sort_index().items()}


def review_labels(
    reviewers: Pipeline | dict[str, Pipeline],
    X: pd.DataFrame,
    y: pd.Series,
    *,
    ids: pd.Series | None = None,
    folds: int = 5,
    seed: int = 0,
    max_rows: int | None = None,
    regression: bool = False,
    target_precision: float = 0.8,
    error_rate: float = INJECTED,
) -> LabelReview:
    """Find likely label errors in (X, y) with the reviewer that detects them best; at most
    `max_rows` rows (a seeded sample) are reviewed. See the module's docstring."""
    total = len(X)
    if max_rows is not None and total > max_rows:
        keep = X.sample(n=max_rows, random_state=seed).index
        X, y = X.loc[keep], y.loc[keep]
        ids = ids.loc[keep] if ids is not None else None
    candidates = reviewers if isinstance(reviewers, dict) else {"reviewer": reviewers}
    folds = _fold_count(y, folds, regression)
    found = _detect(
        candidates,
        X,
        y,
        folds=folds,
        seed=seed,
        regression=regression,
        target_precision=target_precision,
        error_rate=error_rate,
    )
    note = ""
    if found.count is None:
        note = (
            f"no cut flags labels with precision {target_precision:.0%} on this table (best {found.best:.0%} with "
            f"{found.chosen}): its labels are too ambiguous to tell errors from noise; nothing flagged"
        )
    flags = _flag(found, candidates, X, y, folds=folds, seed=seed, regression=regression)
    ranked = flags.flagged[np.argsort(-flags.suspicion[flags.flagged], kind="stable")]
    issues = _issues(flags.answer, found.classes, X, y, ids, ranked, flags.suspicion, regression)
    return LabelReview(
        issues=issues,
        reviewed_rows=len(X),
        total_rows=total,
        folds=folds,
        per_class=_per_class(issues, regression),
        reviewer=found.chosen,
        detection=found.scores,
        estimated_precision=None if found.count is None else round(found.precision, 4),
        estimated_recall=None if found.count is None else round(found.recall, 4),
        note=note,
    )


def _issues(
    answer: np.ndarray,
    classes: np.ndarray,
    X: pd.DataFrame,
    y: pd.Series,
    ids: pd.Series | None,
    ranked: np.ndarray,
    suspicion: np.ndarray,
    regression: bool,
) -> pd.DataFrame:
    row_ids = ids.to_numpy()[ranked] if ids is not None else X.index[ranked]
    if regression:
        given = y.to_numpy(dtype="float64")
        residual = given - answer
        return pd.DataFrame(
            {
                "row": X.index[ranked],
                "id": row_ids,
                "given_label": given[ranked],
                "predicted_label": answer[ranked].round(6),
                "residual": residual[ranked].round(6),
                "robust_z": suspicion[ranked].round(3),
            },
            columns=REGRESSION_COLUMNS,
        )
    labels = np.searchsorted(classes, y.to_numpy())
    predicted = answer[ranked].argmax(axis=1)
    return pd.DataFrame(
        {
            "row": X.index[ranked],
            "id": row_ids,
            "given_label": classes[labels[ranked]],
            "predicted_label": classes[predicted],
            "confidence": answer[ranked, predicted].round(6),
            "given_label_probability": answer[ranked, labels[ranked]].round(6),
        },
        columns=COLUMNS,
    )


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
