"""The search itself: one Optuna study per estimator family (TPE or random), asked in turn."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import optuna
import pandas as pd

from components.core.config import SearchConfig
from components.modeling.evaluate import higher_is_better
from components.modeling.search.crossval import check_folds, check_metric, cross_validate_params, search_rows
from components.modeling.search.results import (
    BatchEvaluator,
    ModelFactory,
    Sample,
    SearchError,
    SearchResult,
    TrialResult,
)
from components.modeling.search.spaces import default_point, family_space, search_space
from components.modeling.tasks import TASKS, Task
from components.modeling.train import ENSEMBLE, default_params


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
        family_space(name, task)
        own = dict(fixed.get(name, {}))
        start = default_point(name, own, task, fit_rows)
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
    check_metric(metric)
    task = task or TASKS["binary" if y.nunique() <= 2 else "multiclass"]
    task.check_metric(metric, "search.metric")
    names = [estimator] if isinstance(estimator, str) else list(estimator)
    fixed = (fixed_params or {}) if len(names) > 1 else {names[0]: dict(fixed_params or {})}
    sample, repeats = search_rows(X, y, config, seed=seed, task=task, by_time=by_time)
    check_folds(sample.y, config.cv_folds, task)
    # the rows each fold's model is fitted on (forward-in-time folds fit on fewer; this is their largest)
    families = _families(names, fixed, task, len(sample.X) * (config.cv_folds - 1) // config.cv_folds)
    score = _scorer(model_factory, sample, metric, config.cv_folds, task, by_time, repeats)
    results = _run_studies(families, config, metric, seed, evaluate_batch or _in_turn(score, seed), on_trial)
    best = _best(results, metric, config.selection)
    if len(families) > 1 and _compares_finalists(config, len(sample.X)):
        # A few cheap fits on a small table: scored here, on folds the search never used.
        finals = _final_comparison(results, metric, families, lambda params, n: score(params, n, seed + 1))
        results += finals
        for result in finals:
            if on_trial is not None:
                on_trial(result)
        best = _best(finals, metric, config.selection)
    return SearchResult(method=config.method, metric=metric, best=best, trials=tuple(results), rows_used=len(sample.X))


_Scorer = Callable[[dict[str, Any], int, int], TrialResult]


def _scorer(
    model_factory: ModelFactory, sample: Sample, metric: str, folds: int, task: Task, by_time: bool, repeats: int
) -> _Scorer:
    """(params, trial number, fold seed) -> the params' cross-validated score on the search's rows."""

    def score(params: dict[str, Any], number: int, fold_seed: int) -> TrialResult:
        return cross_validate_params(
            model_factory,
            params,
            sample.X,
            sample.y,
            metric=metric,
            folds=folds,
            seed=fold_seed,
            number=number,
            task=task,
            by_time=by_time,
            repeats=repeats,
        )

    return score


def _in_turn(score: _Scorer, seed: int) -> BatchEvaluator:
    """The default `evaluate_batch`: a batch's trials scored one after another in this process."""

    def evaluate_batch(batch: list[tuple[int, dict[str, Any]]]) -> list[TrialResult]:
        return [score(params, n, seed) for n, params in batch]

    return evaluate_batch


def _compares_finalists(config: SearchConfig, rows: int) -> bool:
    """Whether a search across families ends with a final comparison (`config.ensemble`)."""
    return config.ensemble == "always" or (config.ensemble == "auto" and rows < config.small_rows)


def _run_studies(
    families: list[_Family],
    config: SearchConfig,
    metric: str,
    seed: int,
    evaluate_batch: BatchEvaluator,
    on_trial: Callable[[TrialResult], None] | None,
) -> list[TrialResult]:
    """Every trial of the search: `config.workers` asked at a time, the families in turn, until the
    budget (`config.trials`) is spent or `config.timeout_minutes` have passed."""
    deadline = None if config.timeout_minutes is None else time.monotonic() + 60 * config.timeout_minutes
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        studies = _studies(families, config, metric, seed)
        # One study per family, asked in turn: each family gets an equal share of the budget (a shared study
        # with the family as a parameter spent it on whichever family led early and left the other untuned).
        turns = itertools.cycle(families)
        untried = {family.name for family in families}
        results: list[TrialResult] = []
        while len(results) < config.trials:
            if results and deadline is not None and time.monotonic() >= deadline:
                break
            count = min(config.workers, config.trials - len(results))
            asked = _ask(studies, turns, untried, count, first=len(results), many=len(families) > 1)
            returned = _evaluate(evaluate_batch, asked)
            for family, trial, number, _ in asked:
                result = returned[number]
                studies[family.name].tell(trial, result.score)
                results.append(result)
                if on_trial is not None:
                    on_trial(result)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return results


def _studies(families: list[_Family], config: SearchConfig, metric: str, seed: int) -> dict[str, optuna.Study]:
    """One study per family, TPE (`search.method: optuna`) or random, whose first trial is the family's defaults."""
    share = math.ceil(config.trials / len(families))
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
    return studies


# A trial asked of a study: its family, the Optuna trial, its number in the search, and its params.
_Asked = tuple[_Family, optuna.trial.Trial, int, dict[str, Any]]


def _ask(
    studies: Mapping[str, optuna.Study],
    turns: Iterator[_Family],
    untried: set[str],
    count: int,
    *,
    first: int,
    many: bool,
) -> list[_Asked]:
    """The next `count` trials, numbered from `first`, of the families in turn; a family's first trial
    (taken out of `untried`) is its exact defaults, and across families the params name their family."""
    asked: list[_Asked] = []
    for _ in range(count):
        family = next(turns)
        trial = studies[family.name].ask()
        params = family.space(trial)
        if family.name in untried:
            untried.discard(family.name)
            params = dict(family.defaults)
        number = first + len(asked)
        asked.append((family, trial, number, {"estimator": family.name, **params} if many else params))
    return asked


def _evaluate(evaluate_batch: BatchEvaluator, asked: list[_Asked]) -> dict[int, TrialResult]:
    """The asked trials' results by trial number, checked to be one per trial."""
    batch = [(number, params) for _, _, number, params in asked]
    returned = {result.number: result for result in evaluate_batch(batch)}
    expected = [number for number, _ in batch]
    if sorted(returned) != sorted(expected):
        raise ValueError(f"evaluate_batch must return one TrialResult per trial {expected}; got {sorted(returned)}")
    return returned


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
