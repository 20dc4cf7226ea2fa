"""Regression performance without labels: the model's errors predicted from its inputs and answers.

Direct loss estimation (DLE, as NannyML does it): at training time the model's errors on rows it
was not fitted on (the held-out rows, and the training rows' out-of-fold answers) are stored with
it, beside their features and its answers (`RESIDUALS_ARTIFACT`). Monitoring fits a small
gradient-boosted model of those errors (squared and absolute) on the features plus the answer,
predicts the expected error of every row of an unlabelled window, and turns the means into the
metric: RMSE from the mean squared error, MAE from the mean absolute error, R² as 1 - MSE /
(variance of the answers + MSE) (the target's variance taken as the answers' plus the errors', as
for a least-squares fit whose errors are uncorrelated with its answers). Like CBPE for classifiers
it follows covariate shift (errors that grow in some region of the inputs are expected there), not
a change in the concept itself: the realized metric is shown beside it once labels arrive. MAPE has
no estimate (it needs the true values' scale).

The errors stored are those of models fitted on fewer rows than the served one (the out-of-fold
folds, the model the gate judged), so the estimate leans a little pessimistic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import MonitoringConfig
from components.monitoring.monitor.decay import Decay, bootstrap_se, measure_decay
from components.monitoring.monitor.reference import SCORE_COLUMN

RESIDUALS_ARTIFACT = "monitoring/residuals.parquet"
SQUARED, ABSOLUTE = "_squared_error", "_absolute_error"
ESTIMATED = ("rmse", "mae", "r2")


def build_residuals(X: pd.DataFrame, predicted: np.ndarray, truth: pd.Series, rows: int, seed: int) -> pd.DataFrame:
    """Held-out features with the model's answers and errors (at most `rows` of them)."""
    frame = X.reset_index(drop=True).copy()
    predicted = np.asarray(predicted, dtype="float64")
    error = predicted - pd.to_numeric(pd.Series(truth), errors="coerce").to_numpy(dtype="float64")
    frame[SCORE_COLUMN], frame[SQUARED], frame[ABSOLUTE] = predicted, error**2, np.abs(error)
    frame = frame[np.isfinite(error)]
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=seed)
    return frame.reset_index(drop=True)


def _matrix(frame: pd.DataFrame, columns: list[str], categories: dict[str, list[str]]) -> np.ndarray:
    """Numbers as they are, categories as their index among those seen at fit (NaN otherwise)."""
    out = np.full((len(frame), len(columns)), np.nan)
    for j, name in enumerate(columns):
        if name not in frame.columns:
            continue
        values = frame[name]
        if name in categories:
            text = pd.Index(values.astype(str).where(values.notna()))
            codes = pd.Index(categories[name], dtype=object).get_indexer(text)
            out[:, j] = np.where(codes >= 0, codes, np.nan)  # -1: missing, or a category not seen at fit
        else:
            out[:, j] = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    return out


@dataclass(frozen=True)
class LossModel:
    """Models of a regressor's squared and absolute error given its inputs and answer."""

    columns: list[str]
    categories: dict[str, list[str]]
    squared: Any
    absolute: Any

    @classmethod
    def fit(cls, residuals: pd.DataFrame, seed: int = 0) -> LossModel:
        from sklearn.ensemble import HistGradientBoostingRegressor

        features = [  # times are left out: a window's are all new
            c
            for c in residuals.columns
            if c not in (SQUARED, ABSOLUTE) and not pd.api.types.is_datetime64_any_dtype(residuals[c])
        ]
        categories = {
            c: sorted(residuals[c].dropna().astype(str).unique())[:250]
            for c in features
            if c != SCORE_COLUMN and not pd.api.types.is_numeric_dtype(residuals[c])
        }
        X = _matrix(residuals, features, categories)
        mask = [c in categories for c in features]
        leaf = max(20, len(residuals) // 50)

        def model(target: str) -> Any:
            estimator = HistGradientBoostingRegressor(
                max_iter=100,
                learning_rate=0.05,
                max_leaf_nodes=8,
                min_samples_leaf=leaf,
                l2_regularization=1.0,
                categorical_features=mask if any(mask) else None,
                random_state=seed,
            )
            return estimator.fit(X, residuals[target].to_numpy(dtype="float64"))

        return cls(features, categories, model(SQUARED), model(ABSOLUTE))

    def predict(self, frame: pd.DataFrame, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's expected squared and absolute error."""
        rows = frame.reset_index(drop=True).assign(**{SCORE_COLUMN: np.asarray(predicted, dtype="float64")})
        X = _matrix(rows, self.columns, self.categories)
        return self.squared.predict(X).clip(min=0.0), self.absolute.predict(X).clip(min=0.0)


def estimate_from_losses(metric: str, squared: np.ndarray, absolute: np.ndarray, predicted: np.ndarray) -> float | None:
    """`metric` from the rows' expected errors (None where it has no estimate)."""
    if not len(squared):
        return None
    mse = float(np.mean(squared))
    if metric == "rmse":
        return float(np.sqrt(mse))
    if metric == "mae":
        return float(np.mean(absolute))
    if metric == "r2":
        total = float(np.var(predicted)) + mse
        return 1.0 - mse / total if total > 0 else None
    return None


def estimate_loss_decay(
    metric: str,
    baseline: dict[str, float],
    frame: pd.DataFrame,
    predicted: np.ndarray,
    residuals: pd.DataFrame,
    config: MonitoringConfig,
    *,
    seed: int = 0,
) -> Decay | None:
    """The regressor's metric estimated on an unlabelled window against its held-out score, judged
    like a realized decay; None without an estimate for `metric`, a baseline or enough rows."""
    from components.modeling.evaluate import higher_is_better

    reference = baseline.get(f"test_{metric}")
    predicted = np.asarray(predicted, dtype="float64")
    if metric not in ESTIMATED or reference is None or len(predicted) < config.min_rows or len(residuals) < 20:
        return None
    squared, absolute = LossModel.fit(residuals, seed).predict(frame, predicted)
    value = estimate_from_losses(metric, squared, absolute, predicted)
    if value is None:
        return None
    n = len(predicted)
    sample = np.arange(n) if n <= 20_000 else np.random.default_rng(seed).choice(n, 20_000)

    def again(rows: np.ndarray) -> float | None:
        picked = sample[rows]
        return estimate_from_losses(metric, squared[picked], absolute[picked], predicted[picked])

    se = bootstrap_se(again, len(sample), seed, 100) * float(np.sqrt(len(sample) / n))
    test_rows = baseline.get("test_rows")
    decay = measure_decay(
        metric,
        float(reference),
        value,
        n,
        config,
        higher_is_better=higher_is_better(metric),
        current_se=se,
        baseline_rows=int(test_rows) if test_rows else None,
    )
    return replace(decay, estimated=True)
