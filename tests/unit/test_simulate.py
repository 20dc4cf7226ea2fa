import numpy as np
import pandas as pd
import pytest

from components.simulation.simulate import ID_COLUMN, TARGET, TIME_COLUMN, Scenario, generate_loans, write_batches


def test_same_seed_same_data() -> None:
    a = generate_loans(500, seed=3).frame
    b = generate_loans(500, seed=3).frame
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate_loans(500, seed=4).frame)


def test_realistic_shape() -> None:
    frame = generate_loans(5000, seed=1).frame
    assert frame[ID_COLUMN].is_unique
    assert pd.api.types.is_datetime64_any_dtype(frame[TIME_COLUMN])
    assert 0.05 < frame[TARGET].mean() < 0.25  # credit-like imbalance
    assert frame["annual_income"].isna().mean() > 0  # some values missing
    assert frame.shape[1] == 17


def test_ids_are_unique_across_batches() -> None:
    a = generate_loans(100, seed=1, batch_index=0).frame
    b = generate_loans(100, seed=1, batch_index=1).frame
    assert set(a[ID_COLUMN]).isdisjoint(b[ID_COLUMN])
    assert b[TIME_COLUMN].min() > a[TIME_COLUMN].max()


def test_covariate_drift_shifts_inputs() -> None:
    stable = generate_loans(4000, seed=1).frame
    drifted = generate_loans(4000, seed=1, scenario=Scenario(covariate_drift=1.0)).frame
    assert drifted["credit_score"].mean() < stable["credit_score"].mean() - 30


def test_concept_drift_keeps_inputs_changes_labels() -> None:
    stable = generate_loans(4000, seed=1).frame
    drifted = generate_loans(4000, seed=1, scenario=Scenario(concept_drift=1.0)).frame
    pd.testing.assert_series_equal(stable["credit_score"], drifted["credit_score"])
    assert (stable[TARGET] != drifted[TARGET]).mean() > 0.02


def test_label_noise_reports_flipped_ids() -> None:
    clean = generate_loans(2000, seed=1).frame
    batch = generate_loans(2000, seed=1, scenario=Scenario(label_noise=0.05))
    changed = clean.loc[clean[TARGET] != batch.frame[TARGET], ID_COLUMN]
    assert set(changed) == set(batch.flipped_ids)
    assert 50 < len(batch.flipped_ids) < 150


def test_schema_unit_and_duplicates() -> None:
    frame = generate_loans(1000, seed=1, scenario=Scenario(schema_change=True)).frame
    assert "employment_years" not in frame and {"employment_length_months", "channel"} <= set(frame)
    clean = generate_loans(1000, seed=1).frame
    units = generate_loans(1000, seed=1, scenario=Scenario(unit_change=True)).frame
    ratio = clean["annual_income"].median() / units["annual_income"].median()
    assert 900 < ratio < 1100
    dup = generate_loans(1000, seed=1, scenario=Scenario(duplicate_rate=0.1)).frame
    assert len(dup) == 1100 and dup.duplicated().sum() == 100


def test_scenario_strength_is_checked() -> None:
    with pytest.raises(ValueError, match="covariate_drift"):
        Scenario(covariate_drift=2.0)


def test_write_batches(tmp_path) -> None:
    paths = write_batches(tmp_path, 3, 50, seed=2, scenario=Scenario(label_noise=0.2), scenario_from=2)
    assert [p.name for p in paths] == ["batch_0000.parquet", "batch_0001.parquet", "batch_0002.parquet"]
    flipped = pd.read_csv(tmp_path / "_flipped_labels.csv")[ID_COLUMN]
    assert (flipped > 20_000_000).all()  # only the last batch had noise
    assert not list(tmp_path.glob("*.tmp"))
    assert np.isfinite(pd.read_parquet(paths[0])["loan_amount"]).all()


def test_the_trip_stream_shifts_as_its_scenarios_say() -> None:
    from components.simulation.simulate import TRIP_ID, TRIP_TARGET, expected_duration, generate_trips

    stable = generate_trips(4000, seed=1).frame
    assert stable[TRIP_ID].is_unique and (stable[TRIP_TARGET] >= 1).all()
    assert stable["traffic_index"].isna().mean() > 0 and stable["weather"].isna().mean() > 0
    drifted = generate_trips(4000, seed=1, scenario=Scenario(covariate_drift=1.0)).frame
    assert drifted["distance_km"].median() > 1.3 * stable["distance_km"].median()
    concept = generate_trips(4000, seed=1, scenario=Scenario(concept_drift=1.0)).frame
    pd.testing.assert_frame_equal(concept.drop(columns=TRIP_TARGET), stable.drop(columns=TRIP_TARGET))
    assert (expected_duration(stable, 1.0) > expected_duration(stable, 0.0)).mean() > 0.99
    metres = generate_trips(100, seed=1, scenario=Scenario(unit_change=True)).frame
    assert metres["distance_km"].median() > 500
    assert generate_trips(50, seed=1, batch_index=3).frame[TRIP_ID].min() > 30_000_000
