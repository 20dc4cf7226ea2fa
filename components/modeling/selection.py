"""Model selection: the search across the configured families, planned and run as one step.

`plan_selection` settles what the search needs from the data and the config: class weights for
an imbalanced target, folds the rarest class can fill (or folds forward in time), every family's
fixed parameters, and a budget that tries each family's defaults. `select_model` runs it
(`search.run_search`) and returns the chosen configuration (one family, or an ensemble) with
its cross-validated score and its gap to the training folds. How trials are spread over workers
is the caller's (`evaluate_batch`, e.g. a Dask task runner); what is recorded of each trial too
(`on_trial`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from components.core.config import ModelConfig, SearchConfig
from components.modeling import search
from components.modeling.evaluate import higher_is_better
from components.modeling.prepare import FeatureSpec, Split
from components.modeling.tasks import Task
from components.modeling.train import (
    config_for_family,
    describe_members,
    families_of,
    member_configs,
    model_factory,
    with_class_weight,
)


@dataclass(frozen=True)
class SelectionPlan:
    """What the search runs: the model settings (class weights applied), the families, their fixed
    parameters, the search settings (folds and budget settled) and notes on what was adjusted."""

    model: ModelConfig
    families: tuple[str, ...]
    fixed: dict[str, Any]
    search: SearchConfig  # as run
    folds: int
    by_time: bool
    factory: Callable[[dict[str, Any]], Any] = field(repr=False)
    searched: bool = True  # False: `search.method: none`, the families' defaults compared
    notes: tuple[str, ...] = ()

    @property
    def parallel(self) -> bool:
        """Trials spread over workers (a local Dask cluster or a scheduler), not in this process."""
        return self.searched and (self.search.workers > 1 or bool(self.search.dask_address))


@dataclass(frozen=True)
class Selection:
    """The chosen configuration (one family's, or an ensemble's members) and how it was chosen."""

    members: tuple[ModelConfig, ...]
    family: str  # `describe_members`: the family, or ensemble(...)
    params: dict[str, Any]
    validation_score: float  # cross-validated, on the training split
    train_score: float  # on the training folds
    train_gap: float  # how much better the training folds score (overfitting), oriented by the metric
    result: search.SearchResult

    def summary(self, plan: SelectionPlan, metric: str) -> str:
        best = self.result.best
        return (
            f"{'search' if plan.searched else 'no search, defaults compared'}: {len(self.result.trials)} trial(s) "
            f"over {', '.join(plan.families)} on {self.result.rows_used} rows, best cv {metric} {best.score:.4f} "
            f"(± {best.score_std:.4f}): {self.family} with {self.params}"
        )


def plan_selection(
    spec: FeatureSpec,
    split: Split,
    model_config: ModelConfig,
    cfg: SearchConfig,
    seed: int,
    task: Task,
    clip: dict[str, tuple[float, float]] | None = None,
) -> SelectionPlan:
    """The search's settings for this training split."""
    notes: list[str] = []
    model = with_class_weight(model_config, split.y_train, task)
    if model is not model_config:
        notes.append(f"class weights: balanced (the rarest class is under {model.imbalance_threshold} of the rows)")
    families = families_of(model, task)
    folds = cfg.cv_folds if split.by_time else task.usable_folds(split.y_train, cfg.cv_folds)
    if folds < cfg.cv_folds:
        notes.append(f"{folds}-fold cross-validation: the rarest class has too few rows for {cfg.cv_folds}")
    cfg = cfg.model_copy(update={"cv_folds": folds})
    many = len(families) > 1
    fixed: dict[str, Any] = (
        {family: config_for_family(model, family).params for family in families}
        if many
        else dict(config_for_family(model, families[0]).params)
    )
    # every family's defaults are tried, whatever the budget
    run_cfg = cfg.model_copy(update={"trials": max(cfg.trials, len(families))})
    if cfg.method == "none":
        # No search: the families' defaults (with the fixed params), compared by cross-validation.
        run_cfg = cfg.model_copy(update={"method": "random", "trials": len(families), "workers": 1})
    return SelectionPlan(
        model=model,
        families=tuple(families),
        fixed=fixed,
        search=run_cfg,
        folds=folds,
        by_time=split.by_time,
        factory=model_factory(spec, model, seed, clip, task),
        searched=cfg.method != "none",
        notes=tuple(notes),
    )


def select_model(
    plan: SelectionPlan,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    metric: str,
    seed: int,
    task: Task,
    on_trial: Callable[[search.TrialResult], None] | None = None,
    evaluate_batch: Callable[..., list[search.TrialResult]] | None = None,
) -> Selection:
    """Run the planned search on the training rows and settle the chosen configuration."""
    many = len(plan.families) > 1
    result = search.run_search(
        plan.factory,
        plan.families if many else plan.families[0],
        X,
        y,
        plan.search,
        metric=metric,
        seed=seed,
        fixed_params=plan.fixed,
        evaluate_batch=evaluate_batch,
        on_trial=on_trial,
        task=task,
        by_time=plan.by_time,
    )
    params = dict(result.best_params)
    members = member_configs(plan.model, params, plan.families[0])
    params.pop("estimator", None)
    best = result.best
    gap = best.train_score - best.score
    return Selection(
        members=members,
        family=describe_members(members),
        params=params,
        validation_score=best.score,
        train_score=best.train_score,
        train_gap=gap if higher_is_better(metric) else -gap,
        result=result,
    )


def trial_inputs(
    plan: SelectionPlan, X: pd.DataFrame, y: pd.Series, seed: int, task: Task
) -> tuple[search.Sample, int]:
    """The rows the search scores and its fold repeats (`search.search_rows`), for trials run elsewhere."""
    return search.search_rows(X, y, plan.search, seed=seed, task=task, by_time=plan.by_time)
