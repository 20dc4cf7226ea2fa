"""Cross-validation: the rows a search scores, its folds, and one parameter set's score on them."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, get_args

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, TimeSeriesSplit, cross_val_predict, train_test_split

from components.core.config import MetricName, SearchConfig
from components.modeling.evaluate import higher_is_better
from components.modeling.search.results import ModelFactory, Sample, TrialResult
from components.modeling.tasks import TASKS, Task


def check_metric(metric: str) -> None:
    known = get_args(MetricName)
    if metric not in known:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(known)}")


def check_folds(y: pd.Series, folds: int, task: Task) -> None:
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
    check_metric(metric)
    task.check_metric(metric, "search.metric")
    check_folds(y, folds, task)
    params = dict(params)
    cv = cv_splitter(task, y, folds, seed, by_time=by_time, repeats=repeats)
    held_scores: list[float] = []
    fit_scores: list[float] = []
    started = time.perf_counter()
    for fit_rows, held_rows in cv.split(X, y):
        try:
            scores = _score_fold(model_factory, params, task, metric, X, y, fit_rows, held_rows)
        except _FailedFit as exc:
            return _failed(number, params, metric, started, str(exc))
        if scores is None:
            if by_time:
                continue
            classes = sorted(pd.unique(y.iloc[held_rows]))
            raise ValueError(f"metric {metric!r} is undefined on a fold with classes {classes}")
        held_scores.append(scores[0])
        fit_scores.append(scores[1])
    if not held_scores:
        return _failed(number, params, metric, started, f"{metric} is undefined on every fold")
    return TrialResult(
        number=number,
        params=params,
        score=float(np.mean(held_scores)),
        score_std=float(np.std(held_scores)),
        fold_scores=tuple(held_scores),
        train_score=float(np.mean(fit_scores)),
        fit_seconds=time.perf_counter() - started,
    )


class _FailedFit(Exception):
    """A fold's model could not be built, fitted or asked, or answered non-finite values: the trial failed."""


def _score_fold(
    model_factory: ModelFactory,
    params: dict[str, Any],
    task: Task,
    metric: str,
    X: pd.DataFrame,
    y: pd.Series,
    fit_rows: np.ndarray,
    held_rows: np.ndarray,
) -> tuple[float, float] | None:
    """The held-out and the fitted rows' scores of a model fitted on one fold; None where the metric is undefined."""
    X_fit, y_fit = X.iloc[fit_rows], y.iloc[fit_rows]
    X_held, y_held = X.iloc[held_rows], y.iloc[held_rows]
    try:
        model = model_factory(dict(params))
        model.fit(X_fit, y_fit)
        held = task.output(model, X_held)
        fit = task.output(model, X_fit)
    except ValueError as exc:
        raise _FailedFit(f"{type(exc).__name__}: {exc}") from exc
    if not (np.isfinite(held).all() and np.isfinite(fit).all()):
        raise _FailedFit("the model produced non-finite answers")
    classes = list(getattr(model, "classes_", ()))
    held_score = _score(task, metric, y_held, held, classes)
    fit_score = _score(task, metric, y_fit, fit, classes)
    if held_score is None or fit_score is None:
        return None
    return held_score, fit_score


def _failed(number: int, params: dict[str, Any], metric: str, started: float, reason: str) -> TrialResult:
    """A failed trial: the worst score, no fold scores, and why."""
    worst = _worst(metric)
    return TrialResult(number, params, worst, math.nan, (), worst, time.perf_counter() - started, reason)


def _score(task: Task, metric: str, y: pd.Series, output: np.ndarray, classes: list[Any]) -> float | None:
    if task.classification and not set(pd.unique(y)) <= set(classes):
        return None  # a class the fold's model never saw (time-ordered folds)
    return task.compute_metrics(y, output, classes).get(metric)


def out_of_fold_proba(model: Any, X: pd.DataFrame, y: pd.Series, *, folds: int, seed: int) -> np.ndarray:
    """Class probabilities (columns in sorted class order), each row from a copy of `model` that never saw it."""
    check_folds(y, folds, TASKS["binary"])
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return np.asarray(cross_val_predict(clone(model), X, y, cv=cv, method="predict_proba", n_jobs=1))
