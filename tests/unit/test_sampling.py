"""Labels drawn with recorded probabilities: the queue's draw, the weighted test terms, the budget replay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.modeling.sequential import OnlineTest
from components.monitoring import sampling
from components.simulation.labelbudget import budgets, labels_to_decide


def test_inclusion_probabilities_sum_to_the_size_with_a_floor_and_none_above_one() -> None:
    weights = np.array([0.0, 0.0, 1.0, 5.0, 100.0, 0.5])
    pi = sampling.inclusion_probabilities(weights, 3, floor=0.1)
    assert pi.sum() == pytest.approx(3.0) and pi.max() <= 1.0
    assert pi[4] == pytest.approx(1.0)  # capped: its excess went to the others
    assert pi[0] > 0 and pi[0] == pytest.approx(pi[1])  # the floor: no row impossible to pick
    assert np.all(np.diff(pi[[0, 5, 2, 3, 4]]) >= 0)  # more weight, more chance
    assert sampling.inclusion_probabilities(np.zeros(4), 2) == pytest.approx([0.5] * 4)  # no weight: even
    assert sampling.inclusion_probabilities(weights, 50).tolist() == [1.0] * 6  # asked for more than there is
    with pytest.raises(ValueError, match="floor"):
        sampling.inclusion_probabilities(weights, 2, floor=0.0)


def test_the_draw_picks_exactly_the_size_each_row_with_its_probability() -> None:
    pi = sampling.inclusion_probabilities(np.array([0.0, 1.0, 2.0, 3.0, 50.0, 4.0]), 3)
    picks = np.array([sampling.draw(pi, seed, "queue-1") for seed in range(4000)])
    assert (picks.sum(axis=1) == 3).all()  # never fewer: a small queue is never empty
    np.testing.assert_allclose(picks.mean(axis=0), pi, atol=0.03)
    assert (sampling.draw(pi, 1, "a") == sampling.draw(pi, 1, "a")).all()  # seeded by the queue's name


def test_the_weighted_terms_estimate_the_mean_difference_without_bias() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    priority = rng.random(n)
    d = np.where(priority > 0.8, rng.normal(0.3, 0.2, n), 0.0)  # the versions differ where they disagree
    pi = sampling.inclusion_probabilities(priority**4, 100)
    everyone = {str(i) for i in range(n)}
    means = []
    for seed in range(400):
        picked = sampling.draw(pi, seed, "q")
        design = _design([str(i) for i in range(n)], pi.tolist(), picked.tolist())
        labelled = {str(i): d[i] for i in np.flatnonzero(picked)}
        means.append(sampling.weighted_terms([design], labelled, everyone).terms.mean())
    assert np.mean(means) == pytest.approx(d.mean(), rel=0.03)


def _design(ids: list[str], pi: list[float], picked: list[bool]) -> pd.DataFrame:
    return pd.DataFrame({sampling.ID: ids, sampling.INCLUSION: pi, sampling.PICKED: picked})


def test_one_term_per_labelled_pick_weighted_by_its_probability_and_a_draw_without_labels_waits() -> None:
    first = _design(["a", "b", "c", "d"], [0.5, 0.5, 0.25, 0.25], [True, True, False, False])
    second = _design(["e", "f"], [0.5, 0.5], [True, False])
    everyone = {"a", "b", "c", "d", "e", "f"}
    found = sampling.weighted_terms([first, second], {"a": 1.0}, everyone)  # b came back blank
    # y = d * k / (N * pi) = 1 * 1.5 / (4 * 0.5): a stands for the 4 rows its draw considered
    assert found.terms.tolist() == [0.75] and (found.considered, found.draws, found.waiting) == (4, 1, 1)
    assert "1 label(s) from 1 label-queue draw(s) among 4 served rows" in found.note()
    uniform = _design(["a", "b", "c", "d"], [0.5] * 4, [True, True, False, False])
    assert sampling.weighted_terms([uniform], {"a": 0.3, "b": -0.1}, everyone).terms.tolist() == [0.3, -0.1]
    only = sampling.weighted_terms([first], {"a": 1.0, "b": -1.0}, eligible={"a", "b"})  # c, d labelled elsewhere
    assert only.terms.tolist() == [1.0, -1.0]


def test_the_queue_draw_keeps_false_decisions_rare_when_the_versions_are_equal() -> None:
    rng = np.random.default_rng(1)
    n, wrong = 2000, 0
    runs = 100
    for seed in range(runs):  # each run a new traffic sample of equal versions, labelled round after round
        priority = rng.random(n)
        d = np.where(priority > 0.7, rng.normal(0.0, 0.5, n), rng.normal(0.0, 0.02, n))
        _, verdict = labels_to_decide(d, priority, OnlineTest(), queue=True, step=50, seed=seed)
        wrong += verdict == "promote"
    assert wrong / runs <= 0.05 + 0.05  # alpha, and the noise of 100 runs


def test_where_the_versions_differ_on_few_rows_the_queue_decides_with_fewer_labels() -> None:
    rng = np.random.default_rng(2)
    n = 12_000
    differ = rng.random(n) < 0.1  # the versions answer differently on a tenth of the rows
    priority = np.where(differ, 0.5 + 0.5 * rng.random(n), 0.02 * rng.random(n))  # as their disagreement shows
    d = np.where(differ, rng.normal(0.1, 0.4, n), 0.0)  # ... and there the challenger is better, on average
    queue, random = budgets(d, priority, OnlineTest(), step=50, draws=10)
    assert queue.strategy == "queue" and random.strategy == "random"
    assert queue.verdicts.get("promote", 0) >= 9 and queue.median_labels is not None
    assert random.median_labels is None or queue.median_labels < random.median_labels / 2
    assert "queue" in queue.text() and "labels" in queue.text()


def test_designs_written_before_a_challenger_started_are_not_read(tmp_path) -> None:
    from datetime import UTC, datetime, timedelta

    sampling.write_design(
        tmp_path / "queue-1.design.parquet", pd.Series(["a", "b"]), np.array([0.5, 0.5]), np.array([True, False])
    )
    assert (
        len(sampling.read_designs(tmp_path))
        == len(sampling.read_designs(tmp_path, datetime.now(UTC) - timedelta(hours=1)))
        == 1
    )
    assert sampling.read_designs(tmp_path, datetime.now(UTC) + timedelta(hours=1)) == []
    assert sampling.read_designs(tmp_path / "none") == []
