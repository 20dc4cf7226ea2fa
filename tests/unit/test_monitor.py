"""Drift statistics, quality shifts, decay, debouncing and the report, on generated loan data."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from components.core.config import MonitoringConfig
from components.modeling.prepare import infer_feature_spec
from components.monitoring import monitor
from components.simulation import ctsim
from components.simulation.simulate import Scenario, generate_loans

CONFIG = MonitoringConfig()


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return generate_loans(20_000, 42).frame


def _compare(reference: pd.DataFrame, current: pd.DataFrame, scores: np.ndarray | None = None) -> monitor.DriftReport:
    spec = infer_feature_spec(
        reference.drop(columns=[monitor.SCORE_COLUMN], errors="ignore"), "default", "loan_id", "application_time"
    )
    return monitor.compare(
        reference,
        current,
        numeric=spec.numeric,
        categorical=spec.categorical,
        current_scores=scores,
        config=CONFIG,
        model_name="loans",
        model_version="1",
        window="test",
    )


@pytest.mark.parametrize("rows", [300, 5_000])
def test_stable_windows_do_not_drift_whatever_their_size(reference: pd.DataFrame, rows: int) -> None:
    for batch in range(3):
        report = _compare(reference, generate_loans(rows, 42, batch_index=10 + batch).frame)
        assert not report.drift and report.drifted_features == [], report.drifted_features
        assert report.quality == []


def test_covariate_drift_is_found_in_the_features_that_moved(reference: pd.DataFrame) -> None:
    report = _compare(reference, generate_loans(2_000, 42, Scenario(covariate_drift=1.0), batch_index=5).frame)
    assert report.drift and report.drift_share >= CONFIG.drift_share
    assert {"credit_score", "interest_rate", "loan_amount"} <= set(report.drifted_features)
    assert "region" not in report.drifted_features  # the generator never moves it
    credit = next(f for f in report.features if f.name == "credit_score")
    assert credit.test in ("ks", "chi2") and credit.p_value < CONFIG.p_value and credit.psi >= CONFIG.psi_min
    assert credit.current_mean is not None and credit.reference_mean is not None
    assert credit.current_mean < credit.reference_mean  # the generator lowers credit scores


def test_a_stretched_tail_drifts_and_a_fresh_sample_does_not() -> None:
    # Incomes: the top 5% growing by half moves KS and the deciles by less than chance; the tail
    # bins (95th and 99th percentiles) see it.
    rng = np.random.default_rng(3)
    reference = pd.Series(rng.lognormal(10.8, 0.5, 2_000))
    fresh = pd.Series(rng.lognormal(10.8, 0.5, 1_000))
    stretched = fresh.where(fresh < fresh.quantile(0.95), fresh * 1.5)
    same = monitor.numeric_drift("income", reference, fresh, CONFIG)
    moved = monitor.numeric_drift("income", reference, stretched, CONFIG)
    assert not same.drifted, (same.p_value, same.psi)
    assert moved.drifted and moved.test == "chi2" and moved.p_value < CONFIG.p_value and moved.psi >= CONFIG.psi_min
    assert stats_ks_p(reference, stretched) > CONFIG.p_value  # KS alone would not have seen it
    assert len(moved.histogram.labels) == len(monitor.NUMERIC_QUANTILES) + 2  # the bins and the nulls


def test_many_categories_on_a_small_reference_are_not_drift_by_chance() -> None:
    # 46 states, 500 reference rows: a fresh sample's PSI alone sits near the 0.25 threshold by
    # chance (about 0.14 expected); it takes a real move to drift.
    rng = np.random.default_rng(5)
    states = np.array([f"s{i:02d}" for i in range(46)])
    shares = rng.dirichlet(np.full(46, 2.0))
    reference = pd.Series(rng.choice(states, 500, p=shares))
    fresh = [
        monitor.categorical_drift("state", reference, pd.Series(rng.choice(states, 1_000, p=shares)), CONFIG)
        for _ in range(20)
    ]
    assert not any(f.drifted for f in fresh), [(round(f.psi, 3), round(f.p_value, 3)) for f in fresh]
    assert max(f.psi for f in fresh) > 0.15  # the raw PSI is noisy here ...
    moved = np.roll(shares, 23)  # ... and a real move still drifts
    shifted = monitor.categorical_drift("state", reference, pd.Series(rng.choice(states, 1_000, p=moved)), CONFIG)
    assert shifted.drifted and shifted.p_value < CONFIG.p_value


def stats_ks_p(a: pd.Series, b: pd.Series) -> float:
    from scipy import stats

    return float(stats.ks_2samp(a, b).pvalue)


def test_quality_shifts_name_null_rates_and_unseen_categories(reference: pd.DataFrame) -> None:
    current = generate_loans(2_000, 42, batch_index=6).frame
    current.loc[current.index[:400], "annual_income"] = np.nan
    current.loc[current.index[:100], "purpose"] = "crypto"
    report = _compare(reference, current)
    kinds = {(q.column, q.kind) for q in report.quality}
    assert kinds == {("annual_income", "null_rate"), ("purpose", "new_categories")}
    purpose = next(f for f in report.features if f.name == "purpose")
    assert purpose.new_categories == {"crypto": pytest.approx(0.05)}


def test_score_distance_is_small_for_the_same_scores_and_large_for_shifted_ones() -> None:
    rng = np.random.default_rng(0)
    base = rng.beta(2, 8, 5_000)
    same = monitor.score_drift(base, rng.beta(2, 8, 3_000), CONFIG)
    moved = monitor.score_drift(base, rng.beta(5, 5, 3_000), CONFIG)
    assert same.js_distance < 0.05 and not same.drifted
    assert moved.js_distance > CONFIG.score_js_threshold and moved.drifted


def test_a_column_missing_from_the_window_is_an_error(reference: pd.DataFrame) -> None:
    with pytest.raises(monitor.MonitoringError, match="credit_score"):
        _compare(reference, generate_loans(300, 42, batch_index=7).frame.drop(columns=["credit_score"]))


def test_decay_is_a_drop_beyond_the_tolerance_in_the_metric_direction() -> None:
    assert monitor.measure_decay("roc_auc", 0.84, 0.80, 500, CONFIG).decayed
    assert not monitor.measure_decay("roc_auc", 0.84, 0.82, 500, CONFIG).decayed
    assert monitor.measure_decay("log_loss", 0.30, 0.40, 500, CONFIG, higher_is_better=False).decayed


def test_labels_join_on_the_id_and_conflicting_labels_are_refused() -> None:
    window = pd.DataFrame({"loan_id": [1, 2, 3]})
    labels = monitor.join_labels(
        window, pd.DataFrame({"loan_id": [3, 1, 1], "default": [1, 0, 0]}), "loan_id", "default"
    )
    assert labels.tolist()[0] == 0 and pd.isna(labels.tolist()[1]) and labels.tolist()[2] == 1
    with pytest.raises(monitor.MonitoringError, match="different labels"):
        monitor.join_labels(window, pd.DataFrame({"loan_id": [1, 1], "default": [0, 1]}), "loan_id", "default")
    with pytest.raises(monitor.MonitoringError, match="target"):
        monitor.join_labels(window, pd.DataFrame({"loan_id": [1]}), "loan_id", "default")


def _window(version: str, alarm: bool) -> monitor.Window:
    return monitor.Window(at="t", window="w", model_version=version, drift=alarm, decay=None, rows=1000)


def test_retraining_needs_alarms_in_n_of_the_last_m_windows_of_the_same_version(reference: pd.DataFrame) -> None:
    report = _compare(reference, generate_loans(2_000, 42, Scenario(covariate_drift=1.0), batch_index=8).frame)
    config = MonitoringConfig(windows=3, min_windows=2)
    assert monitor.decide(report, [_window("1", True)], config).verdict == "watching"
    assert monitor.decide(report, [_window("1", False), _window("1", True)], config).verdict == "watching"
    assert (
        monitor.decide(report, [_window("1", True), _window("1", False), _window("1", True)], config).verdict
        == "retrain"
    )
    # Two alarms, but one of them was four windows ago: out of the last three.
    history = [_window("1", True), _window("1", False), _window("1", False), _window("1", True)]
    assert monitor.decide(report, history, config).verdict == "watching"
    # Alarms against the previous champion do not count for the new one.
    assert monitor.decide(report, [_window("1", True), _window("2", True)], config).verdict == "watching"


def test_a_started_retraining_spends_the_alarms_before_it(tmp_path) -> None:
    path = monitor.history_file(tmp_path, "loans")
    for alarm in (True, True):
        monitor.append_history(path, _window("1", alarm))
    assert monitor.sustained(monitor.read_history(path), "1", CONFIG) == (2, 2)
    monitor.note_retraining(path, "1", "w")  # the gate then held the candidate back: v1 stays champion
    assert monitor.sustained(monitor.read_history(path), "1", CONFIG) == (0, 0)
    monitor.append_history(path, _window("1", True))
    assert monitor.sustained(monitor.read_history(path), "1", CONFIG) == (1, 1)


def test_debounce_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="min_windows"):
        MonitoringConfig(windows=2, min_windows=3)


def test_history_round_trips(tmp_path) -> None:
    path = tmp_path / "m" / "windows.jsonl"
    monitor.append_history(path, _window("1", True))
    monitor.append_history(path, _window("2", False))
    assert monitor.read_history(path) == [_window("1", True), _window("2", False)]
    assert monitor.sustained(monitor.read_history(path), "1", CONFIG) == (1, 1)


def test_the_html_report_is_self_contained_and_names_what_drifted(reference: pd.DataFrame) -> None:
    current = generate_loans(2_000, 42, Scenario(covariate_drift=1.0), batch_index=9).frame
    scores = np.random.default_rng(1).beta(3, 6, len(current))
    reference = reference.assign(**{monitor.SCORE_COLUMN: np.random.default_rng(2).beta(2, 8, len(reference))})
    report = monitor.decide(_compare(reference, current, scores), [_window("1", True)], CONFIG)
    page = monitor.render_html(report)
    assert "<script" not in page and not re.search(r"(src|href)=\"https?:", page)
    assert page.count("<svg") == len(report.features) + 1  # one chart per feature, one for the scores
    for name in report.drifted_features:
        assert name in page
    assert "watching" in page and "Jensen-Shannon" in page
    data = report.as_dict()
    assert data["verdict"] == "watching" and data["score"]["drifted"]
    assert all("histogram" not in f for f in data["features"])


def test_the_ct_plan_and_its_goals() -> None:
    plan = ctsim.plan_batches(9, drift_at=2, concept_at=6, corrupt_at=5)
    assert [b.kind for b in plan] == [
        "stable",
        "stable",
        "covariate drift",
        "covariate drift",
        "covariate drift",
        "corrupted",
        "concept drift",
        "concept drift",
        "concept drift",
    ]
    assert ctsim.onsets(plan) == [2, 6] and plan[5].scenario.unit_change and plan[5].scenario.covariate_drift == 1.0

    def row(batch: int, drift: str = "stable", retrained: bool = False, promoted: str | None = None, gap: float = 0.0):
        kind = plan[batch].kind
        return ctsim.TimelineRow(
            batch,
            kind,
            "rejected" if kind == "corrupted" else "passed",
            drift,
            retrained,
            promoted,
            "1",
            0.8,
            0.8 + gap,
        )

    good = [
        row(0),
        row(1),
        row(2, "watching", gap=0.05),
        row(3, "retrain", True, "2", gap=0.05),
        row(4, gap=0.015),
        row(5, "-"),
        row(6, "watching", gap=0.06),
        row(7, "retrain", True, "3", gap=0.06),
        row(8, gap=0.01),
    ]
    goals = ctsim.check_goals(good, plan)
    assert all(g.met for g in goals), goals
    late = [*good[:2], row(2), row(3), row(4, "retrain", True, "2", gap=0.05), *good[5:]]
    failed = [g.name for g in ctsim.check_goals(late, plan) if not g.met]
    assert failed[0] == "shift at batch 2 detected within one batch" and "after the shift at batch 2" in failed[1]
    assert failed[2] == "no retraining on stable batches" and len(failed) == 3
    churn = [row(0, "retrain", True), *good[1:]]
    assert not next(g for g in ctsim.check_goals(churn, plan) if g.name == "no retraining on stable batches").met
    for r, (estimated, realized) in zip(good, [(4.16, 3.90), (4.31, 4.42), (6.9, 8.7)], strict=False):
        r.estimated, r.realized = estimated, realized  # a regressor's RMSE: +6.7% and -2.3% on the stable batches
    estimate = next(g for g in ctsim.check_goals(good, plan, "r2") if "estimated without labels" in g.name)
    assert estimate.met and "5% of the realized one" in estimate.name  # together: 4.24 vs 4.17, +1.6%
    assert "(+1.6%)" in estimate.detail and "mean |error| 4.6%" in estimate.detail and "2: -20.7" in estimate.detail
    good[0].estimated = 4.9  # together +10%
    assert not next(g for g in ctsim.check_goals(good, plan, "r2") if "estimated without labels" in g.name).met


def test_prediction_drift_of_a_regression_model_uses_the_reference_quantiles() -> None:
    rng = np.random.default_rng(0)
    reference = rng.gamma(2, 10, 5000)  # minutes, far outside [0, 1]
    same = monitor.score_drift(reference, rng.gamma(2, 10, 2000), CONFIG, probabilities=False)
    longer = monitor.score_drift(reference, rng.gamma(2, 14, 2000), CONFIG, probabilities=False)
    assert not same.drifted and longer.drifted and longer.js_distance > same.js_distance
    assert len(longer.histogram.labels) == 20 and "-" in longer.histogram.labels[0]


def test_decay_of_an_error_in_the_targets_units_is_judged_as_a_share() -> None:
    small = monitor.measure_decay("rmse", 10.0, 10.2, 1000, CONFIG, higher_is_better=False)
    large = monitor.measure_decay("rmse", 10.0, 10.5, 1000, CONFIG, higher_is_better=False)
    assert not small.decayed and large.decayed  # 3% of 10 minutes is the tolerance, not 0.03 minutes


def test_an_estimated_decay_counts_only_when_the_policy_allows() -> None:
    from components.monitoring.monitor import Decay
    from components.monitoring.monitor.report import DriftReport

    estimated = Decay("roc_auc", 0.85, 0.78, 0.07, True, 500, estimated=True)
    report = DriftReport("m", "1", "w", "now", 100, 500, [], None, [], None, False, [], {}, estimated=estimated)
    assert report.decayed(True) is True and report.decayed(False) is None
    allowed = monitor.decide(report, [], MonitoringConfig())
    assert (
        allowed.verdict == "watching" and "estimated roc_auc 0.7800" in allowed.reason and "no labels" in allowed.reason
    )
    report.verdict, report.reason = "stable", ""
    assert monitor.decide(report, [], MonitoringConfig(estimated_decay=False)).verdict == "stable"


def test_rollout_goals_judge_promoted_challengers_against_the_champions_they_replaced() -> None:
    def row(batch: int, **fields):
        base = ctsim.TimelineRow(batch, "stable", "passed", "stable", False, None, "1", 0.80, 0.82)
        for name, value in fields.items():
            setattr(base, name, value)
        return base

    assert ctsim.rollout_goals([row(0), row(1)]) == []  # no challenger: nothing to judge
    good = [
        row(0, retrained=True, started="2"),
        row(1, challenger="2", challenger_score=0.83, online="promoted after 2,000 labels", promoted="2"),
        row(2, served_version="2", served_score=0.83, displaced_score=0.80),
    ]
    assert all(g.met for g in ctsim.rollout_goals(good)), ctsim.rollout_goals(good)
    worse_after = [*good[:2], row(2, served_version="2", served_score=0.78, displaced_score=0.80)]
    assert [g.met for g in ctsim.rollout_goals(worse_after)] == [False, True]
    slow = [
        good[0],
        row(1, challenger="2", challenger_score=0.83, online="continue after 90 labels"),
        row(2, challenger="2", challenger_score=0.83, online="continue after 180 labels"),
        row(3, challenger="2", challenger_score=0.83, online="promoted after 270 labels", promoted="2"),
    ]
    late = ctsim.rollout_goals(slow)[1]
    assert not late.met and "promoted at batch 3" in late.detail
    retired = [good[0], row(1, challenger="2", challenger_score=0.79, online="retired after 2,000 labels")]
    assert all(g.met for g in ctsim.rollout_goals(retired))  # a worse one retired: both goals hold


def test_a_challenger_promoted_on_a_batch_s_labels_counts_its_shadow_figure_there() -> None:
    plan = ctsim.plan_batches(6, drift_at=2, concept_at=None, corrupt_at=None)

    def row(batch: int, **fields):
        base = ctsim.TimelineRow(batch, plan[batch].kind, "passed", "stable", False, None, "1", 0.80, 0.80)
        for name, value in fields.items():
            setattr(base, name, value)
        return base

    timeline = [
        row(0),
        row(1),
        row(2, drift="watching", served_score=0.74, best_score=0.77),
        row(3, drift="retrain", retrained=True, started="2", served_score=0.74, best_score=0.77),
        row(
            4,
            served_score=0.74,
            best_score=0.77,
            challenger="2",
            challenger_score=0.765,
            online="promoted after 4,000 labels",
            promoted="2",
        ),
        row(5, served_version="2", served_score=0.765, best_score=0.77),
    ]
    recovery = next(g for g in ctsim.check_goals(timeline, plan) if g.name.startswith("after the shift"))
    assert recovery.met and "batch 4: +0.5" in recovery.detail, recovery
    last = timeline[:5]  # the promotion on the segment's last batch: its shadow figure is what is judged
    recovery = next(g for g in ctsim.check_goals(last, plan[:5]) if g.name.startswith("after the shift"))
    assert recovery.met and recovery.detail.endswith("batch 4: +0.5"), recovery
