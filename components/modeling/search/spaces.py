"""Each estimator family's search space, and the project's defaults as a point in it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from components.core.config import EstimatorName, ModelConfig
from components.modeling.tasks import Task
from components.modeling.train import build_estimator, default_params

_PENALTIES = ("l1", "l2", "elasticnet")
# scikit-learn 1.8 deprecated `penalty` (removed in 1.10): l1_ratio alone picks the penalty,
# 0 = L2, 1 = L1, in between = elastic net. Only saga handles L1; lbfgs is faster for L2.
_PENALTY_SETTINGS: dict[str, dict[str, Any]] = {
    "l2": {"l1_ratio": 0.0, "solver": "lbfgs"},
    "l1": {"l1_ratio": 1.0, "solver": "saga"},
    "elasticnet": {"solver": "saga"},
}
_SPACES: dict[str, dict[str, BaseDistribution]] = {
    "logistic_regression": {
        "penalty": CategoricalDistribution(_PENALTIES),
        # saga (L1, elastic net) converges slowly when barely regularized: 94 s for one 3-fold trial at C=92 on
        # 14k rows x 100 one-hot columns, against 2-15 s below 10, where lbfgs at C=10 is all but unregularized.
        "C": FloatDistribution(1e-3, 1e1, log=True),
        "l1_ratio": FloatDistribution(0.0, 1.0),
    },
    "ridge": {"alpha": FloatDistribution(1e-3, 1e3, log=True)},
    "hist_gradient_boosting": {
        "max_iter": IntDistribution(50, 800, log=True),
        "learning_rate": FloatDistribution(0.01, 0.3, log=True),
        "max_leaf_nodes": IntDistribution(8, 64),
        "min_samples_leaf": IntDistribution(10, 200),
        "l2_regularization": FloatDistribution(1e-4, 10.0, log=True),
    },
    "random_forest": {
        "n_estimators": IntDistribution(100, 400),
        "max_depth": CategoricalDistribution((None, 6, 12, 24)),
        "min_samples_leaf": IntDistribution(1, 20),
        "max_features": CategoricalDistribution(("sqrt", 0.5)),
    },
}
# A regression forest's default looks at every feature per split; the classifier's at their square root.
_REGRESSION_SPACES: dict[str, dict[str, BaseDistribution]] = {
    "random_forest": {**_SPACES["random_forest"], "max_features": CategoricalDistribution((1.0, 0.5, "sqrt"))},
}
# Settings every trial of a family shares; the user's fixed params still override them.
_SPACE_CONSTANTS: dict[str, dict[str, Any]] = {
    # saga on standardized features converges within a few hundred epochs; the ceiling is for small C.
    "logistic_regression": {"max_iter": 5000},
    "ridge": {},
    "hist_gradient_boosting": {"early_stopping": "auto"},
    "random_forest": {"n_jobs": 1},
}

# The widest leaf a search tries is this share of the rows a fold's model fits on: a tree family's
# range (up to 200 rows a leaf) is for tables of thousands; on 89 rows every leaf of 45 or more is
# one leaf, and half the trials of a small table's search predicted a constant.
LEAF_SHARE = 0.1


@dataclass(frozen=True)
class _Resolved:
    """A family's active dimensions once the user's fixed params are taken out."""

    dimensions: dict[str, BaseDistribution] = field(default_factory=dict)
    penalty: str | None = None  # logistic regression's penalty when it is not searched


def family_space(estimator: str, task: Task | None = None, fit_rows: int | None = None) -> dict[str, BaseDistribution]:
    """The family's search space; with `fit_rows` (the rows each fold's model is fitted on), leaf
    sizes are capped at `LEAF_SHARE` of them, and the range keeps its shape below the cap."""
    if estimator not in _SPACES:
        raise ValueError(f"no search space for estimator {estimator!r}; choose one of {sorted(_SPACES)}")
    space = _SPACES[estimator]
    if task is not None and not task.classification:
        space = _REGRESSION_SPACES.get(estimator, space)
    leaf = space.get("min_samples_leaf")
    if fit_rows is None or not isinstance(leaf, IntDistribution):
        return space
    high = max(2, min(leaf.high, int(fit_rows * LEAF_SHARE)))
    if high >= leaf.high:
        return space
    low = max(1, min(leaf.low, high // 4))
    return {**space, "min_samples_leaf": IntDistribution(low, high, log=leaf.log)}


def _penalty_for_ratio(l1_ratio: float) -> str:
    if l1_ratio == 0:
        return "l2"
    return "l1" if l1_ratio == 1 else "elasticnet"


def _resolve(
    estimator: str, fixed: Mapping[str, Any], task: Task | None = None, fit_rows: int | None = None
) -> _Resolved:
    dimensions = {name: dist for name, dist in family_space(estimator, task, fit_rows).items() if name not in fixed}
    if estimator != "logistic_regression":
        return _Resolved(dimensions)
    penalty: str | None = None
    if "penalty" in fixed:
        penalty = str(fixed["penalty"])
    elif "l1_ratio" in fixed and fixed["l1_ratio"] is not None:
        penalty = _penalty_for_ratio(float(fixed["l1_ratio"]))
    elif "solver" in fixed and fixed["solver"] != "saga":
        # Only saga supports every penalty; liblinear does L1 and L2, the others L2 only.
        allowed = ("l1", "l2") if fixed["solver"] == "liblinear" else ("l2",)
        if len(allowed) == 1:
            penalty = allowed[0]
        else:
            dimensions["penalty"] = CategoricalDistribution(allowed)
    if penalty is not None:
        dimensions.pop("penalty", None)
    return _Resolved(dimensions, penalty)


def _suggest(trial: optuna.trial.BaseTrial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(f"unsupported distribution for {name}: {distribution!r}")


def search_space(
    estimator: str,
    fixed_params: Mapping[str, Any] | None = None,
    task: Task | None = None,
    fit_rows: int | None = None,
) -> Callable[[optuna.trial.BaseTrial], dict[str, Any]]:
    """A function from an Optuna trial to the estimator's constructor params.

    Params the user fixed are never suggested and win over everything else; the result holds
    the project's defaults, the family's shared settings, the suggestions and the fixed params.
    `fit_rows` (the rows each fold's model is fitted on) narrows leaf sizes to what they can hold.
    """
    fixed = dict(fixed_params or {})
    resolved = _resolve(estimator, fixed, task, fit_rows)
    base = {**default_params(estimator), **_SPACE_CONSTANTS[estimator]}

    def suggest(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        params = dict(base)
        if estimator == "logistic_regression":
            dimensions = resolved.dimensions
            penalty = resolved.penalty
            if penalty is None:
                penalty = _suggest(trial, "penalty", dimensions["penalty"])
            params.update(_PENALTY_SETTINGS.get(str(penalty), {}))
            if "C" in dimensions:
                params["C"] = _suggest(trial, "C", dimensions["C"])
            if penalty == "elasticnet" and "l1_ratio" in dimensions:
                params["l1_ratio"] = _suggest(trial, "l1_ratio", dimensions["l1_ratio"])
        else:
            for name, distribution in resolved.dimensions.items():
                params[name] = _suggest(trial, name, distribution)
        params.update(fixed)
        return params

    return suggest


def default_point(
    estimator: str, fixed: Mapping[str, Any], task: Task | None = None, fit_rows: int | None = None
) -> dict[str, Any]:
    """The project's defaults as a point of the search space (clipped into range), to enqueue."""
    config = ModelConfig(estimator=cast(EstimatorName, estimator), params=dict(fixed))
    effective = build_estimator(config, seed=0, task=task).get_params()
    resolved = _resolve(estimator, fixed, task, fit_rows)
    if estimator == "logistic_regression":
        ratio = effective.get("l1_ratio")
        effective["penalty"] = _penalty_for_ratio(float(ratio)) if ratio is not None else "l2"
    point: dict[str, Any] = {}
    for name, distribution in resolved.dimensions.items():
        value = effective.get(name)
        if isinstance(distribution, CategoricalDistribution):
            if value in distribution.choices:
                point[name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            assert isinstance(distribution, (FloatDistribution, IntDistribution))
            clipped = min(max(value, distribution.low), distribution.high)
            point[name] = round(clipped) if isinstance(distribution, IntDistribution) else float(clipped)
    return point
