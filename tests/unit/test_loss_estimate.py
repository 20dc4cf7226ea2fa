"""A regressor's metric estimated without labels from a model of its held-out errors (DLE)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from components.core.config import MonitoringConfig
from components.modeling.evaluate import regression_metric
from components.monitoring import monitor
from components.monitoring.monitor.loss import LossModel, estimate_from_losses


def _rows(n: int, seed: int, low: float = 0.0, high: float = 10.0) -> tuple[pd.DataFrame, np.ndarray]:
    """y = 3x + noise whose spread grows with x and is larger in the east."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, n)
    region = rng.choice(["east", "west"], n)
    spread = 0.5 + 0.4 * x + np.where(region == "east", 2.0, 0.0)
    return pd.DataFrame({"x": x, "region": region}), 3 * x + rng.normal(0, spread)


def _fitted() -> tuple[LinearRegression, pd.DataFrame]:
    X, y = _rows(3000, 0)
    model = LinearRegression().fit(X[["x"]], y)
    held_X, held_y = _rows(1500, 1)
    residuals = monitor.build_residuals(held_X, model.predict(held_X[["x"]]), pd.Series(held_y), 5000, 0)
    return model, residuals


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_the_estimate_follows_a_shift_into_the_noisy_region(metric: str) -> None:
    model, residuals = _fitted()
    losses = LossModel.fit(residuals)
    for low, high in ((0.0, 10.0), (6.0, 10.0)):  # as trained, then only the noisy end
        X, y = _rows(4000, 7, low, high)
        predicted = model.predict(X[["x"]])
        squared, absolute = losses.predict(X, predicted)
        estimate = estimate_from_losses(metric, squared, absolute, predicted)
        realized = regression_metric(metric, y, predicted)
        tolerance = 0.03 if metric == "r2" else 0.06 * realized
        assert estimate == pytest.approx(realized, abs=tolerance), (low, high)
    assert estimate_from_losses("mape", squared, absolute, predicted) is None


def test_the_estimated_decay_is_judged_like_a_realized_one_and_needs_its_inputs() -> None:
    model, residuals = _fitted()
    X, _ = _rows(2000, 9, 6.0, 10.0)
    predicted = model.predict(X[["x"]])
    baseline = {"test_rmse": float(np.sqrt(residuals["_squared_error"].mean())), "test_rows": 1500}
    decay = monitor.estimate_loss_decay("rmse", baseline, X, predicted, residuals, MonitoringConfig())
    assert decay is not None and decay.estimated and decay.decayed and decay.current > decay.baseline
    assert monitor.estimate_loss_decay("mape", {"test_mape": 0.1}, X, predicted, residuals, MonitoringConfig()) is None
    assert monitor.estimate_loss_decay("rmse", {}, X, predicted, residuals, MonitoringConfig()) is None


def test_unseen_categories_missing_columns_and_times_do_not_break_the_loss_model() -> None:
    _, residuals = _fitted()
    residuals["seen_at"] = pd.Timestamp("2026-01-01", tz="UTC")
    losses = LossModel.fit(residuals)
    assert "seen_at" not in losses.columns
    X = pd.DataFrame({"x": [1.0, 9.0, np.nan], "region": ["north", None, "east"]})  # no such region, a null
    squared, absolute = losses.predict(X, np.array([3.0, 27.0, 10.0]))
    assert np.isfinite(squared).all() and (squared >= 0).all() and (absolute >= 0).all()
