"""The promotion gate: a pure function of evidence and policy, and the statistics behind it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from components.modeling.evaluate import compute_metrics, paired_bootstrap, score_metric, slice_metrics
from components.modeling.promotion import Evidence, Interval, PromotionPolicy, ServingCheck, decide_promotion
from components.modeling.tasks import TASKS

AUC = PromotionPolicy(metric="roc_auc", min_score=0.7, min_test_rows=100, latency_budget_ms=100)
FAST = ServingCheck(True, 3.0)


def _evidence(**overrides) -> Evidence:  # type: ignore[no-untyped-def]
    base = {
        "rows": 1000,
        "candidate": {"roc_auc": 0.80, "recall": 0.6},
        "dummy": {"roc_auc": 0.5},
        "serving": FAST,
    }
    return Evidence(**{**base, **overrides})


def _interval(mean: float, low: float, high: float) -> Interval:
    return Interval(mean, low, high, 0.95, 1000, 1000)


def _check(decision, name):  # type: ignore[no-untyped-def]
    return next(c for c in decision.checks if c.name == name)


def test_first_candidate_needs_only_the_absolute_checks() -> None:
    decision = decide_promotion(_evidence(), AUC)
    assert decision.promote, decision.reason
    assert "no champion yet" in decision.reason
    assert _check(decision, "beats_champion").passed is None


@pytest.mark.parametrize(
    ("overrides", "check", "fragment"),
    [
        ({"candidate": {"roc_auc": 0.65}}, "floor:roc_auc", "< floor 0.7000"),
        ({"rows": 50}, "held_out_rows", "50 held-out rows (minimum 100)"),
        ({"dummy": {"roc_auc": 0.81}}, "beats_dummy", "vs dummy baseline 0.8100"),
        ({"dummy": None}, "beats_dummy", "no dummy baseline"),
        ({"serving": ServingCheck(False, None, "ValueError: boom")}, "serving", "boom"),
        ({"serving": ServingCheck(True, 250.0)}, "serving", "250.0 ms (budget 100"),
    ],
)
def test_each_failed_check_holds_the_candidate_back_and_says_why(overrides, check, fragment) -> None:
    decision = decide_promotion(_evidence(**overrides), AUC)
    assert not decision.promote
    assert _check(decision, check).passed is False
    assert fragment in decision.reason


def test_extra_floors_and_the_train_gap_are_checks() -> None:
    policy = PromotionPolicy(metric="roc_auc", min_score=0.7, floors={"recall": 0.7}, max_train_gap=0.05)
    decision = decide_promotion(_evidence(train_gap=0.12), policy)
    assert not decision.promote
    assert {c.name for c in decision.failed} == {"floor:recall", "train_gap"}


def test_the_interval_lower_bound_must_clear_the_required_gain() -> None:
    champion = {"roc_auc": 0.78}
    noisy = decide_promotion(_evidence(champion=champion, improvement=_interval(0.02, -0.004, 0.04)), AUC)
    assert not noisy.promote and "lower bound must exceed" in noisy.reason
    clear = decide_promotion(_evidence(champion=champion, improvement=_interval(0.02, 0.01, 0.03)), AUC)
    assert clear.promote, clear.reason
    demanding = PromotionPolicy(metric="roc_auc", min_score=0.7, min_improvement=0.015)
    assert not decide_promotion(
        _evidence(champion=champion, improvement=_interval(0.02, 0.01, 0.03)), demanding
    ).promote
    relative = PromotionPolicy(metric="roc_auc", min_score=0.7, min_relative_improvement=0.01)  # 1% of 0.78
    assert decide_promotion(_evidence(champion=champion, improvement=_interval(0.02, 0.009, 0.03)), relative).promote


def test_a_tie_keeps_the_champion() -> None:
    decision = decide_promotion(_evidence(champion={"roc_auc": 0.80}, improvement=_interval(0.0, 0.0, 0.0)), AUC)
    assert not decision.promote
    without_interval = decide_promotion(_evidence(champion={"roc_auc": 0.80}), AUC)
    assert not without_interval.promote


def test_lower_is_better_metrics_are_oriented() -> None:
    policy = PromotionPolicy(metric="log_loss", min_score=0.5)
    better = _evidence(candidate={"log_loss": 0.30}, dummy={"log_loss": 0.45}, champion={"log_loss": 0.35})
    assert decide_promotion(better, policy).promote
    worse_than_dummy = _evidence(candidate={"log_loss": 0.30}, dummy={"log_loss": 0.29})
    assert not decide_promotion(worse_than_dummy, policy).promote
    above_floor = _evidence(candidate={"log_loss": 0.6}, dummy={"log_loss": 0.7})
    assert "> floor" in decide_promotion(above_floor, policy).reason


def test_a_regressing_slice_holds_the_candidate_back() -> None:
    evidence = _evidence(
        champion={"roc_auc": 0.78},
        improvement=_interval(0.02, 0.01, 0.03),
        candidate_slices={"region=north": 0.70, "region=south": 0.85},
        champion_slices={"region=north": 0.76, "region=south": 0.80},
    )
    decision = decide_promotion(evidence, AUC)
    assert not decision.promote
    assert "region=north: 0.7600 -> 0.7000" in decision.reason
    tolerant = PromotionPolicy(metric="roc_auc", min_score=0.7, slice_tolerance=0.1)
    assert decide_promotion(evidence, tolerant).promote


def test_decision_is_serializable_with_every_check() -> None:
    record = decide_promotion(_evidence(), AUC).as_dict()
    assert record["promote"] is True
    assert {c["name"] for c in record["checks"]} >= {"held_out_rows", "floor:roc_auc", "beats_dummy", "serving"}


def _scores(n: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(signal * y + rng.random(n) * (1 - signal), 0, 1)
    return y, np.c_[1 - p, p]


def _bootstrap(y: np.ndarray, candidate: np.ndarray, champion: np.ndarray, metric: str, **options: Any) -> Any:
    task = TASKS["binary"]
    return paired_bootstrap(
        len(y),
        task.scorer(metric, y, candidate, [0, 1]),
        task.scorer(metric, y, champion, [0, 1]),
        metric,
        **options,
    )


def test_paired_bootstrap_separates_a_real_gain_from_a_tie() -> None:
    y, strong = _scores(3000, 0.3, 1)
    rng = np.random.default_rng(2)
    noisy = np.clip(strong[:, 1] + rng.normal(0, 0.25, len(y)), 0, 1)
    weak = np.c_[1 - noisy, noisy]
    gain = _bootstrap(y, strong, weak, "roc_auc", samples=300, seed=0)
    assert gain["low"] > 0 and gain["low"] <= gain["mean"] <= gain["high"]
    tie = _bootstrap(y, strong, strong, "roc_auc", samples=300, seed=0)
    assert tie["low"] == tie["mean"] == tie["high"] == 0.0
    loss = _bootstrap(y, strong, weak, "log_loss", samples=300, seed=0)
    assert loss["mean"] > 0  # oriented: positive means the candidate is better


def test_paired_bootstrap_on_a_lower_is_better_regression_metric() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(size=2000)
    good, bad = y + rng.normal(0, 0.5, 2000), y + rng.normal(0, 0.9, 2000)
    task = TASKS["regression"]
    gain = paired_bootstrap(2000, task.scorer("rmse", y, good), task.scorer("rmse", y, bad), "rmse", samples=300)
    assert gain["low"] > 0  # the lower RMSE is the better one, positive
    worse = paired_bootstrap(2000, task.scorer("rmse", y, bad), task.scorer("rmse", y, good), "rmse", samples=300)
    assert worse["high"] < 0


def test_single_metrics_match_compute_metrics() -> None:
    y, proba = _scores(500, 0.2, 3)
    proba[:20] = 0.5  # ties
    full = compute_metrics(y, proba, [0, 1], threshold=0.4)
    for name, value in full.items():
        assert score_metric(name, y, proba, 2, 0.4) == pytest.approx(value, abs=1e-12), name
    three = np.random.default_rng(4).dirichlet([1, 1, 1], 300)
    labels = np.random.default_rng(5).integers(0, 3, 300)
    assert compute_metrics(labels, three, [0, 1, 2])["brier"] == pytest.approx(
        score_metric("brier", labels, three, 3), abs=1e-12
    )


def test_slice_metrics_skip_small_slices() -> None:
    import pandas as pd

    y, proba = _scores(400, 0.3, 6)
    frame = pd.DataFrame({"region": ["a"] * 300 + ["b"] * 90 + [None] * 10})
    scorer = TASKS["binary"].scorer("roc_auc", y, proba, [0, 1])
    result = slice_metrics(frame, ["region"], scorer, min_rows=50)
    assert set(result) == {"region=a", "region=b"}
    with pytest.raises(ValueError, match="not in the data"):
        slice_metrics(frame, ["nope"], scorer)
