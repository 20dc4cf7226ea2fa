"""Behavioural tests of trained models: invariance, direction and minimum functionality.

Each estimator family is trained once per module on generated loan data, exactly as the flow
trains it (`infer_feature_spec`, `split_data`, `train_model` with a decision threshold), and is
asked through `predict_frame`, the one prediction path of the service and of batch scoring.
The generator's `default_probability` is the ground truth for the directions: a lower credit
score, a higher debt-to-income ratio or interest rate, more delinquencies, a bigger loan and
unemployment all raise the risk of default.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from components.core.config import ModelConfig
from components.inference.scoring import decision_threshold, predict_frame, predict_records
from components.modeling.prepare import FeatureSpec, infer_feature_spec, split_data
from components.modeling.train import train_model
from components.simulation.simulate import ID_COLUMN, TARGET, TIME_COLUMN, generate_loans

SEED = 11
ROWS = 10_000
THRESHOLD = 0.3
SINGLE_ROWS = 40  # rows predicted one at a time: a random forest's call costs tens of ms
ESTIMATORS = ("logistic_regression", "hist_gradient_boosting", "random_forest")


@dataclass(frozen=True)
class Trained:
    estimator: str
    model: Any
    spec: FeatureSpec
    rows: pd.DataFrame  # held-out rows as a client sends them: id and time columns included, no label
    labels: pd.Series
    probabilities: np.ndarray  # the model's answer for `rows`, computed once


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One BLAS/OpenMP thread, as the service runs: thread pools make small predictions stall on a busy machine."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def loans() -> pd.DataFrame:
    return generate_loans(ROWS, seed=SEED).frame


@pytest.fixture(scope="module")
def models() -> dict[str, Trained]:
    """Each estimator trained at most once per module, when a test first asks for it."""
    return {}


def _trained(models: dict[str, Trained], loans: pd.DataFrame, estimator: str) -> Trained:
    if estimator not in models:
        spec = infer_feature_spec(loans, TARGET, id_column=ID_COLUMN, time_column=TIME_COLUMN)
        split = split_data(loans, spec, test_size=0.25, seed=SEED)
        config = ModelConfig(estimator=estimator)
        model = train_model(split.X_train, split.y_train, spec, config, SEED, threshold=THRESHOLD)
        rows = loans.loc[split.X_test.index].drop(columns=[TARGET])
        models[estimator] = Trained(estimator, model, spec, rows, split.y_test, _probabilities(model, rows))
    return models[estimator]


@pytest.fixture(scope="module", params=ESTIMATORS)
def trained(request: pytest.FixtureRequest, models: dict[str, Trained], loans: pd.DataFrame) -> Trained:
    return _trained(models, loans, request.param)


@pytest.fixture(scope="module")
def default_model(models: dict[str, Trained], loans: pd.DataFrame) -> Trained:
    """The estimator a config without `model.estimator` trains (logistic regression: linear in each feature)."""
    return _trained(models, loans, ModelConfig().estimator)


def _probabilities(model: Any, rows: pd.DataFrame) -> np.ndarray:
    return np.asarray(predict_frame(model, rows).probabilities, dtype="float64")


def _json_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as a JSON client sends them: plain numbers and strings, null for missing values."""
    plain = rows.astype(object).where(rows.notna(), None)
    return json.loads(json.dumps(plain.to_dict(orient="records")))


# Minimum functionality -------------------------------------------------------------------------


def test_probabilities_are_finite_and_within_0_and_1(trained: Trained) -> None:
    probabilities = trained.probabilities
    assert len(probabilities) == len(trained.rows)
    assert np.isfinite(probabilities).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert probabilities.std() > 0.05, "the model answers (almost) the same probability for every row"


def test_labels_follow_the_tuned_threshold(trained: Trained) -> None:
    assert decision_threshold(trained.model) == pytest.approx(THRESHOLD)
    answer = predict_frame(trained.model, trained.rows)
    probabilities = np.asarray(answer.probabilities)
    assert answer.classes == [0, 1]
    np.testing.assert_array_equal(np.asarray(answer.labels), (probabilities >= THRESHOLD).astype(int))


def test_ranks_held_out_defaults_well_above_chance(trained: Trained) -> None:
    # The generator's own P(default | x) reaches about 0.84; a constant model scores 0.5.
    assert roc_auc_score(trained.labels, trained.probabilities) > 0.75


def test_missing_extreme_and_unseen_values_still_get_a_probability(trained: Trained) -> None:
    rows = trained.rows.head(8).copy()
    rows[["annual_income", "employment_years", "credit_score"]] = np.nan  # the columns that have gaps in training
    rows["home_ownership"] = None
    extremes = trained.rows.head(4).copy()
    extremes["credit_score"] = [300, 850, 300, 850]
    extremes["debt_to_income"] = [0.0, 60.0, 60.0, 0.0]
    extremes["annual_income"] = [1e3, 1e7, 1e3, 1e7]
    extremes["loan_amount"] = [1_000.0, 100_000.0, 100_000.0, 1_000.0]
    extremes["delinquencies_2y"] = [0, 12, 12, 0]
    unseen = trained.rows.head(4).copy()
    unseen["region"] = "atlantis"
    unseen["purpose"] = "space_travel"
    for frame in (rows, extremes, unseen):
        probabilities = _probabilities(trained.model, frame)
        assert np.isfinite(probabilities).all() and ((probabilities >= 0) & (probabilities <= 1)).all()


# Invariance ------------------------------------------------------------------------------------


