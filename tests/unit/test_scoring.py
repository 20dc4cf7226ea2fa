import numpy as np
import pandas as pd
import pytest

from components.core.config import ModelConfig
from components.inference.scoring import InputError, ModelSchema, coerce_rows, predict_frame, predict_records
from components.modeling.prepare import infer_feature_spec, split_data
from components.modeling.train import train_model


@pytest.fixture(scope="module")
def fitted(loans: pd.DataFrame):
    spec = infer_feature_spec(loans, "default", "loan_id", "application_time")
    split = split_data(loans, spec, 0.2, seed=1)
    return train_model(split.X_train, split.y_train, spec, ModelConfig(), seed=1)


def test_schema_is_read_from_the_pipeline(fitted) -> None:
    schema = ModelSchema.of(fitted)
    assert "credit_score" in schema.numeric and "region" in schema.categorical
    assert "loan_id" not in schema.columns


def test_records_and_frames_give_the_same_answer(fitted, loans: pd.DataFrame) -> None:
    rows = loans.head(20)
    records = rows.drop(columns=["application_time"]).to_dict("records")
    a = predict_frame(fitted, rows)
    b = predict_records(fitted, records)
    assert a.labels == b.labels
    np.testing.assert_allclose(a.probabilities, b.probabilities)
    assert all(0 <= p <= 1 for p in a.probabilities)


def test_missing_column_and_text_in_a_number_are_named(fitted, loans: pd.DataFrame) -> None:
    rows = loans.head(2).drop(columns=["region", "age"])
    with pytest.raises(InputError, match="region") as excinfo:
        predict_frame(fitted, rows)
    assert "age" in str(excinfo.value)
    bad = loans.head(2).astype({"credit_score": object})
    bad.loc[bad.index[0], "credit_score"] = "high"
    with pytest.raises(InputError, match="credit_score must be a number, got 'high'"):
        predict_frame(fitted, bad)


def test_numbers_as_strings_and_nulls_are_accepted(fitted, loans: pd.DataFrame) -> None:
    schema = ModelSchema.of(fitted)
    rows = loans.head(2).astype({"age": str})
    rows.loc[rows.index[0], "annual_income"] = None
    out = coerce_rows(rows, schema)
    assert out["age"].dtype == "float64" and np.isnan(out["annual_income"].iloc[0])


def test_nested_values_are_refused(fitted, loans: pd.DataFrame) -> None:
    record = loans.head(1).drop(columns=["application_time"]).to_dict("records")[0]
    record["region"] = {"nested": 1}
    with pytest.raises(InputError, match="single value"):
        predict_records(fitted, [record])
    with pytest.raises(InputError, match="no rows"):
        predict_records(fitted, [])


def test_signature_sample_keeps_missing_values_visible() -> None:
    from components.tracking.registry import signature_sample

    frame = pd.DataFrame({"a": np.arange(10_000), "b": ["x"] * 10_000, "c": np.ones(10_000)})
    frame.loc[9_000, "c"] = np.nan
    sample = signature_sample(frame, rows=100)
    assert len(sample) == 101
    assert sample["c"].isna().sum() == 1
    assert sample["a"].dtype == "float64"  # ints are declared as doubles
