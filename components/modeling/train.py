"""Training: the whole preprocessing + estimator as one scikit-learn Pipeline, for any task.

`fit_final_model` fits the chosen configuration on the whole training split and adds what the
task's answers need, each from out-of-fold predictions of that same configuration: a recalibration
of class probabilities (when class weights or the family distort them), the binary decision
threshold, and for regression the half-width of a split-conformal prediction interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    VotingClassifier,
    VotingRegressor,
)
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import FixedThresholdClassifier, cross_val_predict
from sklearn.pipeline import Pipeline

from components.core.config import LabelReviewConfig, ModelConfig
from components.core.errors import UserError
from components.modeling.prepare import FeatureSpec, build_preprocessor
from components.modeling.tasks import TASKS, Task

_DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"max_iter": 2000, "C": 1.0},
    "ridge": {"alpha": 1.0},
    # n_jobs=1: parallel tree prediction adds tens of ms per single-row request in serving.
    "random_forest": {"n_estimators": 200, "min_samples_leaf": 2, "n_jobs": 1},
    # scikit-learn's own defaults: early stopping (on a tenth of the rows) only above 10,000 rows, where
    # it is reliable; on a few hundred rows a 10% validation split stopped too early and was noisy
    # (Auto MPG: 0.72 vs 0.74 accuracy). The search tunes max_iter with the learning rate.
    "hist_gradient_boosting": {"max_iter": 100, "learning_rate": 0.1, "early_stopping": "auto"},
}
_CLASSIFIERS: dict[str, type] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
}
_REGRESSORS: dict[str, type] = {
    "ridge": Ridge,
    "random_forest": RandomForestRegressor,
    "hist_gradient_boosting": HistGradientBoostingRegressor,
}
ISOTONIC_MIN_ROWS = 1000  # isotonic calibration overfits on fewer rows; sigmoid (Platt) is used below


class TrainingError(UserError, ValueError):
    """The estimator could not be built or fitted with the given settings."""


def family_for(estimator: str, task: Task | None = None) -> str:
    """The concrete family of a configured name: `linear` is logistic regression or ridge."""
    task = task or TASKS["binary"]
    if estimator == "linear":
        return "logistic_regression" if task.classification else "ridge"
    known = _CLASSIFIERS if task.classification else _REGRESSORS
    if estimator not in known:
        kind = "classification" if task.classification else "regression"
        raise TrainingError(f"{estimator!r} is not a {kind} model family; choose one of {['linear', *known]}")
    return estimator


def families_of(config: ModelConfig, task: Task | None = None) -> tuple[str, ...]:
    """The concrete families a config asks for: every one of `families` under `auto`, else the one."""
    names = config.families if config.estimator == "auto" else (config.estimator,)
    return tuple(dict.fromkeys(family_for(name, task) for name in names))


def default_params(estimator: str) -> dict[str, Any]:
    """The project's defaults for an estimator family (the search's first trial)."""
    return dict(_DEFAULTS[estimator])


def class_weight_for(config: ModelConfig, y: pd.Series) -> str | None:
    """'balanced' when configured, or under 'auto' when the rarest class is under the threshold."""
    if config.class_weight == "none":
        return None
    if config.class_weight == "balanced":
        return "balanced"
    shares = y.value_counts(normalize=True)
    return "balanced" if len(shares) > 1 and float(shares.min()) < config.imbalance_threshold else None


def with_class_weight(config: ModelConfig, y: pd.Series, task: Task | None = None) -> ModelConfig:
    """The config with `class_weight` set when `class_weight_for` asks for it (a pinned value wins)."""
    if task is not None and not task.classification:
        return config
    weight = class_weight_for(config, y)
    if weight is None:
        return config
    if config.estimator == "auto":
        params = {f: {"class_weight": weight, **config.params.get(f, {})} for f in config.families}
        return config.model_copy(update={"params": {**config.params, **params}})
    if "class_weight" in config.params:
        return config
    return config.model_copy(update={"params": {**config.params, "class_weight": weight}})


def build_estimator(config: ModelConfig, seed: int, task: Task | None = None) -> Any:
    """The configured estimator (the first of `families` under `auto`) with the project's defaults
    under the user's params."""
    task = task or TASKS["binary"]
    configured = config.families[0] if config.estimator == "auto" else config.estimator
    family = family_for(configured, task)
    cls = (_CLASSIFIERS if task.classification else _REGRESSORS)[family]
    params = {**_DEFAULTS[family], **config.family_params(configured), "random_state": seed}
    if family == "ridge" and params.get("solver", "auto") not in ("sag", "saga"):
        params.pop("random_state")  # only the stochastic solvers draw numbers
    try:
        return cls(**params)
    except TypeError as exc:
        raise TrainingError(f"invalid params for {family}: {exc}") from exc


