"""Hyperparameter search: cross-validated trials, Optuna batches, and threshold tuning."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.metrics import f1_score, precision_score, recall_score

from components.core.config import ModelConfig, SearchConfig
from components.modeling.prepare import FeatureSpec, features_frame, infer_feature_spec
from components.modeling.search import (
    SearchError,
    SearchResult,
    TrialResult,
    cross_validate_params,
    out_of_fold_proba,
    run_search,
    sample_rows,
    search_space,
    tune_threshold,
)
from components.modeling.train import build_estimator, build_model, default_params
from components.simulation.simulate import generate_loans

SEED = 5
Data = tuple[FeatureSpec, pd.DataFrame, pd.Series]


@pytest.fixture(scope="module")
def data() -> Data:
    """900 generated loans, about 13% defaults."""
    frame = generate_loans(900, seed=11).frame
    spec = infer_feature_spec(frame, "default", id_column="loan_id", time_column="application_time")
    return spec, features_frame(frame, spec), frame["default"]


def factory(spec: FeatureSpec, estimator: str = "logistic_regression") -> Callable[[dict[str, Any]], Any]:
    def build(params: dict[str, Any]) -> Any:
        return build_model(spec, ModelConfig(estimator=estimator, params=params), SEED)

    return build


def search(
    data: Data,
    config: SearchConfig,
    *,
    estimator: str = "logistic_regression",
    metric: str = "roc_auc",
    model_factory: Callable[[dict[str, Any]], Any] | None = None,
    **options: Any,
) -> SearchResult:
    spec, X, y = data
    model_factory = model_factory or factory(spec, estimator)
    return run_search(model_factory, estimator, X, y, config, metric=metric, seed=SEED, **options)


def fingerprint(result: SearchResult) -> list[tuple[Any, ...]]:
    return [(t.number, t.params, t.score, t.fold_scores, t.train_score, t.error) for t in result.trials]


def fake_evaluator(calls: list[list[tuple[int, dict[str, Any]]]]) -> Callable[..., list[TrialResult]]:
    """Scores trial n as 0.5 + n/100 without fitting anything, and records each batch."""

    def evaluate(batch: list[tuple[int, dict[str, Any]]]) -> list[TrialResult]:
        calls.append(batch)
        return [TrialResult(n, params, 0.5 + n / 100, 0.0, (0.5 + n / 100,), 0.6, 0.0) for n, params in batch]

    return evaluate


def test_best_trial_is_at_least_as_good_as_the_defaults(data: Data) -> None:
    result = search(data, SearchConfig(trials=5, selection="best"))

    defaults = result.trials[0]
    assert defaults.number == 0
    assert defaults.params == default_params("logistic_regression")
    assert [t.number for t in result.trials] == list(range(5))
    assert all(t.ok for t in result.trials)
    assert result.best.score == max(t.score for t in result.trials)
    assert result.best.score >= defaults.score
    assert result.best_params == result.best.params
    assert len(defaults.fold_scores) == 9  # 3 folds, repeated 3 times on a small table
    assert defaults.score == pytest.approx(np.mean(defaults.fold_scores))
    assert defaults.train_score > defaults.score - 0.05  # training folds score at least about as well
    assert result.rows_used == 900
    assert json.loads(json.dumps(result.as_dict(), allow_nan=False))["best"]["number"] == result.best.number


def test_the_one_standard_error_rule_keeps_the_earliest_trial_within_the_noise_of_the_best(data: Data) -> None:
    result = search(data, SearchConfig(trials=5))  # 900 rows: small, so the folds are repeated 3 times
    top = max(result.trials, key=lambda t: t.score)
    error = top.score_std / np.sqrt(len(top.fold_scores))
    assert len(top.fold_scores) == 9
    eligible = [t.number for t in result.trials if t.score >= top.score - error]
    assert result.best.number == min(eligible)
    few = search(data, SearchConfig(trials=2, small_rows=0))  # no longer small: one pass of the folds
    assert len(few.trials[0].fold_scores) == 3


@pytest.mark.parametrize("estimator", ["logistic_regression", "hist_gradient_boosting", "random_forest"])
def test_every_family_space_gives_params_the_estimator_accepts(data: Data, estimator: str) -> None:
    spec, X, y = data
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SEED))
    space = search_space(estimator)
    for _ in range(3):
        params = space(study.ask())
        with warnings.catch_warnings():
            # A deprecated or renamed parameter must fail the test, not just print.
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            model = build_model(spec, ModelConfig(estimator=estimator, params=params), SEED)
            proba = model.fit(X.iloc[:400], y.iloc[:400]).predict_proba(X.iloc[400:])
        assert np.isfinite(proba).all()
        if estimator == "random_forest":
            assert params["n_jobs"] == 1


@pytest.mark.parametrize(
    ("penalty", "solver", "l1_ratio"), [("l2", "lbfgs", 0.0), ("l1", "saga", 1.0), ("elasticnet", "saga", 0.3)]
)
def test_logistic_penalties_become_l1_ratio_and_a_solver(penalty: str, solver: str, l1_ratio: float) -> None:
    trial = optuna.trial.FixedTrial({"penalty": penalty, "C": 0.1, "l1_ratio": 0.3})
    params = search_space("logistic_regression")(trial)

    assert "penalty" not in params  # deprecated since scikit-learn 1.8: l1_ratio picks the penalty
    assert (params["solver"], params["l1_ratio"], params["C"]) == (solver, l1_ratio, 0.1)
    build_estimator(ModelConfig(estimator="logistic_regression", params=params), SEED)


def test_fixed_params_are_never_suggested_and_always_win(data: Data) -> None:
    # FixedTrial raises for any suggestion it was not given: only the unfixed dimensions are asked.
    trial = optuna.trial.FixedTrial({"max_leaf_nodes": 16, "min_samples_leaf": 20, "l2_regularization": 0.1})
    params = search_space("hist_gradient_boosting", {"learning_rate": 0.2, "max_iter": 30})(trial)
    assert (params["learning_rate"], params["max_iter"], params["max_leaf_nodes"]) == (0.2, 30, 16)

    only_l2 = search_space("logistic_regression", {"solver": "lbfgs"})(optuna.trial.FixedTrial({"C": 3.0}))
    assert (only_l2["solver"], only_l2["l1_ratio"], only_l2["C"]) == ("lbfgs", 0.0, 3.0)

    fixed = {"learning_rate": 0.2, "max_iter": 30}
    result = search(data, SearchConfig(trials=3), estimator="hist_gradient_boosting", fixed_params=fixed)
    assert all(t.ok and t.params["learning_rate"] == 0.2 and t.params["max_iter"] == 30 for t in result.trials)
    assert result.trials[0].params == {**default_params("hist_gradient_boosting"), **fixed}
    assert len({t.params["max_leaf_nodes"] for t in result.trials[1:]}) > 1


@pytest.mark.parametrize("method", ["optuna", "random"])
def test_both_methods_run(data: Data, method: str) -> None:
    result = search(data, SearchConfig(method=method, trials=4, max_rows=450))

    assert result.method == method
    assert len(result.trials) == 4 and all(t.ok for t in result.trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in result.trials}) == 4


def test_search_is_deterministic_for_one_and_two_workers(data: Data) -> None:
    one = search(data, SearchConfig(trials=4, workers=1, max_rows=450))
    assert fingerprint(search(data, SearchConfig(trials=4, workers=1, max_rows=450))) == fingerprint(one)

    two = search(data, SearchConfig(trials=4, workers=2, max_rows=450))
    assert fingerprint(search(data, SearchConfig(trials=4, workers=2, max_rows=450))) == fingerprint(two)
    assert two.trials[0].score == one.trials[0].score
    assert two.trials[0].params == one.trials[0].params
    assert len(two.trials) == 4 and all(t.ok for t in two.trials)


def test_custom_evaluate_batch_gets_batches_of_workers_and_on_trial_sees_each(data: Data) -> None:
    calls: list[list[tuple[int, dict[str, Any]]]] = []
    seen: list[TrialResult] = []
    result = search(data, SearchConfig(trials=5, workers=3), evaluate_batch=fake_evaluator(calls), on_trial=seen.append)

    assert [len(batch) for batch in calls] == [3, 2]
    assert [n for batch in calls for n, _ in batch] == [0, 1, 2, 3, 4]
    assert calls[0][0][1] == default_params("logistic_regression")
    assert seen == list(result.trials)
    assert result.best.number == 4


def test_evaluate_batch_must_answer_every_trial(data: Data) -> None:
    def forgetful(batch: list[tuple[int, dict[str, Any]]]) -> list[TrialResult]:
        return fake_evaluator([])(batch[:1])

    with pytest.raises(ValueError, match="one TrialResult per trial"):
        search(data, SearchConfig(trials=4, workers=2, max_rows=450), evaluate_batch=forgetful)


def test_failing_trials_do_not_stop_the_search(data: Data) -> None:
    spec, _, _ = data
    build = factory(spec)

    def only_defaults(params: dict[str, Any]) -> Any:
        if params != default_params("logistic_regression"):
            raise ValueError("unsupported combination")
        return build(params)

    seen: list[TrialResult] = []
    result = search(data, SearchConfig(trials=4), model_factory=only_defaults, on_trial=seen.append)

    assert len(seen) == len(result.trials) == 4
    assert result.best.number == 0
    failed = result.trials[1:]
    assert all(t.error and "unsupported combination" in t.error and t.score == -math.inf for t in failed)
    assert json.dumps(result.as_dict(), allow_nan=False)  # infinite scores become null


def test_a_search_where_every_trial_fails_raises(data: Data) -> None:
    def broken(params: dict[str, Any]) -> Any:
        raise ValueError("nothing fits")

    with pytest.raises(SearchError, match="nothing fits"):
        search(data, SearchConfig(trials=2), model_factory=broken)


class _NanModel:
    classes_ = np.array([0, 1])

    def fit(self, X: pd.DataFrame, y: pd.Series) -> _NanModel:
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.full((len(X), 2), np.nan)


def test_non_finite_probabilities_mark_the_trial_failed(data: Data) -> None:
    _, X, y = data
    result = cross_validate_params(
        lambda params: _NanModel(), {}, X, y, metric="log_loss", folds=3, seed=SEED, number=7
    )

    assert result.number == 7 and result.score == math.inf and "non-finite" in (result.error or "")


def test_cross_validation_scores_multiclass_targets() -> None:
    X, y = make_classification(300, n_features=6, n_informative=4, n_classes=3, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]).assign(label=np.array(["a", "b", "c"])[y])
    spec = infer_feature_spec(frame, "label")
    result = cross_validate_params(
        factory(spec), {}, features_frame(frame, spec), frame["label"], metric="roc_auc", folds=3, seed=SEED
    )

    assert result.ok and 0.5 < result.score <= 1 and len(result.fold_scores) == 3


def test_lower_is_better_metric_picks_the_minimum(data: Data) -> None:
    result = search(data, SearchConfig(trials=4), metric="log_loss")

    scores = [t.score for t in result.trials]
    assert result.best.score == min(scores) < max(scores)


def test_max_rows_sample_is_stratified_seeded_and_reported(data: Data) -> None:
    _, X, y = data
    sample = sample_rows(X, y, max_rows=300, seed=SEED)

    assert len(sample.X) == len(sample.y) == 300
    assert abs(sample.y.mean() - y.mean()) < 0.02
    assert sample.X.index.is_monotonic_increasing and sample.X.index.equals(sample.y.index)
    assert sample.X.index.equals(sample_rows(X, y, max_rows=300, seed=SEED).X.index)
    assert sample_rows(sample.X, sample.y, max_rows=300, seed=SEED).X.index.equals(sample.X.index)

    assert search(data, SearchConfig(trials=1, max_rows=300)).rows_used == 300


def test_timeout_stops_asking_new_batches(data: Data) -> None:
    calls: list[list[tuple[int, dict[str, Any]]]] = []
    result = search(data, SearchConfig(trials=6, workers=2, timeout_minutes=1e-9), evaluate_batch=fake_evaluator(calls))

    assert len(calls) == 1 and len(result.trials) == 2


def test_optuna_logging_is_quiet_during_the_search_and_restored_after(data: Data) -> None:
    levels: list[int] = []
    evaluate = fake_evaluator([])

    def spy(batch: list[tuple[int, dict[str, Any]]]) -> list[TrialResult]:
        levels.append(optuna.logging.get_verbosity())
        return evaluate(batch)

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        search(data, SearchConfig(trials=2), evaluate_batch=spy)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(before)
    assert levels == [optuna.logging.WARNING] * 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "none"}, "method is 'none'"),
        ({"cv_folds": 20, "max_rows": 100}, "at least 20 rows of every class"),
    ],
)
def test_unusable_settings_fail_with_a_message(data: Data, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        search(data, SearchConfig(**settings))


def test_unknown_estimator_and_metric_are_rejected(data: Data) -> None:
    with pytest.raises(ValueError, match="no search space"):
        search_space("svm")
    with pytest.raises(ValueError, match="unknown metric"):
        search(data, SearchConfig(), metric="auc")


def test_tuned_threshold_beats_one_half_on_imbalanced_out_of_fold_probabilities(data: Data) -> None:
    spec, X, y = data
    proba = out_of_fold_proba(build_model(spec, ModelConfig(), SEED), X, y, folds=3, seed=SEED)
    assert proba.shape == (900, 2)

    choice = tune_threshold(y, proba[:, 1], pos_label=1)
    predicted = proba[:, 1] >= choice.threshold

    assert choice.threshold < 0.5
    assert choice.f1 > f1_score(y, proba[:, 1] >= 0.5)
    assert choice.f1 == pytest.approx(f1_score(y, predicted))
    assert choice.precision == pytest.approx(precision_score(y, predicted))
    assert choice.recall == pytest.approx(recall_score(y, predicted))


def test_threshold_ties_go_to_the_higher_threshold() -> None:
    # Cut-offs 0.2 and 0.5 both give F1 = 2/3; string labels, too.
    labels = np.array(["no", "yes", "no", "no", "yes"])
    choice = tune_threshold(labels, np.array([0.1, 0.2, 0.3, 0.4, 0.5]), pos_label="yes")

    assert (choice.threshold, choice.precision, choice.recall) == (0.5, 1.0, 0.5)
    assert choice.f1 == pytest.approx(2 / 3)


@pytest.mark.parametrize(("labels", "message"), [([0, 1, 2, 1], "binary"), ([0, 0, 0, 0], "both positive")])
def test_threshold_tuning_needs_a_binary_target(labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tune_threshold(np.array(labels), np.array([0.1, 0.4, 0.6, 0.9]), pos_label=1)


def test_a_search_across_families_tries_each_familys_defaults_first_and_names_the_family(data: Data) -> None:
    from components.modeling.train import model_factory

    spec, X, y = data
    config = ModelConfig(estimator="auto", params={"hist_gradient_boosting": {"max_iter": 60}})
    factory = model_factory(spec, config, SEED)
    fixed = {"logistic_regression": {}, "hist_gradient_boosting": {"max_iter": 60}}
    result = run_search(
        factory,
        ["logistic_regression", "hist_gradient_boosting"],
        X,
        y,
        SearchConfig(trials=6, selection="best", ensemble="never"),
        metric="roc_auc",
        seed=SEED,
        fixed_params=fixed,
    )
    first, second = result.trials[0].params, result.trials[1].params
    assert first == {"estimator": "logistic_regression", **default_params("logistic_regression")}
    assert second == {"estimator": "hist_gradient_boosting", **default_params("hist_gradient_boosting"), "max_iter": 60}
    assert all(t.params["estimator"] in {"logistic_regression", "hist_gradient_boosting"} for t in result.trials)
    assert all(t.params["max_iter"] == 60 for t in result.trials if t.params["estimator"] == "hist_gradient_boosting")
    assert [t.params["estimator"] for t in result.trials] == ["logistic_regression", "hist_gradient_boosting"] * 3
    assert result.best.score == max(t.score for t in result.trials)


def test_a_regression_search_scores_by_error_and_can_move_forward_in_time() -> None:
    from components.modeling.tasks import TASKS
    from components.modeling.train import model_factory

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.choice(["u", "v"], n)})
    frame["y"] = 2 * frame["a"] + (frame["b"] == "u") * 3 + rng.normal(0, 0.3, n)
    spec = infer_feature_spec(frame, "y")
    task = TASKS["regression"]
    factory = model_factory(spec, ModelConfig(), SEED, task=task)
    X, y = features_frame(frame, spec), frame["y"]
    for by_time in (False, True):
        result = run_search(
            factory,
            ["ridge", "hist_gradient_boosting"],
            X,
            y,
            SearchConfig(trials=4),
            metric="rmse",
            seed=SEED,
            task=task,
            by_time=by_time,
        )
        assert result.best.score < 0.6 and all(t.ok for t in result.trials)
    with pytest.raises(ValueError, match="not a regression metric"):
        run_search(factory, "ridge", X, y, SearchConfig(trials=2), metric="roc_auc", seed=SEED, task=task)


def test_on_a_small_table_each_familys_best_and_their_ensemble_meet_again_on_fresh_folds(data: Data) -> None:
    from components.modeling.train import ENSEMBLE, member_configs, model_factory

    spec, X, y = data
    config = ModelConfig(estimator="auto", params={"hist_gradient_boosting": {"max_iter": 40}})
    factory = model_factory(spec, config, SEED)
    families = ["logistic_regression", "hist_gradient_boosting"]
    fixed = {"logistic_regression": {}, "hist_gradient_boosting": {"max_iter": 40}}
    result = run_search(
        factory, families, X, y, SearchConfig(trials=4), metric="roc_auc", seed=SEED, fixed_params=fixed
    )
    search_trials, finals = result.trials[:4], result.trials[4:]
    defaults, bests = list(search_trials[:2]), []
    for family in families:
        bests.append(max((t for t in search_trials if t.params["estimator"] == family), key=lambda t: t.score))
    expected = [t.params for t in defaults]
    expected += [t.params for t in bests if t.params not in expected]
    expected += [{"estimator": ENSEMBLE, "members": [t.params for t in defaults]}]
    if bests != defaults:
        expected += [{"estimator": ENSEMBLE, "members": [t.params for t in bests]}]
    assert [t.params for t in finals] == expected and [t.number for t in finals] == list(range(4, 4 + len(finals)))
    assert finals[0].fold_scores != search_trials[0].fold_scores  # the same model, new folds
    # The selection rule (one standard error, the default) among the finalists: the earliest within
    # one standard error of the top, so the simpler model wins what the folds cannot tell apart.
    top = max(finals, key=lambda t: t.score)
    near = [t for t in finals if t.score >= top.score - top.score_std / np.sqrt(len(top.fold_scores))]
    assert result.best in finals and result.best is near[0]
    ensemble = factory(next(t for t in finals if t.params["estimator"] == ENSEMBLE).params).fit(X, y)
    assert type(ensemble).__name__ == "VotingClassifier" and np.isfinite(ensemble.predict_proba(X)).all()
    assert [m.estimator for m in member_configs(config, finals[-1].params)] == families
    large = SearchConfig(trials=4, small_rows=100)  # not a small table: no final comparison
    assert len(run_search(factory, families, X, y, large, metric="roc_auc", seed=SEED, fixed_params=fixed).trials) == 4


def test_leaf_sizes_fit_the_rows_a_fold_fits_on() -> None:
    """On 89 rows a leaf of 45 is the whole tree: a small table's search keeps leaves it can hold."""
    from optuna.distributions import IntDistribution

    from components.modeling.search.spaces import family_space as _space

    small = _space("hist_gradient_boosting", fit_rows=89)["min_samples_leaf"]
    assert isinstance(small, IntDistribution) and small.high == 8 and 1 <= small.low <= small.high
    assert _space("hist_gradient_boosting", fit_rows=100_000)["min_samples_leaf"].high == 200
    assert _space("random_forest", fit_rows=89)["min_samples_leaf"].high == 8
    assert _space("logistic_regression", fit_rows=89) == _space("logistic_regression")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    suggest = search_space("hist_gradient_boosting", fit_rows=89)
    assert all(suggest(study.ask())["min_samples_leaf"] <= 8 for _ in range(20))
