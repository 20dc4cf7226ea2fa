"""Task types: what a target column says, and what each task measures, compares and answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from components.modeling.evaluate import calibration_error, regression_metrics, score_metric
from components.modeling.tasks import TASKS, TargetError, infer_task, labeled_target, task_named


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1] * 50, "binary"),
        (["yes", "no"] * 50, "binary"),
        ([True, False] * 50, "binary"),
        ([1.0, 0.0, np.nan] * 30, "binary"),  # a label column with gaps reads as floats
        (["a", "b", "c"] * 30, "multiclass"),
        ([3, 4, 5, 6, 7, 8, 9] * 20, "multiclass"),  # few whole numbers: classes (wine quality)
        (list(range(1, 30)) * 5, "regression"),  # many whole numbers: a count or an age (abalone rings)
        (np.linspace(0.5, 99.5, 200).tolist(), "regression"),
        (["1.5", "2.25", "3.0", "4.75", "5.5"] * 10 + [f"{v}.5" for v in range(30)], "regression"),
    ],
)
def test_the_task_is_read_from_the_target(values: list[object], task: str) -> None:
    assert infer_task(pd.Series(values, name="y")).task == task


def test_unlabeled_rows_are_counted_and_whole_floats_become_integers() -> None:
    inference = infer_task(pd.Series([1.0, 0.0, None, 1.0], name="y"))
    assert (inference.labeled_rows, inference.unlabeled_rows, inference.classes) == (3, 1, (0, 1))
    assert labeled_target(pd.Series([1.0, 0.0, None])).dtype == "int64"


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ([None, None, None], "no values"),
        ([7] * 40, "constant"),
        (list(range(1, 201)), "row identifiers"),
        ([f"customer {i}" for i in range(300)], "identifiers or free text"),
        ([f"c{i % 120}" for i in range(500)], "too many classes"),
    ],
)
def test_targets_that_fit_no_task_are_refused_with_the_reason(values: list[object], problem: str) -> None:
    with pytest.raises(TargetError, match=problem):
        infer_task(pd.Series(values, name="y"))


@pytest.mark.parametrize(
    ("values", "declared", "problem"),
    [
        (["a", "b", "c"] * 5, "binary", "exactly 2"),
        ([0, 1] * 5, "multiclass", "at least 3"),
        (["x", "y"] * 5, "regression", "regression needs numbers"),
    ],
)
def test_a_declared_task_is_checked(values: list[object], declared: str, problem: str) -> None:
    with pytest.raises(TargetError, match=problem):
        infer_task(pd.Series(values, name="y"), declared)  # type: ignore[arg-type]


def test_a_declared_task_wins_over_the_inference() -> None:
    assert infer_task(pd.Series([1, 2, 3, 4] * 10, name="y"), "regression").task == "regression"


def test_each_task_knows_its_metrics_dummy_and_answer() -> None:
    regression = task_named("regression")
    assert regression.default_metric == "rmse" and not regression.classification
    assert TASKS["binary"].default_metric == "roc_auc" and TASKS["binary"].floor_for("roc_auc", None) == 0.6
    assert TASKS["multiclass"].floor_for("log_loss", None) is None
    with pytest.raises(ValueError, match="not a regression metric"):
        regression.check_metric("roc_auc")
    with pytest.raises(ValueError, match="not a binary metric"):
        TASKS["binary"].check_metric("rmse")
    assert type(regression.dummy()).__name__ == "DummyRegressor"
    assert regression.sklearn_scoring("rmse") == "neg_root_mean_squared_error"
    assert TASKS["multiclass"].sklearn_scoring("roc_auc") == "roc_auc_ovr"
    assert TASKS["multiclass"].scores(np.array([[0.2, 0.5, 0.3]])).tolist() == [0.5]
    assert TASKS["binary"].scores(np.array([[0.2, 0.8]])).tolist() == [0.8]


def test_folds_adapt_to_the_rarest_class_and_never_go_below_two() -> None:
    y = pd.Series([0] * 50 + [1] * 3)
    assert TASKS["binary"].usable_folds(y, 5) == 3
    assert TASKS["binary"].folds(y, 5, seed=0).get_n_splits() == 3
    with pytest.raises(ValueError, match="at least 2 rows"):
        TASKS["binary"].usable_folds(pd.Series([0] * 10 + [1]), 5)


def test_regression_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(10, 3, 400)
    predicted = y + rng.normal(0, 1, 400)
    metrics = regression_metrics(y, predicted)
    assert metrics["rmse"] == pytest.approx(skm.root_mean_squared_error(y, predicted))
    assert metrics["mae"] == pytest.approx(skm.mean_absolute_error(y, predicted))
    assert metrics["r2"] == pytest.approx(skm.r2_score(y, predicted))
    assert metrics["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, predicted))
    assert "mape" not in regression_metrics(np.array([0.0, 1.0, 2.0]), np.array([0.1, 1.0, 2.0]))
    scorer = TASKS["regression"].scorer("rmse", y, predicted)
    assert scorer(np.arange(100)) == pytest.approx(skm.root_mean_squared_error(y[:100], predicted[:100]))


@pytest.mark.parametrize("n_classes", [3, 5])
def test_fast_multiclass_metrics_match_the_full_computation(n_classes: int) -> None:
    from components.modeling.evaluate import _metrics

    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 500)
    proba = rng.dirichlet(np.ones(n_classes), 500)
    full = _metrics(y, proba, n_classes, None)
    for name in ("log_loss", "brier", "roc_auc", "accuracy", "balanced_accuracy", "recall", "precision", "f1"):
        assert score_metric(name, y, proba, n_classes) == pytest.approx(full[name], abs=1e-12), name


def test_calibration_error_is_small_for_calibrated_and_large_for_distorted_probabilities() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(int)
    calibrated = calibration_error(y, np.c_[1 - p, p])
    squashed = np.clip(0.5 + (p - 0.5) * 0.3, 0, 1)  # what strong class weights do to a minority
    assert calibrated < 0.02 < 0.1 < calibration_error(y, np.c_[1 - squashed, squashed])
