"""The compiled inference path against the scikit-learn pipeline, for every family x task the project
trains and the wrappers training adds (recalibration, a decision threshold, soft-voting ensembles).

Each model is fitted as the flow fits it (`fit_final_model`); its compiled form must pass the load
check and then answer held-out rows, single rows and edge cases exactly as the pipeline does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from components.core.config import ModelConfig
from components.inference.compiled import COMPILED, PIPELINE, TOLERANCE, prepare_path
from components.inference.compiled.trees import WALK_MAX_ROWS
from components.inference.inputs import InputError, inputs_from_frame, inputs_from_records
from components.inference.scoring import ModelSchema, Predictions, ServingModel, predict_frame
from components.modeling.prepare import infer_feature_spec, split_data
from components.modeling.search.threshold import tune_threshold
from components.modeling.tasks import TASKS
from components.modeling.train import fit_final_model
from components.simulation.simulate import generate_batches

TARGETS = {"binary": "default", "multiclass": "band", "regression": "loan_amount"}
CASES = [
    (task, family, calibration, None)
    for task in ("binary", "multiclass", "regression")
    for family in ("linear", "random_forest", "hist_gradient_boosting")
    for calibration in ("none",)
] + [
    ("binary", "linear", "sigmoid", None),
    ("binary", "random_forest", "isotonic", None),
    ("multiclass", "hist_gradient_boosting", "sigmoid", None),
    ("binary", "linear", "none", ("linear", "hist_gradient_boosting")),
    ("multiclass", "linear", "isotonic", ("linear", "random_forest")),
    ("regression", "linear", "none", ("linear", "random_forest")),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    frame = pd.concat([b.frame for b in generate_batches(2, 900, seed=3)], ignore_index=True)
    frame["band"] = pd.cut(frame["interest_rate"], 3, labels=["low", "mid", "high"]).astype(str)
    return frame


def _fit(table: pd.DataFrame, task: str, family: str, calibration: str, members: tuple[str, ...] | None) -> Any:
    target = TARGETS[task]
    frame = table.drop(columns=[c for c in TARGETS.values() if c != target] + (["interest_rate"] * (task != "binary")))
    spec = infer_feature_spec(frame, target, "loan_id", "application_time")
    split = split_data(frame, spec, 0.25, seed=1, task=TASKS[task])
    configs = [
        ModelConfig(
            estimator=name,
            calibration=calibration,
            interval_coverage=0.9 if task == "regression" else None,
            params={"n_estimators": 40} if name == "random_forest" else {},
        )
        for name in members or (family,)
    ]
    tune = (lambda y, p: tune_threshold(y, p, pos_label=1)) if task == "binary" else None
    final = fit_final_model(
        split.X_train,
        split.y_train,
        spec,
        configs if members else configs[0],
        1,
        task=TASKS[task],
        folds=3,
        tune_threshold=tune,
    )
    return final, split


@pytest.fixture(scope="module", params=CASES, ids=lambda c: "-".join(str(p) for p in c if p not in ("none", None)))
def served(request: pytest.FixtureRequest, table: pd.DataFrame) -> tuple[ServingModel, pd.DataFrame]:
    final, split = _fit(table, *request.param)
    schema = ModelSchema.of(final.model)
    path = prepare_path(final.model, schema.numeric, schema.categorical, split.X_train.head(50))
    half_width = final.interval.half_width if final.interval else None
    info = {"interval": {"half_width": half_width, "coverage": 0.9}} if half_width is not None else {}
    return ServingModel(final.model, schema, info, path), split.X_test


def _same(a: Predictions, b: Predictions) -> None:
    if a.classes:
        assert a.labels == b.labels
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=TOLERANCE)
        if a.class_probabilities is not None:
            np.testing.assert_allclose(a.class_probabilities, b.class_probabilities, rtol=0, atol=TOLERANCE)
    else:
        np.testing.assert_allclose(a.labels, b.labels, rtol=1e-9, atol=TOLERANCE)
        if a.lower is not None:
            np.testing.assert_allclose(a.lower, b.lower, rtol=1e-9, atol=TOLERANCE)


def test_every_family_and_task_compiles_and_passes_the_load_check(served) -> None:
    model, _ = served
    assert model.inference is not None and model.inference.name == COMPILED, model.inference
    check = model.inference.equivalence
    assert check is not None and check.ok and check.max_difference <= TOLERANCE and check.rows >= 100
    described = model.inference.describe()
    assert described["path"] == COMPILED and described["fallback_reason"] is None


def test_held_out_rows_get_the_pipelines_answers_in_one_call_and_row_by_row(served) -> None:
    model, rows = served
    expected = predict_frame(model.model, rows, model.schema, model.half_width)
    _same(expected, model.predict_frame(rows))  # one call: the estimator's own loops past WALK_MAX_ROWS
    assert len(rows) > WALK_MAX_ROWS
    for i in range(0, 40):
        one = rows.iloc[[i]]
        _same(predict_frame(model.model, one, model.schema, model.half_width), model.predict_frame(one))
    records = rows.head(20).astype(object).where(rows.head(20).notna(), None).to_dict("records")
    _same(predict_frame(model.model, rows.head(20), model.schema, model.half_width), model.predict(records))


def test_edge_cases_get_the_pipelines_answers(served) -> None:
    model, rows = served
    edge = rows.head(8).astype({c: "float64" for c in model.schema.numeric})
    numeric, categorical = model.schema.numeric, model.schema.categorical
    edge.loc[edge.index[0], list(numeric)] = np.nan
    edge.loc[edge.index[1], categorical[0]] = "a category never seen in training"
    edge.loc[edge.index[2], list(categorical)] = None
    edge.loc[edge.index[3], numeric[0]] = 1e12
    edge.loc[edge.index[4], numeric[0]] = -1e12
    edge.loc[edge.index[5], categorical[-1]] = ""
    for part in (edge, edge.iloc[[1]], edge.iloc[[2]]):
        _same(predict_frame(model.model, part, model.schema, model.half_width), model.predict_frame(part))


def test_an_infinite_number_takes_the_pipeline_and_its_error(served) -> None:
    model, rows = served
    bad = rows.head(2).astype({c: "float64" for c in model.schema.numeric})
    bad.loc[bad.index[0], model.schema.numeric[-1]] = np.inf
    with pytest.raises(ValueError) as expected:
        predict_frame(model.model, bad, model.schema)
    with pytest.raises(ValueError) as got:
        model.predict_frame(bad)
    assert str(got.value) == str(expected.value)


def test_records_convert_without_pandas_as_the_frame_would(table: pd.DataFrame) -> None:
    numeric, categorical = ("age", "annual_income"), ("region", "purpose")
    rows = [
        {"age": 30, "annual_income": None, "region": "west", "purpose": None},
        {"age": 41.5, "annual_income": 52000.0, "region": None, "purpose": "car"},
    ]
    fast = inputs_from_records(rows, numeric, categorical)
    slow = inputs_from_frame(pd.DataFrame.from_records(rows), numeric, categorical)
    np.testing.assert_array_equal(fast.numeric, slow.numeric)
    for a, b in zip(fast.categorical, slow.categorical, strict=True):
        assert list(a) == list(b)
    # What the fast path does not take goes through the frame's checks and their messages.
    with pytest.raises(InputError, match=r"age must be a number, got (np\.)?True"):
        inputs_from_records([{**rows[0], "age": True}], numeric, categorical)
    assert inputs_from_records([{**rows[0], "age": "42"}], numeric, categorical).numeric[0, 0] == 42.0
    with pytest.raises(InputError, match="missing column"):
        inputs_from_records([{"age": 1}], numeric, categorical)
    # Booleans and numbers as categories stay as they are (a NaN is a missing one), without pandas.
    odd = [{**rows[0], "region": True}, {**rows[1], "region": float("nan"), "purpose": 3}]
    fast = inputs_from_records(odd, numeric, categorical)
    slow = inputs_from_frame(pd.DataFrame.from_records(odd), numeric, categorical)
    assert list(fast.categorical[0]) == [True, None] and list(slow.categorical[0]) == [True, None]
    assert fast.categorical[1][1] == slow.categorical[1][1] == 3


def test_a_model_the_compiler_does_not_cover_falls_back_to_the_pipeline_and_says_why(table: pd.DataFrame) -> None:
    final, split = _fit(table, "binary", "linear", "none", None)
    pipeline = final.model.estimator_
    knn = Pipeline([("preprocess", pipeline[0]), ("model", KNeighborsClassifier(5))]).fit(split.X_train, split.y_train)
    schema = ModelSchema.of(knn)
    path = prepare_path(knn, schema.numeric, schema.categorical)
    assert path.name == PIPELINE and path.compiled is None
    assert path.reason == "not compiled: estimator KNeighborsClassifier has no compiled form"
    served = ServingModel(knn, schema, {}, path)
    _same(predict_frame(knn, split.X_test, schema), served.predict_frame(split.X_test))


def test_a_compiled_form_that_answers_differently_is_refused(table: pd.DataFrame, monkeypatch) -> None:
    from components.inference.compiled import model as compiled_model

    final, split = _fit(table, "binary", "linear", "none", None)
    schema = ModelSchema.of(final.model)
    real = compiled_model.Linear.output

    def off_by_a_little(self, X, method, walk):  # a compiler bug: one part in a thousand
        return real(self, X, method, walk) * (1 + 1e-3)

    monkeypatch.setattr(compiled_model.Linear, "output", off_by_a_little)
    path = prepare_path(final.model, schema.numeric, schema.categorical, split.X_train.head(50))
    assert path.name == PIPELINE and path.equivalence is not None and not path.equivalence.ok
    assert "differ from the pipeline's" in str(path.reason) and f"tolerance {TOLERANCE:g}" in str(path.reason)


def _sklearn_leaves(model: Any, X: np.ndarray) -> np.ndarray:
    """scikit-learn's own leaf per row and tree, as node indices into the flattened arrays."""
    from sklearn.ensemble import RandomForestRegressor

    if isinstance(model, RandomForestRegressor):
        per_tree = [tree.apply(X.astype(np.float32)) for tree in model.estimators_]
        sizes = [tree.tree_.node_count for tree in model.estimators_]
    else:  # a boosted model's predictors
        from sklearn.ensemble._hist_gradient_boosting.common import X_DTYPE

        predictors = [p for iteration in model._predictors for p in iteration]
        per_tree = [_boosted_leaf(p.nodes, X.astype(X_DTYPE)) for p in predictors]
        sizes = [len(p.nodes) for p in predictors]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.stack(per_tree, axis=1) + offsets


