"""The label queue on real prediction-log rows (written and read back by the log's own code)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.inference.predlog import PredictionLog, read_prediction_log
from components.monitoring import labelqueue, monitor, sampling
from components.monitoring.monitor import MonitoringError


def _log(
    folder: Path, ids: list, answers: list, probabilities: list, at: datetime | None = None, version: str = "3"
) -> pd.DataFrame:
    """A served batch written through the prediction log; returns everything logged so far."""
    n = len(ids)
    log = PredictionLog(folder, flush_seconds=60)
    features = {"income": np.arange(n, dtype="float64"), "region": np.asarray(["north"] * n, dtype=object)}
    log.append_batch(features, ["r"] * n, version, answers, probabilities, {"loan_id": np.asarray(ids)}, at=at)
    log.close()
    return read_prediction_log(folder)


def _queue(log: pd.DataFrame, tmp_path: Path, task: str = "binary", size: int = 3, **kwargs):
    kwargs.setdefault("random_share", 0.0)
    return labelqueue.write_queue(
        log, task=task, id_column="loan_id", target="default", size=size, folder=tmp_path / "queue", **kwargs
    )


def test_binary_rows_closest_to_the_decision_threshold_come_first(tmp_path: Path) -> None:
    p = [0.05, 0.31, 0.45, 0.29, 0.9, 0.6, 0.33]
    answers = [int(x >= 0.3) for x in p]  # the threshold the answers imply: 0.3
    log = _log(tmp_path / "log", list(range(7)), answers, p)
    assert labelqueue.binary_threshold(log) == pytest.approx(0.30)
    result = _queue(log, tmp_path)
    queued = pd.read_csv(result.path)
    assert list(queued["loan_id"]) == [1, 3, 6]  # 0.31, 0.29, 0.33
    assert queued["default"].isna().all() and queued["region"].eq("north").all()
    assert {"_answer", "_probability", "_model_version", "_logged_at", "_why"} <= set(queued.columns)
    assert result.rows == 3 and result.candidates == 7 and "threshold 0.300" in result.strategy


def test_the_threshold_is_the_one_of_the_version_logged_last(tmp_path: Path) -> None:
    earlier = datetime.now(UTC) - timedelta(hours=1)
    _log(tmp_path / "log", [1, 2, 3], [0, 1, 1], [0.6, 0.8, 0.9], at=earlier, version="2")  # threshold 0.7
    log = _log(tmp_path / "log", [4, 5, 6], [0, 1, 1], [0.1, 0.3, 0.5])  # v3: 0.2
    assert labelqueue.binary_threshold(log) == pytest.approx(0.2)


def test_in_shadow_the_rows_where_the_versions_disagree_come_first_with_both_answers(tmp_path: Path) -> None:
    from components.inference.predlog import SHADOW_PREDICTION, SHADOW_PROBABILITY, SHADOW_VERSION

    n, served = 6, [0.10, 0.32, 0.90, 0.80, 0.28, 0.05]  # threshold 0.3: rows 1 and 4 are the unsure ones
    other = [0.12, 0.35, 0.20, 0.85, 0.27, np.nan]  # ... but row 2 is where the challenger differs
    log = PredictionLog(tmp_path / "log", flush_seconds=60)
    features = {"income": np.arange(n, dtype="float64")}
    extra = {
        "loan_id": np.arange(n),
        SHADOW_VERSION: ["4"] * (n - 1) + [None],  # the last: the challenger failed
        SHADOW_PREDICTION: [str(int(p >= 0.3)) if p == p else None for p in other],
        SHADOW_PROBABILITY: [None if p != p else p for p in other],
    }
    log.append_batch(features, ["r"] * n, "3", [int(p >= 0.3) for p in served], served, extra)
    log.close()
    frame = read_prediction_log(tmp_path / "log")
    result = _queue(frame, tmp_path, size=3)
    queued = pd.read_csv(result.path)
    assert (
        "how far apart champion and challenger are expected to be" in result.strategy and "recorded" in result.strategy
    )
    design = pd.read_parquet(sampling.design_path(result.path, tmp_path / "queue"))
    chance = design.set_index(sampling.ID)[sampling.INCLUSION]
    assert chance.sum() == pytest.approx(3.0) and len(design) == n and len(queued) == 3  # every row considered
    assert chance["2"] == chance.max() and chance["5"] == chance.min()  # most where they differ; v4 failed on 5
    assert sorted(design.loc[design[sampling.PICKED], sampling.ID].astype(int)) == sorted(queued["loan_id"])
    assert (queued["_selection"] == "weighted").all() and queued["_inclusion"].between(0, 1).all()
    if 2 in set(queued["loan_id"]):
        row = queued.set_index("loan_id").loc[2]
        assert (row["_answer"], row[SHADOW_PREDICTION], row[SHADOW_VERSION]) == (1, 0, 4)
        assert (
            row[SHADOW_PROBABILITY] == pytest.approx(0.20)
            and "picked with probability" in row["_why"]
            and "expected loss gap" in row["_why"]
        )


def test_in_shadow_the_draw_has_the_random_share_and_its_labels_reach_only_the_online_test(tmp_path: Path) -> None:
    from components.inference.predlog import SHADOW_PREDICTION, SHADOW_PROBABILITY, SHADOW_VERSION

    n = 400
    rng = np.random.default_rng(3)
    served, other = rng.random(n), rng.random(n)
    log = PredictionLog(tmp_path / "log", flush_seconds=60)
    extra = {
        "loan_id": np.arange(n),
        SHADOW_VERSION: ["4"] * n,
        SHADOW_PREDICTION: [str(int(p >= 0.5)) for p in other],
        SHADOW_PROBABILITY: other,
    }
    log.append_batch(
        {"income": np.arange(n, dtype="float64")}, ["r"] * n, "3", (served >= 0.5).astype(int), served, extra
    )
    log.close()
    result = _queue(read_prediction_log(tmp_path / "log"), tmp_path, size=40, random_share=0.25)
    queued = pd.read_csv(result.path)
    assert (queued["_selection"] == "random").sum() == 10 and (queued["_selection"] == "weighted").sum() == 30
    queued["default"] = 1
    queued.to_csv(result.path, index=False)
    labelqueue.ingest(
        result.path,
        id_column="loan_id",
        target="default",
        time_column=None,
        labels_folder=tmp_path / "labels",
        data_folder=None,
    )
    sources = [str(tmp_path / "labels")]
    assert len(monitor.read_labels(sources, "loan_id", "default")) == 10  # the realized metric: random rows only
    both = monitor.read_labels(sources, "loan_id", "default", weighted=True)
    assert len(both) == len(queued) and set(both["_selection"]) == {"random", "weighted"}


def test_multiclass_rows_with_the_least_probable_choice_come_first(tmp_path: Path) -> None:
    log = _log(tmp_path / "log", ["a", "b", "c", "d"], ["x", "y", "z", "x"], [0.9, 0.4, 0.7, 0.35])
    queued = pd.read_csv(_queue(log, tmp_path, task="multiclass", size=2).path)
    assert list(queued["loan_id"]) == ["d", "b"]


def test_a_regressor_s_rows_are_spread_over_its_range_extremes_first(tmp_path: Path) -> None:
    values = [float(v) for v in np.random.default_rng(0).permutation(101)]
    log = _log(tmp_path / "log", list(range(101)), values, [])
    queued = pd.read_csv(_queue(log, tmp_path, task="regression", size=5).path)
    assert sorted(queued["_answer"]) == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert set(queued["_answer"].iloc[:2]) == {0.0, 100.0} and queued["_answer"].iloc[2] == 50.0


def test_each_id_is_asked_once_never_when_labelled_or_already_queued(tmp_path: Path) -> None:
    earlier = datetime.now(UTC) - timedelta(hours=1)
    _log(tmp_path / "log", [1, 2], [1, 1], [0.9, 0.9], at=earlier)  # id 2 answered again later, unsure
    log = _log(tmp_path / "log", [2, 3, 4, 5], [0, 0, 0, 0], [0.49, 0.48, 0.47, 0.46])
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"loan_id": [3, 4], "default": [1, None]}).to_csv(labels, index=False)  # 4: not labelled yet
    first = _queue(log, tmp_path, size=2, labels=[labels])
    picked = pd.read_csv(first.path)
    assert list(picked["loan_id"]) == [2, 4] and picked["_probability"].iloc[0] == 0.49  # id 2's latest answer
    assert (first.candidates, first.labelled, first.queued) == (5, 1, 0)
    second = _queue(log, tmp_path, size=5, labels=[labels])
    assert list(pd.read_csv(second.path)["loan_id"]) == [5, 1] and second.queued == 2
    third = _queue(log, tmp_path, size=5, labels=[labels])
    assert third.path is None and third.rows == 0 and third.queued == 4


def test_a_random_share_keeps_the_realized_metric_unbiased(tmp_path: Path) -> None:
    p = np.linspace(0.01, 0.99, 200)
    log = _log(tmp_path / "log", list(range(200)), (p >= 0.5).astype(int).tolist(), p.tolist())
    queued = pd.read_csv(_queue(log, tmp_path, size=20, random_share=0.25, seed=3).path)
    chosen = queued.groupby("_selection")["_probability"]
    assert chosen.size().to_dict() == {"informative": 15, "random": 5}
    assert chosen.apply(lambda s: (s - 0.5).abs().max())["informative"] < 0.05  # the unsure ones
    assert queued.loc[queued["_selection"] == "random", "_why"].str.contains("at random").all()
    queued["default"] = 1
    queued.to_csv(tmp_path / "filled.csv", index=False)
    kwargs = {"id_column": "loan_id", "target": "default", "time_column": None, "data_folder": None}
    labelqueue.ingest(tmp_path / "filled.csv", labels_folder=tmp_path / "labels", **kwargs)
    arrived = monitor.read_labels([str(tmp_path / "labels")], "loan_id", "default")
    assert sorted(arrived["loan_id"]) == sorted(queued.loc[queued["_selection"] == "random", "loan_id"])
    assert list(arrived.columns) == ["loan_id", "default"]
    second = _queue(log, tmp_path, size=500, labels=[next((tmp_path / "labels").iterdir())])
    assert second.labelled == 20 and second.rows == 180  # every label counts as asked, whatever it is used for


def test_the_queue_needs_the_id_column_and_a_size(tmp_path: Path) -> None:
    log = _log(tmp_path / "log", [1], [1], [0.5]).drop(columns=["loan_id"])
    with pytest.raises(MonitoringError, match="id column"):
        _queue(log, tmp_path)
    with pytest.raises(MonitoringError, match="at least 1"):
        _queue(log, tmp_path, size=0)


def _filled_queue(tmp_path: Path) -> Path:
    log = _log(tmp_path / "log", [10, 11, 12], [1, 0, 1], [0.5, 0.4, 0.6])
    path = _queue(log, tmp_path).path
    queued = pd.read_csv(path)
    queued["default"] = queued["loan_id"].map({10: "1", 11: " 0 ", 12: None})  # one left blank
    queued.to_csv(path, index=False)
    return path


def test_ingest_writes_labels_for_monitoring_and_a_batch_shaped_like_the_training_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shape = {"loan_id": [1], "application_time": ["2026-01-01T00:00:00Z"], "income": [1.0], "region": ["south"]}
    pd.DataFrame({**shape, "default": [0]}).to_csv(data / "batch_001.csv", index=False)
    result = labelqueue.ingest(
        _filled_queue(tmp_path),
        id_column="loan_id",
        target="default",
        time_column="application_time",
        labels_folder=tmp_path / "labels",
        data_folder=data,
    )
    assert (result.labelled, result.blank) == (2, 1)
    labels = pd.read_parquet(result.labels_path)
    assert labels.to_dict("list") == {"loan_id": [10, 11], "default": [1, 0], "_selection": ["informative"] * 2}
    batch = pd.read_csv(result.batch_path)
    assert list(batch.columns) == ["loan_id", "application_time", "income", "region", "default"]
    assert batch["default"].tolist() == [1, 0] and batch["application_time"].notna().all()
    assert result.batch_path.suffix == ".csv" and "added to training" in result.batch_note
    arrived = monitor.read_labels([str(tmp_path / "labels"), str(tmp_path / "not-yet")], "loan_id", "default")
    assert arrived is not None and arrived.empty  # rows chosen as unsure do not measure the metric


def test_ingest_leaves_training_alone_when_its_batches_hold_columns_the_log_lacks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"loan_id": [1], "income": [1.0], "branch": ["x"], "default": [0]}).to_parquet(data / "b.parquet")
    result = labelqueue.ingest(
        _filled_queue(tmp_path),
        id_column="loan_id",
        target="default",
        time_column=None,
        labels_folder=tmp_path / "labels",
        data_folder=data,
    )
    assert result.batch_path is None and "['branch']" in result.batch_note and result.labelled == 2
    assert len(list(data.iterdir())) == 1


def test_ingest_refuses_conflicting_labels_and_files_without_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "filled.csv"
    pd.DataFrame({"loan_id": [1, 1], "default": [0, 1]}).to_csv(path, index=False)
    kwargs = {"id_column": "loan_id", "target": "default", "time_column": None, "data_folder": None}
    with pytest.raises(MonitoringError, match="different labels"):
        labelqueue.ingest(path, labels_folder=tmp_path / "labels", **kwargs)
    pd.DataFrame({"loan_id": [1]}).to_csv(path, index=False)
    with pytest.raises(MonitoringError, match="lacks the column 'default'"):
        labelqueue.ingest(path, labels_folder=tmp_path / "labels", **kwargs)


def test_labels_from_several_sources_are_read_as_id_and_target(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    pd.DataFrame({"loan_id": [1], "default": [1], "note": ["x"]}).to_csv(tmp_path / "a" / "x.csv", index=False)
    pd.DataFrame({"loan_id": [2], "default": [0]}).to_parquet(tmp_path / "b.parquet")
    arrived = monitor.read_labels([str(tmp_path / "a"), str(tmp_path / "b.parquet")], "loan_id", "default")
    assert arrived.to_dict("list") == {"loan_id": [1, 2], "default": [1, 0]}
    assert monitor.read_labels([str(tmp_path / "none")], "loan_id", "default") is None
    with pytest.raises(Exception, match="not found"):
        monitor.read_labels([str(tmp_path / "none")], "loan_id", "default", required=True)
    pd.DataFrame({"id": [3]}).to_csv(tmp_path / "a" / "y.csv", index=False)
    with pytest.raises(MonitoringError, match="lacks"):
        monitor.read_labels([str(tmp_path / "a")], "loan_id", "default")


def test_labelled_rows_take_the_batches_types_and_wait_for_the_contract_s_smallest_batch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    like = pd.DataFrame(
        {
            "loan_id": np.array([1], dtype="int64"),
            "application_time": pd.to_datetime(["2026-01-01"]).astype("datetime64[us]"),
            "income": [1.0],
            "region": ["south"],
            "default": np.array([0], dtype="int64"),
        }
    )
    like.to_parquet(data / "batch_001.parquet", index=False)
    kwargs = {
        "id_column": "loan_id",
        "target": "default",
        "time_column": "application_time",
        "labels_folder": tmp_path / "labels",
        "data_folder": data,
        "min_batch_rows": 4,
    }
    first = labelqueue.ingest(_filled_queue(tmp_path), **kwargs)
    assert first.batch_path is None and "2 labelled row(s) held back" in first.batch_note
    assert monitor.read_labels([str(tmp_path / "labels")], "loan_id", "default").empty  # the held rows are no labels
    log = _log(tmp_path / "log2", [20, 21], [1, 0], [0.5, 0.4])
    queued = pd.read_csv(_queue(log, tmp_path / "second").path).assign(default=[1, 1])
    queued.to_csv(tmp_path / "second.csv", index=False)
    second = labelqueue.ingest(tmp_path / "second.csv", **kwargs)
    batch = pd.read_parquet(second.batch_path)
    assert sorted(batch["loan_id"]) == [10, 11, 20, 21] and "4 row(s) added" in second.batch_note
    assert batch.dtypes.to_dict() == like.dtypes.to_dict()  # served-at times naive UTC, like the batches'
    assert not (tmp_path / "labels" / labelqueue.HELD_FOR_TRAINING).exists()
    assert (
        labelqueue.min_batch_rows(
            {"expectations": [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 200}}]}
        )
        == 200
    )
    assert labelqueue.min_batch_rows({"expectations": []}) == 1
