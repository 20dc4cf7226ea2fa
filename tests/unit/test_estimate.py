"""Performance without labels (CBPE): estimates against metrics realized on labels drawn from
the same calibrated probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from components.core.config import MonitoringConfig
from components.monitoring.monitor import estimate_decay, estimate_metric
from components.monitoring.monitor.estimate import expected_roc_auc

ROWS = 200_000


def _binary(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    positive = rng.beta(1.2, 4.0, ROWS)
    labels = (rng.random(ROWS) < positive).astype(int)  # calibrated by construction
    return np.column_stack([1 - positive, positive]), labels


@pytest.mark.parametrize(
    ("metric", "realized"),
    [
        ("roc_auc", lambda y, p, t: skm.roc_auc_score(y, p[:, 1])),
        ("accuracy", lambda y, p, t: skm.accuracy_score(y, p[:, 1] >= t)),
        ("balanced_accuracy", lambda y, p, t: skm.balanced_accuracy_score(y, p[:, 1] >= t)),
        ("f1", lambda y, p, t: skm.f1_score(y, p[:, 1] >= t)),
        ("precision", lambda y, p, t: skm.precision_score(y, p[:, 1] >= t)),
        ("recall", lambda y, p, t: skm.recall_score(y, p[:, 1] >= t)),
        ("log_loss", lambda y, p, t: skm.log_loss(y, p)),
        ("brier", lambda y, p, t: skm.brier_score_loss(y, p[:, 1])),
    ],
)
def test_binary_estimates_match_what_labels_realize(metric, realized) -> None:
    proba, labels = _binary()
    threshold = 0.3
    assert estimate_metric(metric, proba, threshold) == pytest.approx(realized(labels, proba, threshold), abs=0.006)


def test_multiclass_estimates_match_what_labels_realize() -> None:
    rng = np.random.default_rng(1)
    proba = rng.dirichlet([0.6, 0.6, 0.6], ROWS)
    labels = np.array([rng.choice(3, p=row) for row in proba[:20_000]])
    proba = proba[:20_000]
    predicted = proba.argmax(axis=1)
    assert estimate_metric("accuracy", proba) == pytest.approx(skm.accuracy_score(labels, predicted), abs=0.01)
    assert estimate_metric("balanced_accuracy", proba) == pytest.approx(
        skm.balanced_accuracy_score(labels, predicted), abs=0.015
    )
    assert estimate_metric("roc_auc", proba) is None  # no multiclass AUC estimate: said, not guessed


def test_auc_of_ties_and_of_certain_rows() -> None:
    assert expected_roc_auc(np.full(100, 0.3)) == pytest.approx(0.5)
    assert expected_roc_auc(np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert expected_roc_auc(np.ones(5)) is None  # no negative can exist


def test_an_estimated_drop_is_a_decay_and_noise_is_not() -> None:
    config = MonitoringConfig(min_rows=100)
    proba, _ = _binary()
    baseline = {"test_roc_auc": estimate_metric("roc_auc", proba), "test_rows": 2000.0}
    same = estimate_decay("roc_auc", baseline, proba[:5000], None, config)
    assert same.estimated and not same.decayed and abs(same.drop) < 0.02
    unsure = 0.5 + (proba - 0.5) * 0.3  # a shift the model is far less sure about
    worse = estimate_decay("roc_auc", baseline, unsure[:5000], None, config)
    assert worse.decayed and worse.drop > 0.05
    assert estimate_decay("average_precision", {"test_average_precision": 0.5}, proba, None, config) is None
    assert estimate_decay("roc_auc", {}, proba, None, config) is None  # no baseline
