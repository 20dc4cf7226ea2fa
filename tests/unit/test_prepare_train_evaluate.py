import numpy as np
import pandas as pd
import pytest

from components.config import ModelConfig
from components.evaluate import compute_metrics, evaluate_model
from components.prepare import PreparationError, infer_feature_spec, split_data
from components.train import TrainingError, build_estimator, train_model


@pytest.fixture
def tiny() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "when": pd.date_range("2026-01-01", periods=n, freq="h"),
            "x": x,
            "count": rng.integers(0, 5, n),
            "color": rng.choice(["red", "blue", None], n),
            "flag": rng.choice([True, False], n),
            "y": np.where(x + rng.normal(scale=0.5, size=n) > 0, "yes", "no"),
        }
    )


def test_feature_spec_excludes_ids_times_and_target(tiny: pd.DataFrame) -> None:
    spec = infer_feature_spec(tiny, "y", id_column="id")
    assert spec.numeric == ("x", "count")
    assert spec.categorical == ("color", "flag")
    assert set(spec.excluded) == {"id", "when"}


def test_feature_spec_names_missing_columns(tiny: pd.DataFrame) -> None:
    with pytest.raises(PreparationError, match="target_typo"):
        infer_feature_spec(tiny, "target_typo")


def test_split_is_stratified_seeded_and_does_not_mutate(tiny: pd.DataFrame) -> None:
    before = tiny.copy()
    spec = infer_feature_spec(tiny, "y", id_column="id")
    a = split_data(tiny, spec, 0.25, seed=1)
    b = split_data(tiny, spec, 0.25, seed=1)
    pd.testing.assert_index_equal(a.X_test.index, b.X_test.index)
    assert len(a.X_test) == 50
    assert abs(a.y_test.eq("yes").mean() - tiny["y"].eq("yes").mean()) < 0.03
    assert "id" not in a.X_train and "y" not in a.X_train
    pd.testing.assert_frame_equal(tiny, before)


def test_unlabeled_rows_are_left_out(tiny: pd.DataFrame) -> None:
    frame = tiny.copy()
    frame.loc[:9, "y"] = None
    split = split_data(frame, infer_feature_spec(frame, "y", id_column="id"), 0.2, seed=1)
    assert len(split.X_train) + len(split.X_test) == 190


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [(["a"] * 20, "at least 2"), (["a"] * 19 + ["b"], "fewer than 2")],
)
def test_untrainable_targets(labels: list[str], fragment: str) -> None:
    frame = pd.DataFrame({"x": range(20), "y": labels})
    with pytest.raises(PreparationError, match=fragment):
        split_data(frame, infer_feature_spec(frame, "y"), 0.2, seed=0)


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest", "hist_gradient_boosting"])
def test_every_estimator_learns_and_produces_finite_probabilities(tiny: pd.DataFrame, estimator: str) -> None:
    spec = infer_feature_spec(tiny, "y", id_column="id")
    split = split_data(tiny, spec, 0.25, seed=1)
    params = {"n_estimators": 30} if estimator == "random_forest" else {}
    model = train_model(split.X_train, split.y_train, spec, ModelConfig(estimator=estimator, params=params), seed=1)
    proba = model.predict_proba(split.X_test)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert evaluate_model(model, split.X_test, split.y_test)["roc_auc"] > 0.75


def test_unseen_category_and_missing_values_at_predict_time(tiny: pd.DataFrame) -> None:
    spec = infer_feature_spec(tiny, "y", id_column="id")
    split = split_data(tiny, spec, 0.25, seed=1)
    model = train_model(split.X_train, split.y_train, spec, ModelConfig(), seed=1)
    odd = split.X_test.head(3).copy()
    odd["color"] = ["purple", None, "red"]
    odd.loc[odd.index[0], "x"] = np.nan
    assert np.isfinite(model.predict_proba(odd)).all()


def test_bad_params_are_a_training_error() -> None:
    with pytest.raises(TrainingError, match="logistic_regression"):
        build_estimator(ModelConfig(estimator="logistic_regression", params={"not_a_param": 1}), seed=0)


def test_metrics_binary_perfect_and_label_types() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]])
    for classes, y in ((["no", "yes"], ["no", "yes", "no", "yes"]), ([0, 1], [0, 1, 0, 1])):
        metrics = compute_metrics(pd.Series(y), proba, classes)
        assert metrics["roc_auc"] == 1.0 and metrics["accuracy"] == 1.0 and metrics["f1"] == 1.0


def test_metrics_multiclass_macro() -> None:
    proba = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 0.8 + 0.2 / 3
    metrics = compute_metrics(pd.Series(list("abcabc")), proba, list("abc"))
    assert metrics["roc_auc"] == 1.0 and metrics["balanced_accuracy"] == 1.0


def test_metrics_refuse_labels_the_model_never_saw() -> None:
    with pytest.raises(ValueError, match="not among"):
        compute_metrics(pd.Series(["a", "z"]), np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b"])
