"""Hyperparameter search on the training split, scored by stratified cross-validation.

Trials are asked from Optuna in batches and evaluated by a pluggable `evaluate_batch`, so a
flow can run a batch on Dask while this module imports neither Prefect nor Dask. The first
trial is always the project's defaults: the search can only match or beat them. Every
scikit-learn call runs with n_jobs=1, because process pools forked from Prefect's threads
can hang on a lock copied mid-use.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, NamedTuple, cast, get_args

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, TimeSeriesSplit, cross_val_predict, train_test_split

from components.core.config import EstimatorName, MetricName, ModelConfig, SearchConfig
from components.modeling.evaluate import higher_is_better
from components.modeling.tasks import TASKS, Task
from components.modeling.train import ENSEMBLE, ThresholdChoice, build_estimator, default_params

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


class SearchError(ValueError):
    """The search could not produce a usable trial (every trial failed)."""


@dataclass(frozen=True)
class TrialResult:
    """One parameter set's cross-validated score; a failed fit has `error` set and the worst score."""

    number: int
    params: dict[str, Any]
    score: float
    score_std: float
    fold_scores: tuple[float, ...]
    train_score: float
    fit_seconds: float
    error: str | None = None
    stage: Literal["search", "final"] = "search"  # final: a finalist scored again on fresh folds

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: infinite and NaN scores (failed trials) become None."""
        data = asdict(self)
        data["params"] = {name: _json_value(value) for name, value in self.params.items()}
        for name in ("score", "score_std", "train_score", "fit_seconds"):
            data[name] = _json_float(data[name])
        data["fold_scores"] = [_json_float(value) for value in self.fold_scores]
        return data


@dataclass(frozen=True)
class SearchResult:
    """Every trial in the order it was asked, and the best one (ties go to the earlier trial)."""

    method: str
    metric: str
    best: TrialResult
    trials: tuple[TrialResult, ...]
    rows_used: int

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.best.params)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "metric": self.metric,
            "rows_used": self.rows_used,
            "best_params": {name: _json_value(value) for name, value in self.best.params.items()},
            "best": self.best.as_dict(),
            "trials": [trial.as_dict() for trial in self.trials],
        }


ModelFactory = Callable[[dict[str, Any]], Any]
BatchEvaluator = Callable[[list[tuple[int, dict[str, Any]]]], list[TrialResult]]


class Sample(NamedTuple):
    """The rows a search runs on."""

    X: pd.DataFrame
    y: pd.Series


@dataclass(frozen=True)
class _Resolved:
    """A family's active dimensions once the user's fixed params are taken out."""

    dimensions: dict[str, BaseDistribution] = field(default_factory=dict)
    penalty: str | None = None  # logistic regression's penalty when it is not searched


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _json_float(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return str(value)


# The widest leaf a search tries is this share of the rows a fold's model fits on: a tree family's
# range (up to 200 rows a leaf) is for tables of thousands; on 89 rows every leaf of 45 or more is
# one leaf, and half the trials of a small table's search predicted a constant.
LEAF_SHARE = 0.1


def _space(estimator: str, task: Task | None = None, fit_rows: int | None = None) -> dict[str, BaseDistribution]:
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


def _check_metric(metric: str) -> None:
    known = get_args(MetricName)
    if metric not in known:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(known)}")


def _check_folds(y: pd.Series, folds: int, task: Task) -> None:
    if not task.classification:
        if len(y) < 2 * folds:
            raise ValueError(f"{folds}-fold cross-validation needs at least {2 * folds} rows; got {len(y)}")
        return
    counts = y.value_counts()
    if len(counts) < 2:
        raise ValueError(f"cross-validation needs at least 2 classes; got {counts.to_dict()}")
    if int(counts.min()) < folds:
        raise ValueError(
            f"{folds}-fold cross-validation needs at least {folds} rows of every class; class counts are "
            f"{counts.to_dict()}: lower search.cv_folds or search on more rows (search.max_rows)"
        )


def _worst(metric: str) -> float:
    return -math.inf if higher_is_better(metric) else math.inf


def _penalty_for_ratio(l1_ratio: float) -> str:
    if l1_ratio == 0:
        return "l2"
    return "l1" if l1_ratio == 1 else "elasticnet"


def _resolve(
    estimator: str, fixed: Mapping[str, Any], task: Task | None = None, fit_rows: int | None = None
) -> _Resolved:
    dimensions = {name: dist for name, dist in _space(estimator, task, fit_rows).items() if name not in fixed}
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


def _default_point(
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


def search_rows(
    X: pd.DataFrame, y: pd.Series, config: SearchConfig, *, seed: int, task: Task, by_time: bool = False
) -> tuple[Sample, int]:
    """The rows a search scores (a seeded sample, stratified for classes unless the folds run forward
    in time) and how many times each trial repeats its folds on them: what `run_search` uses, and
    what a custom `evaluate_batch` must use."""
    sample = sample_rows(X, y, max_rows=config.max_rows, seed=seed, stratify=task.classification and not by_time)
    return sample, 1 if by_time else cv_repeats(config, len(sample.X))


def sample_rows(X: pd.DataFrame, y: pd.Series, *, max_rows: int | None, seed: int, stratify: bool = True) -> Sample:
    """At most `max_rows` rows, seeded (stratified for classes), in their original order.

    A custom `evaluate_batch` must score on these rows: call this first with the same
    arguments; on rows already within `max_rows` it changes nothing.
    """
    if max_rows is None or len(X) <= max_rows:
        return Sample(X, y)
    positions, _ = train_test_split(
        np.arange(len(X)), train_size=max_rows, stratify=y if stratify else None, random_state=seed
    )
    positions = np.sort(positions)
    return Sample(X.iloc[positions], y.iloc[positions])


def cv_splitter(task: Task, y: pd.Series, folds: int, seed: int, *, by_time: bool = False, repeats: int = 1) -> Any:
    """The search's folds: forward in time (rows in time order), or the task's shuffled folds, repeated
    with new shuffles `repeats` times."""
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    if by_time:
        return TimeSeriesSplit(n_splits=folds)
    if repeats <= 1:
        return task.folds(y, folds, seed)
    folds = task.usable_folds(y, folds)
    repeated = RepeatedStratifiedKFold if task.classification else RepeatedKFold
    return repeated(n_splits=folds, n_repeats=repeats, random_state=seed)


def cv_repeats(config: SearchConfig, rows: int) -> int:
    """How often the search repeats its cross-validation: as configured, else 3 on small tables."""
    if config.cv_repeats is not None:
        return config.cv_repeats
    return 3 if rows < config.small_rows else 1


def cross_validate_params(
    model_factory: ModelFactory,
    params: Mapping[str, Any],
    X: pd.DataFrame,
    y: pd.Series,
    *,
    metric: str,
    folds: int,
    seed: int,
    number: int = 0,
    task: Task | None = None,
    by_time: bool = False,
    repeats: int = 1,
) -> TrialResult:
    """Score `params` by seeded k-fold (stratified for classes, forward in time with `by_time`);
    a fit that fails gives the worst score, not an error.

    `score` is the mean over held-out folds, `train_score` the mean on the folds each model was
    fitted on (their gap shows over- or underfitting). A ValueError from building, fitting or
    predicting, or non-finite answers, mark the trial failed so the search goes on. A fold where
    the metric is undefined (one class held out, in a time split) is skipped.
    """
    task = task or TASKS["binary" if y.nunique() <= 2 else "multiclass"]
    _check_metric(metric)
    task.check_metric(metric, "search.metric")
    _check_folds(y, folds, task)
    params = dict(params)
    cv = cv_splitter(task, y, folds, seed, by_time=by_time, repeats=repeats)
    held_scores: list[float] = []
    fit_scores: list[float] = []
    started = time.perf_counter()

    def failed(reason: str) -> TrialResult:
        worst = _worst(metric)
        return TrialResult(number, params, worst, math.nan, (), worst, time.perf_counter() - started, reason)

    for fit_rows, held_rows in cv.split(X, y):
        X_fit, y_fit = X.iloc[fit_rows], y.iloc[fit_rows]
        X_held, y_held = X.iloc[held_rows], y.iloc[held_rows]
        try:
            model = model_factory(dict(params))
            model.fit(X_fit, y_fit)
            held = task.output(model, X_held)
            fit = task.output(model, X_fit)
        except ValueError as exc:
            return failed(f"{type(exc).__name__}: {exc}")
        if not (np.isfinite(held).all() and np.isfinite(fit).all()):
            return failed("the model produced non-finite answers")
        classes = list(getattr(model, "classes_", ()))
        held_score = _score(task, metric, y_held, held, classes)
        fit_score = _score(task, metric, y_fit, fit, classes)
        if held_score is None or fit_score is None:
            if by_time:
                continue
            raise ValueError(f"metric {metric!r} is undefined on a fold with classes {sorted(pd.unique(y_held))}")
        held_scores.append(held_score)
        fit_scores.append(fit_score)
    if not held_scores:
        return failed(f"{metric} is undefined on every fold")
    return TrialResult(
        number=number,
        params=params,
        score=float(np.mean(held_scores)),
        score_std=float(np.std(held_scores)),
        fold_scores=tuple(held_scores),
        train_score=float(np.mean(fit_scores)),
        fit_seconds=time.perf_counter() - started,
    )


def _score(task: Task, metric: str, y: pd.Series, output: np.ndarray, classes: list[Any]) -> float | None:
    if task.classification and not set(pd.unique(y)) <= set(classes):
        return None  # a class the fold's model never saw (time-ordered folds)
    return task.compute_metrics(y, output, classes).get(metric)


def _best(trials: list[TrialResult], metric: str, selection: str = "best") -> TrialResult:
    """The chosen trial: the top score, or (`one_se`) the earliest within one standard error of it."""
    usable = [trial for trial in trials if trial.ok]
    if not usable:
        raise SearchError(f"every one of {len(trials)} trial(s) failed; the first: {trials[0].error}")
    sign = 1.0 if higher_is_better(metric) else -1.0
    # max() keeps the first of equal scores: the defaults win a tie.
    top = max(usable, key=lambda trial: sign * trial.score)
    if selection != "one_se" or len(top.fold_scores) < 2:
        return top
    error = top.score_std / math.sqrt(len(top.fold_scores))
    return min((t for t in usable if sign * t.score >= sign * top.score - error), key=lambda t: t.number)


@dataclass(frozen=True)
class _Family:
    name: str
    space: Callable[[optuna.trial.BaseTrial], dict[str, Any]]
    defaults: dict[str, Any]
    start: dict[str, Any]


def _families(
    estimators: Sequence[str], fixed: Mapping[str, Mapping[str, Any]], task: Task | None, fit_rows: int
) -> list[_Family]:
    found = []
    for name in estimators:
        _space(name, task)
        own = dict(fixed.get(name, {}))
        start = _default_point(name, own, task, fit_rows)
        found.append(_Family(name, search_space(name, own, task, fit_rows), {**default_params(name), **own}, start))
    return found


def run_search(
    model_factory: ModelFactory,
    estimator: str | Sequence[str],
    X: pd.DataFrame,
    y: pd.Series,
    config: SearchConfig,
    *,
    metric: str,
    seed: int,
    fixed_params: Mapping[str, Any] | None = None,
    evaluate_batch: BatchEvaluator | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
    task: Task | None = None,
    by_time: bool = False,
) -> SearchResult:
    """Search one estimator family's space, or several families at once, by cross-validation on
    (a sample of) the training rows.

    With several families (`estimator` a sequence), each has a study of its own and they are asked in
    turn, so each gets an equal share of the budget; every trial's params hold the family under
    `estimator`, and `fixed_params` maps each family to its fixed params. Trials are asked
    `config.workers` at a time and evaluated by `evaluate_batch` (default: one after another in
    this process), which receives (trial number, params) pairs and returns one TrialResult per
    pair; it must score on `sample_rows(X, y, max_rows=config.max_rows, seed=seed, stratify=...)`,
    repeating the folds `cv_repeats(config, rows)` times (3 on small tables). The chosen trial is
    the top score, or with `config.selection: one_se` the earliest within one standard error of it;
    across families on a small table (`config.ensemble`), the top of a final comparison on fresh
    folds of each family's defaults and best and their ensembles (trials numbered after the search).
    The first trials are the project's defaults of each family merged with the fixed params,
    exactly as training without a search would build them. No new batch is asked after
    `config.timeout_minutes`.
    """
    if config.method == "none":
        raise ValueError("search.method is 'none': train with model.params instead of calling run_search")
    _check_metric(metric)
    task = task or TASKS["binary" if y.nunique() <= 2 else "multiclass"]
    task.check_metric(metric, "search.metric")
    names = [estimator] if isinstance(estimator, str) else list(estimator)
    many = len(names) > 1
    fixed = (fixed_params or {}) if many else {names[0]: dict(fixed_params or {})}
    sample, repeats = search_rows(X, y, config, seed=seed, task=task, by_time=by_time)
    _check_folds(sample.y, config.cv_folds, task)
    # the rows each fold's model is fitted on (forward-in-time folds fit on fewer; this is their largest)
    families = _families(names, fixed, task, len(sample.X) * (config.cv_folds - 1) // config.cv_folds)

    def score(params: dict[str, Any], number: int, fold_seed: int) -> TrialResult:
        return cross_validate_params(
            model_factory,
            params,
            sample.X,
            sample.y,
            metric=metric,
            folds=config.cv_folds,
            seed=fold_seed,
            number=number,
            task=task,
            by_time=by_time,
            repeats=repeats,
        )

    if evaluate_batch is None:

        def evaluate_batch(batch: list[tuple[int, dict[str, Any]]]) -> list[TrialResult]:
            return [score(params, n, seed) for n, params in batch]

    # One study per family, asked in turn: each family gets an equal share of the budget (a shared study
    # with the family as a parameter spent it on whichever family led early and left the other untuned).
    share = math.ceil(config.trials / len(families))
    deadline = None if config.timeout_minutes is None else time.monotonic() + 60 * config.timeout_minutes
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        direction: Literal["maximize", "minimize"] = "maximize" if higher_is_better(metric) else "minimize"
        studies = {}
        for offset, family in enumerate(families):
            sampler: optuna.samplers.BaseSampler = (
                # TPE samples at random until n_startup_trials; a third of a short budget leaves it room to steer.
                optuna.samplers.TPESampler(seed=seed + offset, n_startup_trials=max(3, min(10, share // 3)))
                if config.method == "optuna"
                else optuna.samplers.RandomSampler(seed=seed + offset)
            )
            studies[family.name] = optuna.create_study(direction=direction, sampler=sampler)
            # The sampler learns from the defaults' score at their place in the space; the trial itself
            # evaluates the exact defaults.
            studies[family.name].enqueue_trial(family.start)
        turns = itertools.cycle(families)
        untried = {family.name for family in families}
        results: list[TrialResult] = []
        while len(results) < config.trials:
            if results and deadline is not None and time.monotonic() >= deadline:
                break
            asked: list[tuple[_Family, optuna.trial.Trial, int, dict[str, Any]]] = []
            for _ in range(min(config.workers, config.trials - len(results))):
                family = next(turns)
                trial = studies[family.name].ask()
                params = family.space(trial)
                if family.name in untried:
                    untried.discard(family.name)
                    params = dict(family.defaults)
                number = len(results) + len(asked)
                asked.append((family, trial, number, {"estimator": family.name, **params} if many else params))
            batch = [(number, params) for _, _, number, params in asked]
            returned = {result.number: result for result in evaluate_batch(batch)}
            expected = [number for number, _ in batch]
            if sorted(returned) != sorted(expected):
                raise ValueError(
                    f"evaluate_batch must return one TrialResult per trial {expected}; got {sorted(returned)}"
                )
            for family, trial, number, _ in asked:
                result = returned[number]
                studies[family.name].tell(trial, result.score)
                results.append(result)
                if on_trial is not None:
                    on_trial(result)
    finally:
        optuna.logging.set_verbosity(verbosity)
    best = _best(results, metric, config.selection)
    if many and (config.ensemble == "always" or (config.ensemble == "auto" and len(sample.X) < config.small_rows)):
        # A few cheap fits on a small table: scored here, on folds the search never used.
        finals = _final_comparison(results, metric, families, lambda params, n: score(params, n, seed + 1))
        results += finals
        for result in finals:
            if on_trial is not None:
                on_trial(result)
        best = _best(finals, metric, config.selection)
    return SearchResult(
        method=config.method,
        metric=metric,
        best=best,
        trials=tuple(results),
        rows_used=len(sample.X),
    )


def _final_comparison(
    results: list[TrialResult],
    metric: str,
    families: list[_Family],
    score: Callable[[dict[str, Any], int], TrialResult],
) -> list[TrialResult]:
    """Each family's defaults and best trial, and the ensembles of each, scored again by `score`
    (params, trial number) on fresh folds.

    The search's winner was picked on the same folds as every other trial, so its score is the luckiest
    of many, and on a few hundred rows tuned params fit those folds more than the data; scored on new
    folds, the few finalists compare without that bias. Defaults come first, then each family's best,
    then the ensembles: the selection rule (one standard error) keeps the earliest within the noise.
    """
    sign = 1.0 if higher_is_better(metric) else -1.0
    defaults, bests = [], []
    for family in families:
        own = [r for r in results if r.ok and r.params.get("estimator") == family.name]
        if own:
            defaults.append(own[0].params)  # each family's first trial is its defaults
            bests.append(max(own, key=lambda r: sign * r.score).params)
    if len(bests) < 2:
        return []
    candidates: list[dict[str, Any]] = []
    for params in (
        *defaults,
        *bests,
        {"estimator": ENSEMBLE, "members": defaults},
        {"estimator": ENSEMBLE, "members": bests},
    ):
        if params not in candidates:
            candidates.append(params)
    first = len(results)
    return [replace(score(params, first + offset), stage="final") for offset, params in enumerate(candidates)]


def out_of_fold_proba(model: Any, X: pd.DataFrame, y: pd.Series, *, folds: int, seed: int) -> np.ndarray:
    """Class probabilities (columns in sorted class order), each row from a copy of `model` that never saw it."""
    _check_folds(y, folds, TASKS["binary"])
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return np.asarray(cross_val_predict(clone(model), X, y, cv=cv, method="predict_proba", n_jobs=1))


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
