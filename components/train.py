"""Training: the whole preprocessing + estimator as one scikit-learn Pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline

from components.config import ModelConfig
from components.prepare import FeatureSpec, build_preprocessor

_DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"max_iter": 2000, "C": 1.0},
    # n_jobs=1: parallel tree prediction adds tens of ms per single-row request in serving.
    "random_forest": {"n_estimators": 200, "min_samples_leaf": 2, "n_jobs": 1},
    # Early stopping on an inner validation fraction: max_iter is a ceiling, not a guess.
    "hist_gradient_boosting": {
        "max_iter": 500,
        "learning_rate": 0.1,
        "early_stopping": True,
        "validation_fraction": 0.1,
        "n_iter_no_change": 20,
    },
}
_CLASSES: dict[str, type[ClassifierMixin]] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
}


class TrainingError(ValueError):
    """The estimator could not be built or fitted with the given settings."""


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


def with_class_weight(config: ModelConfig, y: pd.Series) -> ModelConfig:
    """The config with `class_weight` set when `class_weight_for` asks for it (a pinned value wins)."""
    weight = class_weight_for(config, y)
    if weight is None or "class_weight" in config.params:
        return config
    return config.model_copy(update={"params": {**config.params, "class_weight": weight}})


def build_estimator(config: ModelConfig, seed: int) -> ClassifierMixin:
    """The configured estimator with the project's defaults under the user's params."""
    cls = _CLASSES[config.estimator]
    params = {**_DEFAULTS[config.estimator], **config.params, "random_state": seed}
    try:
        return cls(**params)
    except TypeError as exc:
        raise TrainingError(f"invalid params for {config.estimator}: {exc}") from exc


def build_model(
    spec: FeatureSpec, config: ModelConfig, seed: int, clip: dict[str, tuple[float, float]] | None = None
) -> Pipeline:
    return Pipeline(
        [
            ("preprocess", build_preprocessor(spec, config.max_categories, clip)),
            ("model", build_estimator(config, seed)),
        ]
    )


def model_factory(
    spec: FeatureSpec, config: ModelConfig, seed: int, clip: dict[str, tuple[float, float]] | None = None
) -> Callable[[dict[str, Any]], Pipeline]:
    """Unfitted pipelines of `config` with some params replaced: what a hyperparameter search tries."""

    def factory(params: dict[str, Any]) -> Pipeline:
        return build_model(spec, config.model_copy(update={"params": {**config.params, **params}}), seed, clip)

    return factory


def train_model(
    X_train: pd.DataFrame,
    y_train: pd.Series,
    spec: FeatureSpec,
    config: ModelConfig,
    seed: int,
    clip: dict[str, tuple[float, float]] | None = None,
    threshold: float | None = None,
) -> Any:
    """Fit preprocessing and estimator together on the training split only.

    With a `threshold` (binary targets), the Pipeline is wrapped in a FixedThresholdClassifier,
    so the tuned cut-off travels inside the model artifact and every consumer predicts with it.
    """
    model: Any = build_model(spec, config, seed, clip)
    if threshold is not None and y_train.nunique() == 2:
        model = FixedThresholdClassifier(model, threshold=threshold, response_method="predict_proba")
    try:
        model.fit(X_train, y_train)
    except ValueError as exc:
        raise TrainingError(f"training {config.estimator} failed: {exc}") from exc
    return model


def model_params(model: Any) -> dict[str, Any]:
    """The estimator's effective hyperparameters, flat and loggable."""
    estimator = getattr(model, "estimator_", model).named_steps["model"]
    plain = (int, float, str, bool, type(None))
    return {f"estimator.{k}": v for k, v in estimator.get_params().items() if isinstance(v, plain)}
