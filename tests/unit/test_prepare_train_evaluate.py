import numpy as np
import pandas as pd
import pytest

from components.core.config import ModelConfig
from components.modeling.evaluate import compute_metrics, evaluate_model
from components.modeling.prepare import PreparationError, infer_feature_spec, split_data
from components.modeling.train import TrainingError, build_estimator, train_model


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
    assert 35 <= len(a.X_test) <= 65  # a quarter of 200 rows, give or take: each row's key decides its side
    assert abs(a.y_test.eq("yes").mean() - tiny["y"].eq("yes").mean()) < 0.1
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


def test_feature_spec_leaves_out_identifier_like_text_dates_as_text_and_empty_columns() -> None:
    n = 200
    frame = pd.DataFrame(
        {
            "name": [f"passenger {i}" for i in range(n)],  # a different value per row: a name, not a category
            "booked": pd.date_range("2026-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "constant": ["x"] * n,
            "empty": [None] * n,
            "garage": ["yes", None] * (n // 2),  # one value and missing: missingness is information
            "size": np.arange(n) % 7,
            "y": [0, 1] * (n // 2),
        }
    )
    spec = infer_feature_spec(frame, "y")
    assert spec.numeric == ("size",) and spec.categorical == ("garage",)
    assert set(spec.notes) == {"name", "booked", "constant", "empty"}
    assert "identifier-like" in spec.notes["name"] and "dates" in spec.notes["booked"]


def test_a_time_split_holds_out_the_newest_rows() -> None:
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "when": rng.permutation(pd.date_range("2026-01-01", periods=n, freq="h")).astype(str),
            "x": rng.normal(size=n),
            "y": rng.choice(["a", "b"], n),
        }
    )
    spec = infer_feature_spec(frame, "y", time_column="when")
    split = split_data(frame, spec, 0.2, seed=0, strategy="time", time_column="when")
    times = pd.to_datetime(frame["when"])
    assert split.by_time and len(split.X_test) == 60
    assert times.loc[split.X_test.index].min() > times.loc[split.X_train.index].max()
    assert times.loc[split.X_train.index].is_monotonic_increasing  # forward-moving folds need time order
    with pytest.raises(PreparationError, match=r"needs data\.time_column"):
        split_data(frame, spec, 0.2, seed=0, strategy="time")


def test_regression_splits_unstratified_and_rare_classes_are_left_out_and_counted() -> None:
    from components.modeling.tasks import TASKS

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=100), "price": rng.gamma(2, 10, 100)})
    frame.loc[:4, "price"] = np.nan
    split = split_data(frame, infer_feature_spec(frame, "price"), 0.2, seed=0, task=TASKS["regression"])
    assert len(split.X_train) + len(split.X_test) == 95 and split.unlabeled_rows == 5
    assert 10 <= len(split.X_test) <= 30
    classes = pd.DataFrame({"x": range(60), "y": ["a"] * 29 + ["b"] * 29 + ["c"] * 2})
    split = split_data(classes, infer_feature_spec(classes, "y"), 0.2, seed=0, task=TASKS["multiclass"])
    assert split.rare_classes == {"c": 2} and set(split.y_train) == {"a", "b"}


@pytest.mark.parametrize("estimator", ["linear", "hist_gradient_boosting", "random_forest"])
def test_every_family_learns_a_regression_target(estimator: str) -> None:
    from components.modeling.tasks import TASKS

    rng = np.random.default_rng(2)
    n = 600
    frame = pd.DataFrame({"a": rng.normal(size=n), "kind": rng.choice(["p", "q"], n)})
    frame["y"] = 3 * frame["a"] + np.where(frame["kind"] == "p", 2.0, -1.0) + rng.normal(0, 0.5, n)
    task = TASKS["regression"]
    spec = infer_feature_spec(frame, "y")
    split = split_data(frame, spec, 0.25, seed=1, task=task)
    params = {"n_estimators": 50} if estimator == "random_forest" else {}
    model = train_model(
        split.X_train, split.y_train, spec, ModelConfig(estimator=estimator, params=params), 1, task=task
    )
    assert task.compute_metrics(split.y_test, task.output(model, split.X_test))["r2"] > 0.8
    with pytest.raises(TrainingError, match="not a regression model family"):
        build_estimator(ModelConfig(estimator="logistic_regression"), 0, task)


def test_split_conformal_intervals_cover_about_their_nominal_share_of_new_rows() -> None:
    from components.modeling.tasks import TASKS
    from components.modeling.train import fit_final_model

    rng = np.random.default_rng(3)
    n = 3000
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    frame["y"] = 2 * frame["a"] - frame["b"] + rng.standard_t(4, n)
    task = TASKS["regression"]
    spec = infer_feature_spec(frame, "y")
    config = ModelConfig(estimator="linear", interval_coverage=0.8)
    covered = []
    for seed in range(4):  # one split's luck moves coverage by a standard deviation (1 point) or more
        split = split_data(frame, spec, 0.5, seed=seed, task=task)
        final = fit_final_model(split.X_train, split.y_train, spec, config, 0, task=task, folds=5)
        assert final.interval is not None and final.interval.coverage == 0.8
        inside = np.abs(split.y_test - final.model.predict(split.X_test)) <= final.interval.half_width
        covered.append(inside.mean())
    assert abs(np.mean(covered) - 0.8) < 0.02, covered


