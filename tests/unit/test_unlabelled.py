"""A challenger period decided before labels arrive: each version's expected loss on the requests
both answered (a classifier's own calibrated probabilities, a regressor's model of its held-out
errors), only where the estimate can be trusted, and a promotion made so re-checked on labels in a
real SQLite registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline

from components.core.config import OnlineTestConfig
from components.core.workspace import Workspace
from components.modeling.evaluate import calibration_error
from components.modeling.sequential import OnlineTest, compare, paired_losses
from components.modeling.tasks import task_named
from components.monitoring import challenger
from components.monitoring.monitor.loss import build_residuals
from components.monitoring.unlabelled import CALIBRATION, Grader, estimated_comparison
from components.tracking import decisions, registry

POLICY = OnlineTestConfig(without_labels="estimated")


def _fitted(X: pd.DataFrame, y: pd.Series, columns: list[str], estimator) -> Pipeline:
    steps = [("preprocess", ColumnTransformer([("numeric", "passthrough", columns)])), ("model", estimator)]
    return Pipeline(steps).fit(X, y)


def _binary(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = pd.Series((rng.uniform(size=n) < 1 / (1 + np.exp(-(1.5 * X["a"] + 1.5 * X["b"])))).astype(int))
    return X, y


def _grader(version: str, model: Pipeline, X: pd.DataFrame, y: pd.Series) -> Grader:
    """A classifier with the held-out calibration error training would have recorded."""
    error = calibration_error(y.to_numpy(), model.predict_proba(X))
    return Grader(version, model, {CALIBRATION: error, "test_rows": float(len(y))})


def test_calibrated_classifiers_are_judged_on_their_expected_log_loss_and_it_matches_the_labels() -> None:
    X, y = _binary(4000, 0)
    held_out, truth = _binary(2000, 1)
    served, later = _binary(1500, 2)  # the requests; their labels come later
    one = _fitted(X, y, ["a"], LogisticRegression())
    both = _fitted(X, y, ["a", "b"], LogisticRegression())
    graders = (_grader("1", one, held_out, truth), _grader("2", both, held_out, truth))
    assert max(g.metrics[CALIBRATION] for g in graders) < POLICY.max_calibration_error
    task = task_named("binary")
    found, why = estimated_comparison(served, task, graders, POLICY)
    assert found is not None and why == "" and found.verdict == "promote", found
    assert "estimated better" in found.reason and "labels will re-check it" in found.reason
    realized = paired_losses("binary", later.to_numpy(), one.predict_proba(served), both.predict_proba(served))
    assert found.mean_difference == pytest.approx(realized.mean(), rel=0.15)
    early = compare(-np.abs(np.random.default_rng(1).normal(0.3, 0.1, 60)), OnlineTest(min_rows=200))
    assert early.verdict == "continue" and early.high < 0  # too few labels to decide, all against it
    overruled, why = estimated_comparison(served, task, graders, POLICY, labelled=early)
    assert overruled is None and "the 60 label(s) so far say the challenger is worse" in why
    worse, _ = estimated_comparison(served, task, graders[::-1], POLICY)
    assert worse is not None and worse.verdict == "continue" and "estimated worse" in worse.reason
    assert "retired on labels only" in worse.reason  # a retirement could not be undone when the labels come


def test_an_overconfident_classifier_cannot_grade_itself() -> None:
    X, y = _binary(4000, 0)
    held_out, truth = _binary(2000, 1)
    served, _ = _binary(500, 2)
    fair = _fitted(X, y, ["a"], LogisticRegression())
    bold = _fitted(X, y, ["a"], LogisticRegression())
    bold.named_steps["model"].coef_ = bold.named_steps["model"].coef_ * 4  # the same ranking, sharper
    graders = (_grader("1", fair, held_out, truth), _grader("2", bold, held_out, truth))
    found, why = estimated_comparison(served, task_named("binary"), graders, POLICY)
    assert found is None and "v2's held-out calibration error 0.201" in why and "max_calibration_error" in why
    assert "0.028 a calibrated model may show by chance on 2,000 rows" in why
    # Without the guard its own entropy would have crowned it, though its real log loss is worse.
    loose = POLICY.model_copy(update={"max_calibration_error": 1.0})
    crowned, _ = estimated_comparison(served, task_named("binary"), graders, loose)
    assert crowned is not None and crowned.verdict == "promote"
    unknown = (graders[0], Grader("2", bold, {}))
    assert "no held-out calibration error" in estimated_comparison(served, task_named("binary"), unknown, POLICY)[1]


def test_regressors_are_judged_on_their_predicted_errors() -> None:
    rng = np.random.default_rng(3)

    def rows(n: int) -> tuple[pd.DataFrame, pd.Series]:
        X = pd.DataFrame({"x": rng.uniform(0, 10, n)})
        return X, 2 * X["x"] + rng.normal(0, 1, n)

    X, y = rows(3000)
    held_out, truth = rows(1500)
    served, later = rows(1000)
    skewed = _fitted(X, y + np.where(X["x"] > 7, 3.0, 0.0), ["x"], LinearRegression())
    fair = _fitted(X, y, ["x"], LinearRegression())

    def grader(version: str, model: Pipeline) -> Grader:
        return Grader(version, model, {}, build_residuals(held_out, model.predict(held_out), truth, 5000, 0))

    task = task_named("regression")
    found, _ = estimated_comparison(served, task, (grader("1", skewed), grader("2", fair)), POLICY)
    assert found is not None and found.verdict == "promote" and "squared error" in found.reason
    realized = paired_losses("regression", later.to_numpy(), skewed.predict(served), fair.predict(served))
    assert found.mean_difference == pytest.approx(realized.mean(), rel=0.2)
    alike, _ = estimated_comparison(served, task, (grader("1", fair), grader("2", fair)), POLICY)
    assert alike is not None and alike.verdict == "continue" and "undecided" in alike.reason
    few, _ = estimated_comparison(served.head(50), task, (grader("1", skewed), grader("2", fair)), POLICY)
    assert few is not None and few.verdict == "continue" and "needs 200 requests" in few.reason
    none, why = estimated_comparison(served, task, (grader("1", skewed), Grader("2", fair, {})), POLICY)
    assert none is None and "v2 has no stored held-out errors" in why


@pytest.fixture
def client(tmp_path: Path):
    client = registry.connect(Workspace.at(tmp_path / "ws").ensure())
    client.create_registered_model("loans")
    for _ in range(2):
        client.create_model_version("loans", source=str(tmp_path / "model"))
    registry.set_champion(client, "loans", "1", {}, expected=None, lock_dir=tmp_path)
    audit = registry.Audit("passed the gate", "test")
    tags = {"rollout": "shadow", "challenger_since": "2026-12-01T00:00:00+00:00"}
    registry.set_challenger(client, "loans", "2", tags, expected_champion="1", audit=audit, lock_dir=tmp_path)
    return client


def _trial(verdict: str, champion: str, challenger_: str, **extra) -> challenger.Trial:
    return challenger.Trial("loans", champion, challenger_, "shadow", verdict, "why", 500, 0, **extra)


def test_a_promotion_without_labels_keeps_the_old_champion_in_shadow_until_labels_speak(client, tmp_path) -> None:
    since = "2026-12-01T00:00:00+00:00"
    estimated = _trial("promote", "1", "2", decided_on="estimated", since=since)
    done = challenger.settle(client, estimated, approval="auto", lock_dir=tmp_path, folder=tmp_path / "evidence")
    assert done.action == "promoted"
    assert registry.get_champion(client, "loans").version == "2"
    shadow = registry.get_challenger(client, "loans")
    assert shadow.version == "1" and shadow.recheck_of == "2" and shadow.since == since and shadow.rollout == "shadow"
    assert client.get_model_version("loans", "2").tags[decisions.DECIDED_ON] == "estimated"

    # The labels, once in, prove the old champion better: the promotion is rolled back.
    overturned = _trial("promote", "2", "1", recheck_of="2", since=since)
    done = challenger.settle(client, overturned, approval="auto", lock_dir=tmp_path, folder=tmp_path / "evidence")
    assert done.action == "rolled_back" and done.evidence.endswith("recheck-v1-of-v2.json")
    assert (tmp_path / "evidence" / "challenger-v2.json").exists()  # the estimate's evidence stays
    assert registry.get_champion(client, "loans").version == "1"
    assert registry.get_challenger(client, "loans") is None
    assert "rolled_back" in client.get_model_version("loans", "2").tags
    moves = [(m.action, m.version, m.champion, m.challenger) for m in registry.history.read(client, "loans")]
    assert moves[-3:] == [
        ("promoted", "2", "2", None),
        ("challenger_started", "1", "2", "1"),
        ("rollback", "1", "1", None),
    ]

    # A version once re-checking starts a later, ordinary period clean.
    audit = registry.Audit("again", "test")
    registry.set_challenger(client, "loans", "2", {"rollout": "shadow"}, expected_champion="1", audit=audit)
    registry.set_challenger(client, "loans", "2", {"rollout": "shadow"}, expected_champion="1", audit=audit)
    assert registry.get_challenger(client, "loans").recheck_of is None


def test_labels_that_confirm_the_estimate_end_the_old_champion_s_shadow(client, tmp_path: Path) -> None:
    folder = tmp_path / "evidence"
    challenger.settle(
        client, _trial("promote", "1", "2", decided_on="estimated"), approval="auto", lock_dir=tmp_path, folder=folder
    )
    confirmed = challenger.settle(
        client, _trial("retire", "2", "1", recheck_of="2"), approval="auto", lock_dir=tmp_path, folder=folder
    )
    assert confirmed.action == "confirmed" and registry.get_challenger(client, "loans") is None
    assert registry.get_champion(client, "loans").version == "2"
    assert "re-check of v2 passed" in client.get_model_version("loans", "1").tags["challenger.ended"]


def test_an_approved_estimate_is_re_checked_too(client, tmp_path: Path) -> None:
    folder = tmp_path / "evidence"
    ready = challenger.settle(
        client, _trial("promote", "1", "2", decided_on="estimated"), approval="manual", lock_dir=tmp_path, folder=folder
    )
    assert ready.action == "ready" and registry.get_champion(client, "loans").version == "1"
    decisions.approve(client, "loans", "2", "the estimate is enough for us", by="ana", lock_dir=tmp_path)
    assert registry.get_champion(client, "loans").version == "2"
    assert registry.get_challenger(client, "loans").recheck_of == "2"


def test_a_re_check_names_the_versions_it_compares() -> None:
    better_old = compare(np.full(300, 0.2) + np.random.default_rng(0).normal(0, 0.1, 300), OnlineTest())
    verdict, reason = challenger._recheck(better_old, 300, "", ("2", "1"))
    assert verdict == "promote" and reason.startswith("re-check of v2, promoted without labels: the labels overturn it")
    assert "v1 is better: mean loss difference +0.1964 (v2 - v1)" in reason
    assert "the challenger is" not in reason
    verdict, reason = challenger._recheck(None, 40, "no labels yet", ("2", "1"))
    assert verdict == "continue" and reason.endswith("40 request(s) answered by both; no labels yet")


def test_multiclass_versions_are_judged_on_their_expected_log_loss() -> None:
    rng = np.random.default_rng(5)

    def rows(n: int) -> tuple[pd.DataFrame, pd.Series]:
        X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
        logits = np.c_[2 * X["a"], 2 * X["b"], np.zeros(n)]
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return X, pd.Series([f"c{k}" for k in (rng.uniform(size=(n, 1)) > proba.cumsum(axis=1)).sum(axis=1)])

    X, y = rows(4000)
    held_out, truth = rows(2000)
    served, later = rows(5000)
    one, both = _fitted(X, y, ["a"], LogisticRegression()), _fitted(X, y, ["a", "b"], LogisticRegression())

    def grader(version: str, model: Pipeline) -> Grader:
        index = truth.map({c: i for i, c in enumerate(model.classes_)}).to_numpy()
        error = calibration_error(index, model.predict_proba(held_out))
        return Grader(version, model, {CALIBRATION: error, "test_rows": float(len(truth))})

    task = task_named("multiclass")
    found, why = estimated_comparison(served, task, (grader("1", one), grader("2", both)), POLICY)
    assert found is not None and found.verdict == "promote", (found, why)
    index = later.map({c: i for i, c in enumerate(one.classes_)}).to_numpy()
    realized = paired_losses("multiclass", index, one.predict_proba(served), both.predict_proba(served))
    assert found.mean_difference == pytest.approx(realized.mean(), rel=0.15)
