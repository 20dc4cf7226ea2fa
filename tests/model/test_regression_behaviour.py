"""Behavioural tests of regression models: invariance, direction and minimum functionality.

Each family is trained once on generated taxi trips, as the flow trains it (`fit_final_model` with a
split-conformal interval), and asked through `predict_frame`, the service's and batch scoring's one
prediction path. The generator's `expected_duration` is the ground truth for the directions: a
longer distance, more traffic, snow, or a downtown pickup make a trip take longer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from components.core.config import ModelConfig
from components.inference.scoring import predict_frame
from components.modeling.prepare import infer_feature_spec, split_data
from components.modeling.tasks import TASKS
from components.modeling.train import FinalModel, fit_final_model
from components.simulation.simulate import TRIP_ID, TRIP_TARGET, TRIP_TIME, generate_trips

SEED = 5
TASK = TASKS["regression"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def trips() -> pd.DataFrame:
    return generate_trips(6000, seed=SEED).frame


@pytest.fixture(scope="module", params=["linear", "hist_gradient_boosting"])
def trained(request: pytest.FixtureRequest, trips: pd.DataFrame) -> tuple[FinalModel, pd.DataFrame, pd.Series]:
    spec = infer_feature_spec(trips, TRIP_TARGET, TRIP_ID, TRIP_TIME)
    split = split_data(trips, spec, 0.25, seed=SEED, task=TASK)
    final = fit_final_model(
        split.X_train, split.y_train, spec, ModelConfig(estimator=request.param), SEED, task=TASK, folds=3
    )
    rows = trips.loc[split.X_test.index].drop(columns=[TRIP_TARGET])
    return final, rows, split.y_test


def _predict(final: FinalModel, rows: pd.DataFrame) -> np.ndarray:
    assert final.interval is not None
    return np.asarray(predict_frame(final.model, rows, half_width=final.interval.half_width).labels)


def test_minimum_functionality_and_honest_intervals(trained: tuple[FinalModel, pd.DataFrame, pd.Series]) -> None:
    final, rows, labels = trained
    answer = predict_frame(final.model, rows, half_width=final.interval.half_width if final.interval else None)
    predicted = np.asarray(answer.labels)
    assert np.isfinite(predicted).all()
    assert TASK.compute_metrics(labels, predicted)["r2"] > 0.6
    assert answer.lower is not None and answer.upper is not None
    inside = (np.asarray(answer.lower) <= labels.to_numpy()) & (labels.to_numpy() <= np.asarray(answer.upper))
    assert abs(inside.mean() - 0.9) < 0.04


@pytest.mark.parametrize(
    ("column", "change"),
    [
        ("distance_km", lambda v: v * 2),
        ("traffic_index", lambda v: (v.fillna(0.3) + 0.4).clip(0, 1)),
        ("pickup_zone", lambda v: pd.Series("center", index=v.index)),
    ],
)
def test_longer_distances_more_traffic_and_downtown_take_longer(
    trained: tuple[FinalModel, pd.DataFrame, pd.Series], column: str, change: Any
) -> None:
    final, rows, _ = trained
    changed = rows.assign(**{column: change(rows[column])})
    differs = (changed[column] != rows[column]).to_numpy()  # rows already downtown stay where they are
    base, moved = _predict(final, rows), _predict(final, changed)
    assert (moved > base)[differs].mean() > 0.8, column


def test_invariant_to_ids_times_column_order_and_single_rows(
    trained: tuple[FinalModel, pd.DataFrame, pd.Series],
) -> None:
    final, rows, _ = trained
    base = _predict(final, rows.head(20))
    shuffled = rows.head(20).assign(**{TRIP_ID: -1, TRIP_TIME: pd.Timestamp("2030-01-01")})
    np.testing.assert_allclose(_predict(final, shuffled[list(reversed(shuffled.columns))]), base)
    one_by_one = [_predict(final, rows.iloc[[i]])[0] for i in range(5)]
    np.testing.assert_allclose(one_by_one, base[:5])


def test_missing_and_unseen_values_are_still_answered(trained: tuple[FinalModel, pd.DataFrame, pd.Series]) -> None:
    final, rows, _ = trained
    odd = rows.head(4).copy()
    odd["traffic_index"] = np.nan
    odd["weather"] = ["hail", None, "clear", "rain"]
    odd["distance_km"] = [0.3, 90.0, 5.0, 1e4]
    assert np.isfinite(_predict(final, odd)).all()
