"""The parts of a rollout: the shadow scorer off the response path, canary keys, the log's two
answers, and which logged requests pair the champion with the challenger."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.core.config import OnlineTestConfig
from components.inference.inputs import inputs_from_records
from components.inference.predlog import (
    MODEL_VERSION,
    PREDICTION,
    PROBABILITY,
    SHADOW_PREDICTION,
    SHADOW_PROBABILITY,
    SHADOW_VERSION,
    PredictionLog,
    answers_of,
    read_prediction_log,
)
from components.inference.scoring import Predictions
from components.modeling.tasks import task_named
from components.monitoring import challenger
from serving.rollout import ShadowScorer, key_share, pick


class _Served:
    """A stand-in for a loaded version's scorer: the challenger's model is not what is tested here."""

    def __init__(self, probability: float, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.probability, self.gate, self.fail = probability, gate, fail
        self.schema = type("Schema", (), {"numeric": ("age",), "categorical": ("region",)})()

    def predict_inputs(self, inputs):
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise ValueError("broken challenger")
        return Predictions([1] * inputs.rows, [self.probability] * inputs.rows, [0, 1])


class _Version:
    def __init__(self, version: str, served: _Served) -> None:
        self.version, self.served = version, served


ROWS = [{"age": 30.0, "region": "north"}, {"age": 41.0, "region": None}]


def _inputs():
    return inputs_from_records(ROWS, ("age",), ("region",))


def test_the_shadow_scorer_logs_both_answers_and_never_blocks(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=60)
    gate = threading.Event()
    scorer = ShadowScorer(log, max_pending_rows=3)
    champion = Predictions([0, 1], [0.2, 0.6], [0, 1])
    slow = _Version("2", _Served(0.9, gate))
    scorer.submit(slow, ROWS, _inputs(), ["a", "a"], ("1", champion), None)  # queued: waits at the gate
    scorer.submit(slow, ROWS, _inputs(), ["b", "b"], ("1", champion), None)  # 4 rows pending > 3: skipped
    assert scorer.stats.skipped_rows == 2
    gate.set()
    deadline = time.monotonic() + 10
    while scorer.stats.pending_rows and time.monotonic() < deadline:
        time.sleep(0.01)
    scorer.submit(_Version("2", _Served(0.9, fail=True)), ROWS, _inputs(), ["c", "c"], ("1", champion), None)
    scorer.close()
    log.close()
    frame = read_prediction_log(tmp_path).set_index("_request_id")
    assert frame.loc["a", SHADOW_PROBABILITY].tolist() == [0.9, 0.9]
    assert frame.loc["a", SHADOW_PREDICTION].tolist() == ["1", "1"]
    assert frame.loc["a", PROBABILITY].tolist() == [0.2, 0.6]  # what was served
    assert frame.loc["b", SHADOW_VERSION].isna().all() and frame.loc["b", PROBABILITY].tolist() == [0.2, 0.6]
    assert frame.loc["c", SHADOW_VERSION].tolist() == ["2", "2"] and frame.loc["c", SHADOW_PREDICTION].isna().all()
    assert (scorer.stats.scored_rows, scorer.stats.failed_rows, scorer.stats.pending_rows) == (2, 2, 0)
    assert "broken challenger" in scorer.stats.last_error


def test_canary_keys_are_stable_and_split_by_share() -> None:
    shares = np.array([key_share(str(i)) for i in range(20_000)])
    assert 0.09 < (shares < 0.1).mean() < 0.11
    assert key_share("loan-7") == key_share("loan-7")
    assert pick(np.array([True, False]), ["a", "b"], ["x", "y"]) == ["x", "b"]
    assert pick(np.array([True]), [], []) == []  # a regressor's probabilities


def _log() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "loan_id": [1, 2, 3, 4, 5],
            "_logged_at": pd.to_datetime(["2026-12-01T00:00:0" + str(i) for i in range(5)], utc=True),
            MODEL_VERSION: ["1", "2", "1", "1", "3"],
            PREDICTION: ["0", "1", "1", "0", "1"],
            PROBABILITY: [0.1, 0.8, 0.7, 0.3, 0.9],
            SHADOW_VERSION: ["2", "1", "2", None, "1"],
            SHADOW_PREDICTION: ["1", "0", None, None, "0"],
            SHADOW_PROBABILITY: [0.6, 0.2, None, None, 0.4],
        }
    )


def test_the_requests_both_versions_answered_whichever_served() -> None:
    pairs = challenger.paired_rows(_log(), "1", "2")
    assert pairs["loan_id"].tolist() == [1, 2]  # 3: the challenger failed; 4: no challenger; 5: another pair


def test_the_champions_answers_are_read_back_from_a_canary_log() -> None:
    view = answers_of(_log(), "1")
    assert view[MODEL_VERSION].tolist() == ["1", "1", "1", "1", "1"]  # rows 2 and 5: v1 was the shadow
    assert view[PROBABILITY].tolist() == pytest.approx([0.1, 0.2, 0.7, 0.3, 0.4])
    assert view[PREDICTION].tolist() == ["0", "0", "1", "0", "0"]


def test_no_verdict_without_labels_or_an_id_column() -> None:
    task, test = task_named("binary"), OnlineTestConfig()
    comparison, paired, labelled, note = challenger.judge(
        _log(), None, ("1", "2"), (None, None), task, ("loan_id", "default"), test
    )
    assert comparison is None and (paired, labelled) == (2, 0) and "no labels" in note
    labels = pd.DataFrame({"loan_id": [1], "default": [1]})
    _, _, _, note = challenger.judge(_log(), labels, ("1", "2"), (None, None), task, (None, "default"), test)
    assert "data.id_column" in note
    _, paired, _, note = challenger.judge(_log(), labels, ("1", "9"), (None, None), task, ("loan_id", "default"), test)
    assert paired == 0 and "prediction log" in note


def test_batches_queued_together_are_scored_in_one_call_and_each_logged(tmp_path: Path) -> None:
    calls: list[int] = []

    class Counting(_Served):
        def predict_inputs(self, inputs):
            calls.append(inputs.rows)
            return Predictions([1] * inputs.rows, [0.7 + 0.01 * i for i in range(inputs.rows)], [0, 1])

    log = PredictionLog(tmp_path, flush_seconds=60)
    scorer = ShadowScorer(log, coalesce_seconds=0.5)
    challenger = _Version("2", Counting(0.0))
    for name in ("x", "y", "z"):
        champion = Predictions([0, 1], [0.1, 0.9], [0, 1])
        scorer.submit(challenger, ROWS, _inputs(), [name, name], ("1", champion), {"loan_id": [f"{name}1", f"{name}2"]})
    scorer.close()
    log.close()
    assert calls == [6]
    frame = read_prediction_log(tmp_path)
    assert frame["loan_id"].tolist() == ["x1", "x2", "y1", "y2", "z1", "z2"]
    assert frame[SHADOW_PROBABILITY].tolist() == pytest.approx([0.7 + 0.01 * i for i in range(6)])
    assert frame[PROBABILITY].tolist() == [0.1, 0.9] * 3 and frame["region"].isna().tolist() == [False, True] * 3


def test_the_queue_s_weighted_labels_count_through_their_draw_in_the_online_test(tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline

    from components.monitoring import sampling

    rng = np.random.default_rng(0)
    n = 600
    X = pd.DataFrame({"x": rng.uniform(0, 10, n)})
    y = 2 * X["x"] + rng.normal(0, 1, n)

    def fitted(target: pd.Series) -> Pipeline:
        steps = [("preprocess", ColumnTransformer([("numeric", "passthrough", ["x"])])), ("model", LinearRegression())]
        return Pipeline(steps).fit(X, target)

    champion, better = fitted(y + np.where(X["x"] > 7, 3.0, 0.0)), fitted(y)
    log = X.assign(
        loan_id=np.arange(n),
        _logged_at=pd.Timestamp("2026-12-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s"),
        **{MODEL_VERSION: "1", PREDICTION: champion.predict(X), PROBABILITY: np.nan},
        **{SHADOW_VERSION: "2", SHADOW_PREDICTION: better.predict(X), SHADOW_PROBABILITY: np.nan},
    )
    considered = np.arange(50, n)
    picked = considered % 5 == 0
    sampling.write_design(
        tmp_path / "queue-1.design.parquet", pd.Series(considered), np.full(len(considered), 0.2), picked
    )
    random_ids, drawn_ids = np.arange(50), considered[picked]
    labels = pd.concat(
        [
            pd.DataFrame({"loan_id": random_ids, "target": y[random_ids], "_selection": "random"}),
            pd.DataFrame({"loan_id": drawn_ids, "target": y[drawn_ids], "_selection": "weighted"}),
        ]
    )
    task, test, keys = task_named("regression"), OnlineTestConfig(min_rows=20), ("loan_id", "target")
    comparison, paired, used, note = challenger.judge(
        log, labels, ("1", "2"), (champion, better), task, keys, test, designs=tmp_path
    )
    assert comparison is not None and paired == n and used == 50 + len(drawn_ids) == comparison.rows
    assert "110 label(s) from 1 label-queue draw(s) among 550 served rows" in note and comparison.verdict == "promote"
    everywhere = (champion.predict(X) - y) ** 2 - (better.predict(X) - y) ** 2
    assert comparison.mean_difference == pytest.approx(everywhere.mean(), rel=0.35)
    alone, _, used, _ = challenger.judge(log, labels, ("1", "2"), (champion, better), task, keys, test)
    assert alone is not None and alone.rows == used == 50  # no design: the draw's labels cannot count
