"""Batch scoring without Prefect: streaming, the contract per row, rejects, file-level refusals, atomic output."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.core.config import ModelConfig
from components.data import contract, rows
from components.inference import batch
from components.inference.batch import InvalidInput, InvalidRows
from components.inference.scoring import predict_frame
from components.modeling.prepare import infer_feature_spec, split_data
from components.modeling.train import train_model

SCORE_COLUMNS = {"prediction", "probability", "model_version", "scored_at"}


@pytest.fixture(scope="module")
def fitted(loans: pd.DataFrame):
    spec = infer_feature_spec(loans, "default", "loan_id", "application_time")
    split = split_data(loans, spec, 0.2, seed=1)
    return train_model(split.X_train, split.y_train, spec, ModelConfig(), seed=1, threshold=0.35)


@pytest.fixture(scope="module")
def suite(loans: pd.DataFrame) -> dict:
    return contract.profile_suite(loans, "loans", target="default", id_column="loan_id")


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False, row_group_size=100)
    return path


def _score(fitted, source: Path, out: Path, **kwargs) -> batch.ScoreSummary:
    kwargs.setdefault("model_version", "3")
    kwargs.setdefault("id_column", "loan_id")
    kwargs.setdefault("target", "default")
    kwargs.setdefault("chunk_rows", 250)
    return batch.score_file(fitted, source, out, **kwargs)


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_chunked_scoring_equals_whole_frame_predict(
    fitted, suite, loans: pd.DataFrame, tmp_path: Path, suffix: str, partitions: int
) -> None:
    source = _write(loans, tmp_path / f"in{suffix}")
    out = tmp_path / "out" / "scores.parquet"
    summary = _score(fitted, source, out, suite=suite, partitions=partitions)
    scored = pd.read_parquet(out)
    assert summary.rows == summary.scored == len(loans) == len(scored) and summary.rejected == 0
    assert summary.rejects is None
    assert scored["loan_id"].tolist() == loans["loan_id"].tolist()  # input order
    assert set(scored.columns) == {"loan_id", *SCORE_COLUMNS}
    assert (scored["model_version"] == "3").all() and scored["scored_at"].nunique() == 1
    assert str(scored["scored_at"].dt.tz) == "UTC"
    expected = predict_frame(fitted, loans)
    assert scored["prediction"].tolist() == expected.labels
    np.testing.assert_allclose(scored["probability"], expected.probabilities)
    groups = pq.ParquetFile(out).metadata
    sizes = [groups.row_group(i).num_rows for i in range(groups.num_row_groups)]
    assert len(sizes) > 1 and (suffix == ".csv" or max(sizes) <= 250)  # streamed in chunks (a CSV's are >= 64 KiB)
    assert [p.name for p in out.parent.iterdir()] == ["scores.parquet"]  # no temporary files left


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_reject_mode_sets_bad_rows_aside_with_reasons_and_scores_the_rest(
    fitted, suite, loans: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    bad = loans.astype({"age": str})  # numbers as text are read per row; Parquet keeps them as strings
    bad.loc[5, "age"] = "old"  # text in a numeric column
    bad.loc[700, "region"] = "moon"  # not in the contract's set
    bad.loc[900, "loan_amount"] = -5.0  # outside the hard bounds
    bad.loc[901, "purpose"] = None  # null where the contract allows none
    bad.loc[1100, ["region", "loan_amount"]] = ["mars", 1e12]  # two problems, one row
    source = _write(bad, tmp_path / f"in{suffix}")
    out = tmp_path / "scores.parquet"
    summary = _score(fitted, source, out, suite=suite, on_invalid="reject", partitions=2)
    assert summary.rejects == tmp_path / "scores.rejects.parquet"
    rejects = pd.read_parquet(summary.rejects)
    assert (summary.rows, summary.scored, summary.rejected) == (1200, 1195, 5)
    assert rejects["input_row"].tolist() == [5, 700, 900, 901, 1100]
    assert list(rejects.columns) == [*loans.columns, "input_row", "reject_reason"]  # the original columns
    reasons = dict(zip(rejects["input_row"], rejects["reject_reason"], strict=True))
    assert reasons[5] == "age: not a number, got 'old'"
    assert reasons[700].startswith("region: expect_column_values_to_be_in_set, got 'moon'")
    assert reasons[900].startswith("loan_amount: expect_column_values_to_be_between[0")
    assert reasons[901] == "purpose: expect_column_values_to_not_be_null"
    assert "region:" in reasons[1100] and "loan_amount:" in reasons[1100]
    assert str(rejects.loc[0, "age"]) == "old"
    scored = pd.read_parquet(out)
    kept = loans.drop(index=[5, 700, 900, 901, 1100])
    assert scored["loan_id"].tolist() == kept["loan_id"].tolist()
    np.testing.assert_allclose(scored["probability"], predict_frame(fitted, kept).probabilities)


def test_fail_mode_fails_on_a_bad_row_and_leaves_no_output(fitted, suite, loans: pd.DataFrame, tmp_path: Path) -> None:
    bad = loans.astype({"age": object})
    bad.loc[bad.index[-1], "age"] = "old"  # in the last chunk: earlier chunks were already scored
    source = _write(bad, tmp_path / "in.csv")
    with pytest.raises(InvalidRows, match=r"row 1199: age: not a number, got 'old'.*--on-invalid reject"):
        _score(fitted, source, tmp_path / "scores.parquet", suite=suite, chunk_rows=100, partitions=3)
    assert list(tmp_path.iterdir()) == [source]


def test_a_clean_run_in_reject_mode_writes_an_empty_rejects_file(
    fitted, suite, loans: pd.DataFrame, tmp_path: Path
) -> None:
    source = _write(loans, tmp_path / "in.parquet")
    rejects = tmp_path / "elsewhere" / "bad_rows.parquet"
    summary = _score(fitted, source, tmp_path / "s.parquet", suite=suite, on_invalid="reject", rejects_path=rejects)
    assert summary.rejected == 0 and summary.rejects == rejects
    assert pq.read_table(rejects).num_rows == 0  # a stale rejects file never survives a clean run


def _garbage(path: Path) -> Path:
    path.write_bytes(b"PAR1 not really parquet")
    return path


def _empty(path: Path) -> Path:
    path.write_text("")
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing model column", "lacks column\\(s\\) the model needs: region"),
        ("text column as numbers", "'region' is int64, which cannot hold the contract's text values"),
        ("numbers as booleans", "'age' is bool"),
        ("unreadable parquet", "cannot read .* as Parquet"),
        ("header-only csv", "has no rows to score"),
        ("empty csv", "cannot read .* as CSV"),
        ("missing id column", "id column 'loan_id' is not in"),
    ],
)
def test_file_level_problems_fail_before_anything_is_written(
    fitted, suite, loans: pd.DataFrame, tmp_path: Path, case: str, message: str
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    sources = {
        "missing model column": lambda: _write(loans.drop(columns=["region"]), inputs / "a.parquet"),
        "text column as numbers": lambda: _write(loans.assign(region=1), inputs / "a.parquet"),
        "numbers as booleans": lambda: _write(loans.assign(age=True), inputs / "a.parquet"),
        "unreadable parquet": lambda: _garbage(inputs / "a.parquet"),
        "header-only csv": lambda: _write(loans.head(0), inputs / "a.csv"),
        "empty csv": lambda: _empty(inputs / "a.csv"),
        "missing id column": lambda: _write(loans.drop(columns=["loan_id"]), inputs / "a.parquet"),
    }
    source = sources[case]()
    out = tmp_path / "out" / "scores.parquet"
    with pytest.raises(InvalidInput, match=message):
        _score(fitted, source, out, suite=suite, on_invalid="reject")
    assert not out.parent.exists()


def test_csv_types_cannot_drift_between_chunks(fitted, loans: pd.DataFrame, tmp_path: Path) -> None:
    """Each chunk of a CSV would infer its own types; the model's and the contract's types are imposed."""
    frame = loans.astype({"age": "float64", "region": object, "employment_years": "float64"})
    frame.loc[600:, "age"] += 0.5  # integers in the first chunks, decimals later
    frame.loc[:599, "employment_years"] = np.nan  # empty at first, numbers later
    frame.loc[:599, "region"] = np.where(np.arange(600) % 2, "1", "2")  # looks numeric at first, text later
    source = tmp_path / "drift.csv"
    frame.to_csv(source, index=False, float_format="%g")
    out = tmp_path / "scores.parquet"
    summary = _score(fitted, source, out, chunk_rows=100, partitions=2)
    assert summary.scored == len(frame)
    scored = pd.read_parquet(out)
    assert scored["loan_id"].dtype == "int64"
    expected = predict_frame(fitted, frame)
    assert scored["prediction"].tolist() == expected.labels
    np.testing.assert_allclose(scored["probability"], expected.probabilities)


def test_without_an_id_column_rows_are_numbered_across_partitions(
    fitted, suite, loans: pd.DataFrame, tmp_path: Path
) -> None:
    bad = loans.copy()
    bad.loc[[10, 1000], "region"] = "moon"
    source = _write(bad, tmp_path / "in.csv")
    summary = _score(
        fitted, source, tmp_path / "s.parquet", suite=suite, id_column=None, on_invalid="reject", partitions=4
    )
    scored = pd.read_parquet(summary.output)
    assert set(scored.columns) == {"input_row", *SCORE_COLUMNS}
    assert scored["input_row"].tolist() == [i for i in range(len(loans)) if i not in (10, 1000)]
    assert pd.read_parquet(summary.rejects)["input_row"].tolist() == [10, 1000]


def test_csv_partitions_start_at_line_starts(fitted, loans: pd.DataFrame, tmp_path: Path) -> None:
    source = _write(pd.concat([loans] * 4), tmp_path / "in.csv")  # ~500 KiB: five partitions of one chunk or more
    plan = batch.plan_scoring(source, fitted, model_version="1", id_column="loan_id", chunk_rows=50)
    parts = batch.split_partitions(plan, 5)
    data = source.read_bytes()
    assert len(parts) == 5 and parts[0].start == data.index(b"\n") + 1 and parts[-1].stop == len(data)
    assert all(data[p.start - 1 : p.start] == b"\n" for p in parts)
    assert all(a.stop == b.start for a, b in itertools.pairwise(parts))


def test_row_rules_come_from_the_suite_and_batch_statistics_are_left_out(fitted, tmp_path: Path) -> None:
    suite = {
        "name": "toy",
        "meta": {"target": "y"},
        "expectations": [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "x", "min_value": 0, "strict_min": True},
            },
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "max_value": 9, "mostly": 0.99}},
            {"type": "expect_column_median_to_be_between", "kwargs": {"column": "x", "min_value": 1, "max_value": 2}},
            {"type": "expect_column_values_to_not_be_in_set", "kwargs": {"column": "c", "value_set": ["bad"]}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "when"}},
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "y", "value_set": [0, 1]}},
            {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 10}},
        ],
    }
    rules = rows.compile_contract(suite, ["x", "c"], target="y")
    assert [(r.column, r.check) for r in rules.rules] == [("x", "between"), ("c", "not_in_set")]
    assert rules.rules[0].describe() == "expect_column_values_to_be_between(0, inf]"
    skipped = "\n".join(rules.skipped)
    for why in ("'mostly'", "median", "target", "row_count", "not in the file"):
        assert why in skipped


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_regression_scores_carry_the_prediction_and_its_interval(tmp_path: Path, suffix: str) -> None:
    from components.modeling.tasks import TASKS
    from components.simulation.simulate import TRIP_ID, TRIP_TARGET, generate_trips

    trips = generate_trips(800, seed=1).frame
    task = TASKS["regression"]
    spec = infer_feature_spec(trips, TRIP_TARGET, TRIP_ID, "pickup_time")
    split = split_data(trips, spec, 0.2, seed=1, task=task)
    model = train_model(split.X_train, split.y_train, spec, ModelConfig(estimator="linear"), 1, task=task)
    suite = contract.profile_suite(trips, "trips", target=TRIP_TARGET, id_column=TRIP_ID, task="regression")
    source = _write(trips.drop(columns=[TRIP_TARGET]), tmp_path / f"in{suffix}")
    out = tmp_path / "scores.parquet"
    batch.score_file(
        model,
        source,
        out,
        model_version="2",
        suite=suite,
        id_column=TRIP_ID,
        target=TRIP_TARGET,
        half_width=4.0,
        chunk_rows=300,
        partitions=2,
    )
    scored = pd.read_parquet(out)
    assert list(scored.columns) == [TRIP_ID, "prediction", "lower", "upper", "model_version", "scored_at"]
    expected = predict_frame(model, trips, half_width=4.0)
    np.testing.assert_allclose(scored["prediction"], expected.labels)
    np.testing.assert_allclose(scored["upper"] - scored["lower"], 8.0)
    assert scored[TRIP_ID].tolist() == trips[TRIP_ID].tolist()


def test_multiclass_scores_carry_every_class_probability(tmp_path: Path) -> None:
    from components.modeling.tasks import TASKS

    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    frame["kind"] = np.select([frame["a"] > 0.5, frame["b"] > 0], ["high", "mid"], "low")
    task = TASKS["multiclass"]
    spec = infer_feature_spec(frame, "kind")
    model = train_model(frame[["a", "b"]], frame["kind"], spec, ModelConfig(estimator="linear"), 0, task=task)
    out = tmp_path / "scores.parquet"
    batch.score_file(model, _write(frame.drop(columns="kind"), tmp_path / "in.parquet"), out, model_version="1")
    scored = pd.read_parquet(out)
    columns = ["probability_high", "probability_low", "probability_mid"]
    assert list(scored.columns) == ["input_row", "prediction", "probability", *columns, "model_version", "scored_at"]
    np.testing.assert_allclose(scored[columns].sum(axis=1), 1.0)
    np.testing.assert_allclose(scored["probability"], scored[columns].max(axis=1))
    assert (scored[columns].idxmax(axis=1).str.removeprefix("probability_") == scored["prediction"]).all()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_text_columns_matched_once_per_distinct_value_answer_as_the_pipeline(
    fitted, loans: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    from components.inference.inputs import inputs_from_frame, text_codes
    from components.inference.scoring import ModelSchema

    frame = loans.copy()
    text = ModelSchema.of(fitted).categorical[0]
    frame[text] = frame[text].astype(object)
    frame.loc[frame.index[::7], text] = None  # missing
    frame.loc[frame.index[3::11], text] = "never seen in training"  # unseen
    source = _write(frame, tmp_path / f"in{suffix}")
    out = tmp_path / "scores.parquet"
    _score(fitted, source, out)
    expected = predict_frame(fitted, frame)
    scored = pd.read_parquet(out)
    assert scored["prediction"].tolist() == expected.labels
    np.testing.assert_allclose(scored["probability"], expected.probabilities, rtol=0, atol=1e-9)
    import pyarrow as pa

    codes, values = text_codes(pa.array(["b", None, "a", "b"]))
    assert codes.tolist() == [0, -1, 1, 0] and values.tolist() == ["b", "a"]
    inputs = inputs_from_frame(pd.DataFrame(index=range(4)), (), ("t",), {"t": (codes, values)})
    assert inputs.rows == 4 and inputs.categorical[0].tolist() == ["b", None, "a", "b"]
