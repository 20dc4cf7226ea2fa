"""The always-valid online comparison: valid under repeated looks, decisive when there is a difference."""

from __future__ import annotations

import numpy as np
import pytest

from components.modeling.sequential import OnlineTest, compare, paired_losses


def _first_decision(d: np.ndarray, test: OnlineTest, every: int = 50) -> str:
    for n in range(every, len(d) + 1, every):
        verdict = compare(d[:n], test).verdict
        if verdict != "continue":
            return verdict
    return "continue"


def test_looking_after_every_window_keeps_false_decisions_below_alpha() -> None:
    rng = np.random.default_rng(0)
    test = OnlineTest(alpha=0.05, min_rows=100, max_rows=10**9)
    wrong = sum(_first_decision(rng.normal(0.0, 1.0, 3000), test) != "continue" for _ in range(200))
    assert wrong / 200 <= 0.05
    naive = 0  # a fixed-sample z-test looked at after every window: the error this test exists to avoid
    for _ in range(200):
        d = rng.normal(0.0, 1.0, 3000)
        n = np.arange(50, 3001, 50)
        z = np.cumsum(d)[n - 1] / n / (1 / np.sqrt(n))
        naive += bool((np.abs(z) > 1.96).any())
    assert naive / 200 > 0.2


def test_a_better_challenger_is_promoted_and_a_worse_one_retired() -> None:
    rng = np.random.default_rng(1)
    test = OnlineTest(min_rows=200)
    better = compare(rng.normal(0.2, 1.0, 2000), test)
    assert better.verdict == "promote" and better.low > 0 and "better" in better.reason
    worse = compare(rng.normal(-0.2, 1.0, 2000), test)
    assert worse.verdict == "retire" and worse.high < 0 and "worse" in worse.reason


def test_too_few_labels_keep_collecting_and_max_rows_ends_a_tie() -> None:
    rng = np.random.default_rng(2)
    early = compare(rng.normal(1.0, 1.0, 150), OnlineTest(min_rows=200))
    assert early.verdict == "continue" and "needs 200" in early.reason
    tie = compare(rng.normal(0.0, 1.0, 1000), OnlineTest(min_rows=100, max_rows=1000))
    assert tie.verdict == "retire" and "no difference" in tie.reason
    assert compare(np.zeros(500), OnlineTest(min_rows=100)).verdict == "continue"  # identical answers
    assert compare(np.array([]), OnlineTest()).verdict == "continue"


def test_paired_losses_are_positive_where_the_challenger_does_better() -> None:
    truth = np.array([1, 0])
    champion = np.array([[0.5, 0.5], [0.5, 0.5]])
    challenger = np.array([[0.2, 0.8], [0.9, 0.1]])
    assert paired_losses("binary", truth, champion, challenger) == pytest.approx([np.log(0.8 / 0.5), np.log(0.9 / 0.5)])
    assert paired_losses("regression", np.array([1.0]), np.array([3.0]), np.array([2.0])) == pytest.approx([3.0])