def _boosted_leaf(nodes: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Row by row, the way the predictor's Cython loop goes (NaN follows missing_go_to_left)."""
    out = np.empty(len(X), dtype=np.intp)
    for r, row in enumerate(X):
        node = 0
        while not nodes["is_leaf"][node]:
            value = row[nodes["feature_idx"][node]]
            go_left = nodes["missing_go_to_left"][node] if np.isnan(value) else value <= nodes["num_threshold"][node]
            node = nodes["left"][node] if go_left else nodes["right"][node]
        out[r] = node
    return out


def test_the_tree_walk_reaches_scikit_learns_leaves_with_missing_values_and_stumps() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    from components.inference.compiled.trees import flatten_boosting, flatten_sklearn_forest

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = X[:, 0] * 2 + np.sin(X[:, 1] * 3) + rng.normal(scale=0.1, size=400)
    X_missing = X.copy()
    X_missing[rng.random(X.shape) < 0.2] = np.nan  # the trees learn where missing values go
    probe = X_missing[:80]
    forest = RandomForestRegressor(n_estimators=15, random_state=0).fit(X_missing, y)
    boosted = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(X_missing, y)
    constant = RandomForestRegressor(n_estimators=3).fit(X, np.ones(400))  # trees of one node, depth 0
    stumps = RandomForestRegressor(n_estimators=5, max_depth=1, random_state=0).fit(X, y)
    # Grown best first: its nodes are not in preorder until flattening reorders them.
    best_first = RandomForestRegressor(n_estimators=5, max_leaf_nodes=20, random_state=0).fit(X_missing, y)
    for model, flat in (
        (forest, flatten_sklearn_forest(forest)),
        (best_first, flatten_sklearn_forest(best_first)),
        (boosted, flatten_boosting(boosted)),
        (stumps, flatten_sklearn_forest(stumps)),
        (constant, flatten_sklearn_forest(constant)),
    ):
        expected = _sklearn_leaves(model, probe)
        assert np.array_equal(flat.leaves(probe), expected)  # rows together
        for r in range(len(probe)):  # and one at a time (the single-row branch)
            assert np.array_equal(flat.leaves(probe[r : r + 1]), expected[r : r + 1])
    assert flatten_sklearn_forest(forest).missing_left
    assert flatten_sklearn_forest(constant).depth == 0
