"""Model selection as one plain step: planned from the split and the config, run without Prefect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.core.config import PipelineConfig
from components.modeling.prepare import infer_feature_spec, split_data
from components.modeling.selection import plan_selection, select_model
from components.modeling.tasks import task_named


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    y = np.where(x[:, 0] + 0.5 * rng.normal(size=600) > 1.2, "yes", "no")
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})


def _config(**search: object) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"task": "binary", "data": {"name": "t", "target": "y"}, "search": {"trials": 3, "cv_folds": 3, **search}}
    )


def _plan(spec, split, config: PipelineConfig, task):  # type: ignore[no-untyped-def]
    return plan_selection(spec, split, config.model, config.search, config.seed, task)


def test_the_plan_settles_weights_folds_and_where_trials_run(table: pd.DataFrame) -> None:
    task = task_named("binary")
    spec = infer_feature_spec(table, "y")
    split = split_data(table, spec, 0.25, 0, task=task)
    plan = _plan(spec, split, _config(workers=4), task)
    assert plan.parallel and plan.searched and plan.folds == 3
    assert plan.search.trials >= len(plan.families)  # every family's defaults are tried
    defaults = _plan(spec, split, _config(method="none", dask_address="tcp://scheduler:8786"), task)
    assert not defaults.parallel and not defaults.searched  # nothing to spread: the defaults, compared here
    assert defaults.search.trials == len(defaults.families)


def test_select_model_runs_without_prefect_and_explains_its_choice(table: pd.DataFrame) -> None:
    task = task_named("binary")
    spec = infer_feature_spec(table, "y")
    split = split_data(table, spec, 0.25, 0, task=task)
    plan = _plan(spec, split, _config(), task)
    seen: list[int] = []
    chosen = select_model(
        plan,
        split.X_train,
        split.y_train,
        metric="roc_auc",
        seed=0,
        task=task,
        on_trial=lambda t: seen.append(t.number),
    )
    assert chosen.members and chosen.family and 0.5 < chosen.validation_score <= 1
    assert chosen.train_gap == pytest.approx(chosen.train_score - chosen.validation_score)
    assert seen and "best cv roc_auc" in chosen.summary(plan, "roc_auc")