def test_id_time_and_unused_columns_do_not_change_predictions(trained: Trained) -> None:
    expected = trained.probabilities
    changed = trained.rows.copy()
    changed[ID_COLUMN] = changed[ID_COLUMN].to_numpy()[::-1] + 987_654_321
    changed[TIME_COLUMN] = changed[TIME_COLUMN] + pd.Timedelta(days=400)
    changed["channel"] = "broker"  # a column the model never saw
    np.testing.assert_array_equal(_probabilities(trained.model, changed), expected)
    without = trained.rows.drop(columns=[ID_COLUMN, TIME_COLUMN])
    np.testing.assert_array_equal(_probabilities(trained.model, without), expected)


def test_column_order_does_not_change_predictions(trained: Trained) -> None:
    expected = trained.probabilities
    reversed_columns = trained.rows[list(trained.rows.columns)[::-1]]
    np.testing.assert_array_equal(_probabilities(trained.model, reversed_columns), expected)


def test_row_order_does_not_change_any_rows_prediction(trained: Trained) -> None:
    expected = pd.Series(trained.probabilities, index=trained.rows.index)
    shuffled = trained.rows.sample(frac=1.0, random_state=SEED)
    answer = pd.Series(_probabilities(trained.model, shuffled), index=shuffled.index)
    assert not answer.index.equals(expected.index)
    pd.testing.assert_series_equal(answer.loc[expected.index], expected)


def test_a_row_alone_gets_the_answer_it_gets_in_a_batch(trained: Trained) -> None:
    rows = trained.rows.head(SINGLE_ROWS)
    batch = predict_frame(trained.model, rows)
    singles = [predict_frame(trained.model, rows.iloc[[i]]) for i in range(len(rows))]
    assert [s.labels[0] for s in singles] == batch.labels
    # Equal up to the last bit BLAS may round differently for one row than for a matrix of them.
    np.testing.assert_allclose([s.probabilities[0] for s in singles], batch.probabilities, rtol=0, atol=1e-12)


def test_formatting_of_values_does_not_change_predictions(trained: Trained) -> None:
    expected = trained.probabilities
    numeric = list(trained.spec.numeric)
    as_float = trained.rows.astype({column: "float64" for column in numeric})
    as_text = trained.rows.copy()
    for column in numeric:  # numbers sent as strings ("640"), missing ones as None
        as_text[column] = [None if pd.isna(v) else str(v) for v in trained.rows[column]]
    as_category = trained.rows.astype({column: "category" for column in trained.spec.categorical})
    as_string = trained.rows.astype({column: "string" for column in trained.spec.categorical})
    for variant in (as_float, as_text, as_category, as_string):
        np.testing.assert_array_equal(_probabilities(trained.model, variant), expected)
    # The service's path: the same rows as JSON records.
    records = _json_records(trained.rows.drop(columns=[TIME_COLUMN]))
    np.testing.assert_allclose(predict_records(trained.model, records).probabilities, expected, rtol=0, atol=1e-12)


# Direction -------------------------------------------------------------------------------------

# (column, how it changes, +1 when the change raises the risk of default, -1 when it lowers it)
DIRECTIONS: list[tuple[str, Any, int]] = [
    ("credit_score", -80, +1),
    ("credit_score", +80, -1),
    ("debt_to_income", +10, +1),
    ("debt_to_income", -10, -1),
    ("interest_rate", +4, +1),
    ("delinquencies_2y", +2, +1),
    ("loan_amount", +10_000, +1),
    ("employment_type", "unemployed", +1),
]
# Weaker effects that only the default estimator (linear in each feature) is held to.
LINEAR_ONLY: list[tuple[str, Any, int]] = [
    ("term_months", +24, +1),
    ("employment_years", +10, -1),
]


def _case_id(case: tuple[str, Any, int]) -> str:
    column, change, _ = case
    return f"{column}={change}" if isinstance(change, str) else f"{column}{change:+}"


def _perturbed(rows: pd.DataFrame, column: str, change: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows with one feature changed, and which rows it changed (missing values stay missing)."""
    out = rows.copy()
    if isinstance(change, str):
        out[column] = change
        moved = (rows[column] != change).to_numpy()
    else:
        out[column] = (rows[column] + change).clip(lower=0)
        moved = (rows[column].notna() & (out[column] != rows[column])).to_numpy()
    return out, moved


def _shifts(trained: Trained, column: str, change: Any) -> np.ndarray:
    changed, moved = _perturbed(trained.rows, column, change)
    assert moved.sum() > 100, f"too few rows changed by {column} {change}"
    return (_probabilities(trained.model, changed) - trained.probabilities)[moved]


@pytest.mark.parametrize(("column", "change", "sign"), DIRECTIONS, ids=[_case_id(case) for case in DIRECTIONS])
def test_changing_a_risk_factor_moves_most_probabilities_its_way(
    trained: Trained, column: str, change: Any, sign: int
) -> None:
    shifts = _shifts(trained, column, change) * sign
    expected_way, other_way = float((shifts > 0).mean()), float((shifts < 0).mean())
    assert expected_way > 0.6, f"{trained.estimator}: only {expected_way:.0%} of rows moved the expected way"
    assert expected_way > 2 * other_way, f"{trained.estimator}: {other_way:.0%} moved the other way"
    assert shifts.mean() > 0


@pytest.mark.parametrize(
    ("column", "change", "sign"), DIRECTIONS + LINEAR_ONLY, ids=[_case_id(case) for case in DIRECTIONS + LINEAR_ONLY]
)
def test_default_estimator_moves_every_row_the_way_of_the_risk_factor(
    default_model: Trained, column: str, change: Any, sign: int
) -> None:
    shifts = _shifts(default_model, column, change) * sign
    assert (shifts > 0).all(), f"{int((shifts <= 0).sum())} of {len(shifts)} rows did not move the expected way"