def build_model(
    spec: FeatureSpec,
    config: ModelConfig | Sequence[ModelConfig],
    seed: int,
    clip: dict[str, tuple[float, float]] | None = None,
    task: Task | None = None,
) -> Any:
    """The preprocessing + estimator Pipeline of a config; for several (an ensemble), their pipelines
    averaged: soft voting of probabilities, or the mean of predictions."""
    if not isinstance(config, ModelConfig):
        members = list(config)
        if len(members) == 1:
            return build_model(spec, members[0], seed, clip, task)
        named = [(m.estimator, build_model(spec, m, seed, clip, task)) for m in members]
        if task is not None and not task.classification:
            return VotingRegressor(named)
        return VotingClassifier(named, voting="soft")
    return Pipeline(
        [
            ("preprocess", build_preprocessor(spec, config.max_categories, clip)),
            ("model", build_estimator(config, seed, task)),
        ]
    )


ENSEMBLE = "ensemble"


def member_configs(config: ModelConfig, params: dict[str, Any], family: str | None = None) -> tuple[ModelConfig, ...]:
    """The configs a search's chosen params stand for: one family's, or each member's of an ensemble.

    A one-family search leaves `estimator` out of its params: `family` names it then.
    """
    params = dict(params)
    family = params.pop("estimator", family)
    if family == ENSEMBLE:
        return tuple(m for member in params["members"] for m in member_configs(config, member))
    base = config if family is None else config_for_family(config, family)
    return (base.model_copy(update={"params": {**base.params, **params}}),)


def model_factory(
    spec: FeatureSpec,
    config: ModelConfig,
    seed: int,
    clip: dict[str, tuple[float, float]] | None = None,
    task: Task | None = None,
) -> Callable[[dict[str, Any]], Pipeline]:
    """Unfitted pipelines with some params replaced: what a hyperparameter search tries.

    A trial's `estimator` entry names its family (a search across families) and the rest are that
    family's params; `ensemble` with `members` (each such params) averages several.
    """

    def factory(params: dict[str, Any]) -> Any:
        return build_model(spec, member_configs(config, params), seed, clip, task)

    return factory


def config_for_family(config: ModelConfig, family: str) -> ModelConfig:
    """One family of an `auto` config, with that family's fixed params."""
    if config.estimator == "auto":
        own = config.params.get(family) or config.params.get(
            "linear" if family in ("logistic_regression", "ridge") else ""
        )
        return config.model_copy(update={"estimator": family, "params": dict(own or {})})
    return config.model_copy(update={"estimator": family})


def train_model(
    X_train: pd.DataFrame,
    y_train: pd.Series,
    spec: FeatureSpec,
    config: ModelConfig,
    seed: int,
    clip: dict[str, tuple[float, float]] | None = None,
    threshold: float | None = None,
    task: Task | None = None,
) -> Any:
    """Fit preprocessing and estimator together on the training split only.

    With a `threshold` (binary targets), the Pipeline is wrapped in a FixedThresholdClassifier,
    so the tuned cut-off travels inside the model artifact and every consumer predicts with it.
    """
    model: Any = build_model(spec, config, seed, clip, task)
    if threshold is not None and y_train.nunique() == 2:
        model = FixedThresholdClassifier(model, threshold=threshold, response_method="predict_proba")
    try:
        model.fit(X_train, y_train)
    except ValueError as exc:
        raise TrainingError(f"training {config.estimator} failed: {exc}") from exc
    return model


def describe_members(members: Sequence[ModelConfig]) -> str:
    """A model's family, or an ensemble's: 'hist_gradient_boosting', 'ensemble(logistic_regression+...)'."""
    names = [m.estimator for m in members]
    return names[0] if len(names) == 1 else f"{ENSEMBLE}({'+'.join(names)})"


@dataclass(frozen=True)
class ThresholdChoice:
    """A binary decision threshold (positive when its probability >= threshold) and its scores."""

    threshold: float
    f1: float
    precision: float
    recall: float


@dataclass(frozen=True)
class PredictionInterval:
    """A split-conformal interval: prediction ± half_width covers `coverage` of new rows."""

    coverage: float
    half_width: float
    calibration_rows: int


@dataclass(frozen=True)
class FinalModel:
    """The fitted model and what its answers carry."""

    model: Any
    threshold: ThresholdChoice | None = None
    calibration: str | None = None  # sigmoid | isotonic when probabilities were recalibrated
    interval: PredictionInterval | None = None
    out_of_fold: np.ndarray | None = None  # a regressor's out-of-fold answers on its training rows, where computed


def calibration_method(setting: str, members: Sequence[ModelConfig], y: pd.Series, task: Task) -> str | None:
    """Which recalibration the classifier's probabilities get, if any."""
    if not task.classification or setting == "none":
        return None
    if setting in ("sigmoid", "isotonic"):
        return setting
    weighted = any(m.params.get("class_weight") not in (None, "none") for m in members)
    if not weighted and all(family_for(m.estimator, task) != "random_forest" for m in members):
        return None
    return "isotonic" if len(y) >= ISOTONIC_MIN_ROWS * y.nunique() else "sigmoid"


def _decision_values(model: Any, X: pd.DataFrame, y: pd.Series, cv: Any) -> np.ndarray:
    """Out-of-fold scores as CalibratedClassifierCV computes them (decision function first)."""
    method = "decision_function" if hasattr(model, "decision_function") else "predict_proba"
    values = np.asarray(cross_val_predict(model, X, y, cv=cv, method=method, n_jobs=1))
    return values[:, 1] if method == "predict_proba" and values.ndim == 2 else values