def test_class_weights_are_recalibrated_and_the_threshold_applies_to_the_served_probabilities() -> None:
    from components.inference.scoring import decision_threshold, pipeline_of, predict_frame
    from components.modeling.evaluate import calibration_error, label_positions
    from components.modeling.search import tune_threshold
    from components.modeling.tasks import TASKS
    from components.modeling.train import fit_final_model
    from components.simulation.simulate import generate_loans

    frame = generate_loans(6000, seed=3).frame
    task = TASKS["binary"]
    spec = infer_feature_spec(frame, "default", "loan_id", "application_time")
    split = split_data(frame, spec, 0.3, seed=0, task=task)
    weighted = ModelConfig(estimator="logistic_regression", params={"class_weight": "balanced"})

    def tune(y: pd.Series, positive: np.ndarray) -> object:
        return tune_threshold(y, positive, pos_label=1)

    raw = train_model(split.X_train, split.y_train, spec, weighted, 0, task=task)
    final = fit_final_model(split.X_train, split.y_train, spec, weighted, 0, task=task, folds=3, tune_threshold=tune)
    assert final.calibration == "isotonic" and final.threshold is not None
    y = label_positions(split.y_test, [0, 1])
    raw_error = calibration_error(y, raw.predict_proba(split.X_test))
    assert calibration_error(y, final.model.predict_proba(split.X_test)) < raw_error / 2
    assert decision_threshold(final.model) == final.threshold.threshold
    answer = predict_frame(final.model, split.X_test)
    expected = (np.asarray(answer.probabilities) >= final.threshold.threshold).astype(int)
    assert answer.labels == expected.tolist()
    assert type(pipeline_of(final.model).named_steps["model"]).__name__ == "LogisticRegression"


def test_numbers_stored_as_text_are_numeric_features_and_codes_stay_text() -> None:
    from components.data.contract import NUMERIC_TYPES, TEXT_TYPES, profile_suite
    from components.inference.scoring import predict_frame
    from components.modeling.prepare import features_frame

    rng = np.random.default_rng(4)
    n = 300
    horsepower = rng.integers(50, 250, n).astype(str).astype(object)
    horsepower[:6] = "?"  # the UCI way of writing a missing number
    frame = pd.DataFrame(
        {
            "horsepower": horsepower,
            "price": [f"{v:,}" for v in rng.integers(1_000, 90_000, n)],  # thousands separators
            "zip": rng.choice(["02139", "10001", "94103"], n),  # codes with leading zeros stay text
            "y": rng.choice(["a", "b"], n),
        }
    )
    spec = infer_feature_spec(frame, "y")
    assert spec.numeric == ("horsepower", "price") == spec.numeric_text and spec.categorical == ("zip",)
    X = features_frame(frame, spec)
    assert X["horsepower"].dtype == "float64" and X["horsepower"].isna().sum() == 6
    assert X["price"].iloc[0] == float(frame["price"].iloc[0].replace(",", ""))
    model = train_model(X, frame["y"], spec, ModelConfig(estimator="linear"), 0)
    assert len(predict_frame(model, frame.head(10)).labels) == 10  # the raw text is read the same way
    suite = profile_suite(frame, "cars", target="y")
    types = {
        e["kwargs"]["column"]: e["kwargs"]["type_list"] for e in suite["expectations"] if "type_list" in e["kwargs"]
    }
    assert types["horsepower"] == TEXT_TYPES + NUMERIC_TYPES and types["zip"] == TEXT_TYPES


def test_a_small_table_holds_out_enough_rows_for_the_gate() -> None:
    frame = pd.DataFrame({"x": range(120), "y": ["a", "b", "c"] * 40})
    spec = infer_feature_spec(frame, "y")
    assert 14 <= len(split_data(frame, spec, 0.2, seed=0).X_test) <= 34  # a fifth, give or take
    assert len(split_data(frame, spec, 0.2, seed=0, min_test_rows=40).X_test) >= 40
    assert len(split_data(frame.head(60), spec, 0.2, seed=0, min_test_rows=30).X_test) >= 20  # two thirds train


def test_rows_keep_their_side_of_the_split_as_data_grows() -> None:
    """The champion is scored on this run's held-out rows: none of them may have been its training
    rows merely because more data arrived and a random split moved."""
    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["a", "b"], n), "y": rng.integers(0, 2, n)})
    spec = infer_feature_spec(frame, "y")
    first = split_data(frame.head(1000), spec, 0.2, seed=3)
    grown = split_data(frame, spec, 0.2, seed=3)
    assert set(first.X_test.index) <= set(grown.X_test.index)
    assert not set(first.X_train.index) & set(grown.X_test.index)
    assert len(grown.X_test) == pytest.approx(600, abs=60)
    reseeded = split_data(frame, spec, 0.2, seed=4)
    assert set(reseeded.X_test.index) != set(grown.X_test.index)
    with_ids = frame.assign(key=np.arange(n))  # with an id column, the id decides, not the content
    spec_ids = infer_feature_spec(with_ids, "y", id_column="key")
    edited = with_ids.assign(x=with_ids["x"] + 1)
    assert set(split_data(with_ids, spec_ids, 0.2, 3).X_test.index) == set(
        split_data(edited, spec_ids, 0.2, 3).X_test.index
    )