def conformal_half_width(y: np.ndarray, predicted: np.ndarray, coverage: float) -> float:
    """The split-conformal quantile of absolute residuals: the ceil((n+1)·coverage)-th smallest."""
    residuals = np.sort(np.abs(np.asarray(y, dtype="float64") - np.asarray(predicted, dtype="float64")))
    rank = int(np.ceil((len(residuals) + 1) * coverage))
    return float(residuals[min(rank, len(residuals)) - 1])


def fit_final_model(
    X: pd.DataFrame,
    y: pd.Series,
    spec: FeatureSpec,
    config: ModelConfig | Sequence[ModelConfig],
    seed: int,
    *,
    task: Task,
    folds: int,
    clip: dict[str, tuple[float, float]] | None = None,
    tune_threshold: Callable[[pd.Series, np.ndarray], ThresholdChoice] | None = None,
) -> FinalModel:
    """Fit `config` (one family) on all training rows, with calibration, threshold and interval.

    All three come from out-of-fold predictions of the same configuration on the training rows:
    the recalibration map (CalibratedClassifierCV with ensemble=False), the F1-best threshold on
    recalibrated probabilities, and the conformal quantile of absolute residuals.
    """
    members = (config,) if isinstance(config, ModelConfig) else tuple(config)
    first = members[0]
    pipeline = build_model(spec, members, seed, clip, task)
    cv = task.folds(y, folds, seed)
    try:
        if not task.classification:
            interval, oof = None, None
            if first.interval_coverage is not None:
                oof = np.asarray(cross_val_predict(pipeline, X, y, cv=cv, n_jobs=1), dtype="float64")
                half = conformal_half_width(y.to_numpy(dtype="float64"), oof, first.interval_coverage)
                interval = PredictionInterval(first.interval_coverage, half, len(y))
            return FinalModel(pipeline.fit(X, y), interval=interval, out_of_fold=oof)
        method = calibration_method(first.calibration, members, y, task)
        binary = y.nunique() == 2 and tune_threshold is not None
        if method is None:
            if not binary:
                return FinalModel(pipeline.fit(X, y))
            assert tune_threshold is not None
            proba = np.asarray(cross_val_predict(pipeline, X, y, cv=cv, method="predict_proba", n_jobs=1))
            choice = tune_threshold(y, proba[:, 1])
            wrapped = FixedThresholdClassifier(pipeline, threshold=choice.threshold, response_method="predict_proba")
            return FinalModel(wrapped.fit(X, y), choice)
        fitted: Any = CalibratedClassifierCV(pipeline, method=method, cv=cv, ensemble=False).fit(X, y)
        if not binary:
            return FinalModel(fitted, None, method)
        assert tune_threshold is not None
        # The threshold is tuned on recalibrated out-of-fold probabilities: the fitted calibrator
        # applied to the same out-of-fold scores it was fitted on.
        calibrator = fitted.calibrated_classifiers_[0].calibrators[0]
        calibrated = np.clip(calibrator.predict(_decision_values(pipeline, X, y, cv)), 0.0, 1.0)
        threshold = tune_threshold(y, calibrated)
        fitted = FixedThresholdClassifier(
            FrozenEstimator(fitted), threshold=threshold.threshold, response_method="predict_proba"
        ).fit(X, y)
        return FinalModel(fitted, threshold, method)
    except ValueError as exc:
        raise TrainingError(f"training {describe_members(members)} failed: {exc}") from exc


def model_params(model: Any) -> dict[str, Any]:
    """The estimator's effective hyperparameters (each member's, for an ensemble), flat and loggable."""
    plain = (int, float, str, bool, type(None))
    flat: dict[str, Any] = {}
    names = []
    for prefix, pipeline in _member_pipelines(model):
        estimator = pipeline.named_steps["model"]
        names.append(type(estimator).__name__)
        flat.update({f"{prefix}{k}": v for k, v in estimator.get_params().items() if isinstance(v, plain)})
    return {"estimator": "+".join(names), **flat}


def _member_pipelines(model: Any) -> list[tuple[str, Pipeline]]:
    """(param prefix, pipeline) of a model's members: one, or each of an ensemble's."""
    from components.inference.scoring import model_layers

    inner = model_layers(model)[-1]
    if hasattr(inner, "estimators_"):
        names = [name for name, _ in inner.estimators]
        return [(f"estimator.{name}.", fitted) for name, fitted in zip(names, inner.estimators_, strict=True)]
    return [("estimator.", inner)]


def review_candidates(review: LabelReviewConfig, model: ModelConfig, task: Task) -> dict[str, ModelConfig]:
    """Label review's candidate reviewers: `label_review.estimator` alone, else every searched family."""
    estimator = review.estimator
    if estimator:
        reviewer = config_for_family(model, estimator)
        if model.estimator not in ("auto", estimator):
            reviewer = reviewer.model_copy(update={"params": {}})  # the served model's params need not fit it
        return {estimator: reviewer}
    return {family: config_for_family(model, family) for family in families_of(model, task)}
