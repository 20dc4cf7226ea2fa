"""Seeded generators of two data streams, the project's example data and its test beds:

- loan applications with a `default` label (binary classification): the label follows a known
  logistic mechanism;
- taxi trips with their `duration_min` (regression): the duration follows a known pace per km.

Scenarios change the inputs (covariate drift), the mechanism (concept drift), the schema, one
feature's unit, the labels (noise) or the rows (duplicates) in controlled, reproducible ways.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.files import staged

TARGET = "default"
ID_COLUMN = "loan_id"
TIME_COLUMN = "application_time"
HOME_OWNERSHIP = ("RENT", "MORTGAGE", "OWN", "OTHER")
PURPOSES = ("debt_consolidation", "credit_card", "home_improvement", "car", "medical", "small_business", "other")
EMPLOYMENT_TYPES = ("salaried", "self_employed", "retired", "unemployed")
REGIONS = ("north", "south", "east", "west")
START_TIME = pd.Timestamp("2026-01-05")


FLIPPED_LABELS_FILE = "_flipped_labels.csv"


@dataclass(frozen=True)
class Scenario:
    """What to change in a batch; all strengths are 0 for the stable stream."""

    covariate_drift: float = 0.0
    concept_drift: float = 0.0
    schema_change: bool = False
    unit_change: bool = False
    label_noise: float = 0.0
    duplicate_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("covariate_drift", "concept_drift", "label_noise", "duplicate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")


STABLE = Scenario()


@dataclass(frozen=True)
class SimulatedBatch:
    """One generated batch and the ids whose labels were flipped on purpose."""

    frame: pd.DataFrame
    flipped_ids: tuple[int, ...] = field(default=())


def _features(rng: np.random.Generator, n: int, drift: float) -> pd.DataFrame:
    age = rng.normal(41 - 6 * drift, 11, n).clip(21, 80).round().astype("int64")
    income = rng.lognormal(np.log(58_000 * (1 - 0.35 * drift)), 0.55, n).round(-2)
    employment_years = rng.gamma(2.0, 3.5 * (1 - 0.4 * drift), n).clip(0, 45).round(1)
    credit_score = rng.normal(690 - 55 * drift, 65, n).clip(300, 850).round().astype("int64")
    loan_amount = (rng.lognormal(np.log(14_000 * (1 + 0.5 * drift)), 0.6, n)).clip(1_000, 100_000).round(-2)
    term_months = rng.choice([36, 60], n, p=[0.7 - 0.3 * drift, 0.3 + 0.3 * drift]).astype("int64")
    interest_rate = (
        (5.5 + (850 - credit_score) / 550 * 14 + rng.normal(0, 1.2, n) + 1.5 * drift).clip(3.0, 30.0).round(2)
    )
    debt_to_income = rng.beta(2.2, 6 - 2 * drift, n).round(4) * 60
    num_open_accounts = rng.poisson(8 + 2 * drift, n).astype("int64")
    delinquencies = rng.poisson(0.25 + 0.5 * drift, n).astype("int64")
    home_p = np.array([0.40 + 0.15 * drift, 0.38 - 0.1 * drift, 0.19 - 0.05 * drift, 0.03])
    employment_p = np.array([0.72 - 0.2 * drift, 0.14 + 0.12 * drift, 0.08, 0.06 + 0.08 * drift])
    frame = pd.DataFrame(
        {
            "age": age,
            "annual_income": income,
            "employment_years": employment_years,
            "credit_score": credit_score,
            "loan_amount": loan_amount,
            "term_months": term_months,
            "interest_rate": interest_rate,
            "debt_to_income": debt_to_income.round(2),
            "num_open_accounts": num_open_accounts,
            "delinquencies_2y": delinquencies,
            "home_ownership": rng.choice(HOME_OWNERSHIP, n, p=home_p / home_p.sum()),
            "purpose": rng.choice(PURPOSES, n, p=[0.42, 0.2, 0.1, 0.09, 0.06, 0.05, 0.08]),
            "employment_type": rng.choice(EMPLOYMENT_TYPES, n, p=employment_p / employment_p.sum()),
            "region": rng.choice(REGIONS, n, p=[0.3, 0.25, 0.25, 0.2]),
        }
    )
    return frame


def default_probability(features: pd.DataFrame, concept_drift: float = 0.0) -> np.ndarray:
    """The true P(default | x); concept drift rewrites the mechanism, not the inputs."""
    income = features["annual_income"].fillna(58_000).to_numpy()
    credit = features["credit_score"].fillna(690).to_numpy()
    employment = features["employment_years"].fillna(5).to_numpy()
    payment_burden = features["loan_amount"].to_numpy() / np.maximum(income, 5_000)
    self_employed = (features["employment_type"] == "self_employed").to_numpy()
    unemployed = (features["employment_type"] == "unemployed").to_numpy()
    small_business = (features["purpose"] == "small_business").to_numpy()
    renter = (features["home_ownership"] == "RENT").to_numpy()
    south = (features["region"] == "south").to_numpy()
    c = concept_drift
    logit = (
        -3.1
        - (1 - 0.8 * c) * (credit - 690) / 55
        + (1 + 1.5 * c) * (features["debt_to_income"].to_numpy() - 15) / 9
        + 0.09 * (features["interest_rate"].to_numpy() - 12)
        + 0.55 * features["delinquencies_2y"].to_numpy()
        + 1.4 * (payment_burden - 0.25)
        - 0.04 * (employment - 5)
        + 0.35 * (features["term_months"].to_numpy() == 60)
        + 0.45 * self_employed
        + 1.1 * unemployed
        + 0.5 * small_business
        + 0.15 * renter
        + 1.6 * c * south
        - 0.8 * c * (features["age"].to_numpy() < 30)
    )
    return 1.0 / (1.0 + np.exp(-logit))


def _punch_missing(rng: np.random.Generator, frame: pd.DataFrame) -> pd.DataFrame:
    rates = {"annual_income": 0.03, "employment_years": 0.06, "credit_score": 0.01, "home_ownership": 0.01}
    out = frame.copy()
    for column, rate in rates.items():
        mask = rng.random(len(out)) < rate
        if column == "credit_score":
            out[column] = out[column].astype("float64")
        out.loc[mask, column] = np.nan if out[column].dtype.kind == "f" else None
    return out


def generate_loans(
    n_rows: int,
    seed: int,
    scenario: Scenario = STABLE,
    *,
    batch_index: int = 0,
) -> SimulatedBatch:
    """One batch of loan applications with a `default` label; ids are unique across batch indexes."""
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    rng = np.random.default_rng([seed, batch_index])
    features = _features(rng, n_rows, scenario.covariate_drift)
    labels = (rng.random(n_rows) < default_probability(features, scenario.concept_drift)).astype("int64")
    features = _punch_missing(rng, features)
    ids = np.arange(n_rows, dtype="int64") + batch_index * 10_000_000 + 1
    start = START_TIME + pd.Timedelta(days=7 * batch_index)
    offsets = np.sort(rng.integers(0, 7 * 24 * 3600, n_rows))
    frame = pd.concat(
        [
            pd.DataFrame({ID_COLUMN: ids, TIME_COLUMN: start + pd.to_timedelta(offsets, unit="s")}),
            features,
            pd.DataFrame({TARGET: labels}),
        ],
        axis=1,
    )

    flipped: tuple[int, ...] = ()
    if scenario.label_noise > 0:
        flip = rng.random(n_rows) < scenario.label_noise
        frame.loc[flip, TARGET] = 1 - frame.loc[flip, TARGET]
        flipped = tuple(int(i) for i in frame.loc[flip, ID_COLUMN])
    if scenario.unit_change:
        # Income reported in thousands instead of units: the classic silent unit bug.
        frame["annual_income"] = (frame["annual_income"] / 1000).round(1)
    if scenario.schema_change:
        frame = frame.rename(columns={"employment_years": "employment_length_months"})
        frame["employment_length_months"] = (frame["employment_length_months"] * 12).round()
        frame["channel"] = rng.choice(["web", "branch", "broker"], n_rows)
    if scenario.duplicate_rate > 0:
        n_duplicates = round(n_rows * scenario.duplicate_rate)
        repeats = frame.iloc[rng.choice(n_rows, n_duplicates, replace=True)]
        frame = pd.concat([frame, repeats], ignore_index=True).sort_values(TIME_COLUMN, kind="stable")
        frame = frame.reset_index(drop=True)
    return SimulatedBatch(frame=frame, flipped_ids=flipped)


def generate_batches(
    n_batches: int,
    n_rows: int,
    seed: int,
    scenario: Scenario = STABLE,
    *,
    scenario_from: int = 0,
    generator: Callable[..., SimulatedBatch] | None = None,
) -> Iterator[SimulatedBatch]:
    """Consecutive weekly batches (loans by default); `scenario` applies from batch index `scenario_from` on."""
    generate = generator or generate_loans
    for index in range(n_batches):
        yield generate(n_rows, seed, scenario if index >= scenario_from else STABLE, batch_index=index)


def write_batches(
    out_dir: Path,
    n_batches: int,
    n_rows: int,
    seed: int,
    scenario: Scenario = STABLE,
    *,
    scenario_from: int = 0,
    stream: str = "loans",
) -> list[Path]:
    """Write batches of a stream (`loans` or `trips`) as `batch_0000.parquet`, ...; flipped label ids
    go to `_flipped_labels.csv`.

    The leading underscore keeps the answer key out of the data: folder sources skip such files.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; choose one of {sorted(STREAMS)}")
    generator, id_column = STREAMS[stream]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    flipped: list[int] = []
    batches = generate_batches(n_batches, n_rows, seed, scenario, scenario_from=scenario_from, generator=generator)
    for index, batch in enumerate(batches):
        path = out_dir / f"batch_{index:04d}.parquet"
        with staged(path, durable=False) as staging:
            batch.frame.to_parquet(staging, index=False)
        paths.append(path)
        flipped.extend(batch.flipped_ids)
    if flipped:
        pd.DataFrame({id_column: flipped}).to_csv(out_dir / FLIPPED_LABELS_FILE, index=False)
    return paths


# ----------------------------------------------------------------------------- taxi trips (regression)

TRIP_TARGET = "duration_min"
TRIP_ID = "trip_id"
TRIP_TIME = "pickup_time"
VEHICLES = ("standard", "xl", "green")
WEATHER = ("clear", "rain", "snow")
ZONES = ("center", "north", "south", "east", "west")


def _trip_features(rng: np.random.Generator, n: int, drift: float) -> pd.DataFrame:
    hour = rng.choice(24, n, p=_hour_weights(drift)).astype("int64")
    rush = np.isin(hour, (7, 8, 9, 16, 17, 18))
    traffic = np.clip(rng.beta(2 + 3 * rush, 5 - 2 * rush, n) + 0.15 * drift, 0, 1).round(3)
    weather_p = np.array([0.75 - 0.35 * drift, 0.2 + 0.3 * drift, 0.05 + 0.05 * drift])
    zone_p = np.array([0.35 - 0.15 * drift, 0.2, 0.15, 0.15 + 0.1 * drift, 0.15 + 0.05 * drift])
    return pd.DataFrame(
        {
            "distance_km": rng.lognormal(np.log(4.5 * (1 + 0.6 * drift)), 0.65, n).clip(0.3, 90).round(2),
            "hour": hour,
            "weekend": rng.random(n) < 0.28,
            "passengers": (1 + rng.poisson(0.5 + 0.4 * drift, n)).clip(1, 6).astype("int64"),
            "traffic_index": traffic,
            "vehicle": rng.choice(VEHICLES, n, p=[0.7, 0.2, 0.1]),
            "weather": rng.choice(WEATHER, n, p=weather_p / weather_p.sum()),
            "pickup_zone": rng.choice(ZONES, n, p=zone_p / zone_p.sum()),
        }
    )


def _hour_weights(drift: float) -> np.ndarray:
    hours = np.arange(24)
    day = np.exp(-0.5 * ((hours - 13) / 5.0) ** 2) + 0.6 * np.exp(-0.5 * ((hours - 8) / 1.5) ** 2)
    night = np.exp(-0.5 * ((hours - 23) / 2.5) ** 2) + np.exp(-0.5 * ((hours + 1) / 2.5) ** 2)
    weights = day + (0.3 + 1.2 * drift) * night + 0.02
    return weights / weights.sum()


def expected_duration(features: pd.DataFrame, concept_drift: float = 0.0) -> np.ndarray:
    """The true mean trip duration in minutes; concept drift (road works downtown, slower traffic)
    rewrites the pace, not the inputs."""
    c = concept_drift
    traffic = features["traffic_index"].fillna(0.35).to_numpy()
    center = (features["pickup_zone"] == "center").to_numpy()
    rain = (features["weather"] == "rain").to_numpy()
    snow = (features["weather"] == "snow").to_numpy()
    night = np.isin(features["hour"].to_numpy(), (22, 23, 0, 1, 2, 3, 4, 5))
    green = (features["vehicle"] == "green").to_numpy()
    pace = (
        1.6
        + (1.8 + 1.8 * c) * traffic
        + 0.5 * rain
        + 1.3 * snow
        + (0.6 + 2.2 * c) * center
        - 0.45 * night
        + 0.15 * green
        + 0.4 * c
    )
    distance = features["distance_km"].to_numpy()
    return 2.5 + 0.9 * features["passengers"].to_numpy() ** 0.5 + distance * pace


def generate_trips(
    n_rows: int,
    seed: int,
    scenario: Scenario = STABLE,
    *,
    batch_index: int = 0,
) -> SimulatedBatch:
    """One batch of taxi trips with their `duration_min`; ids are unique across batch indexes.

    The unit change reports distances in metres instead of kilometres; label noise replaces a
    duration with a wrong one (a meter left running, or stopped early)."""
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    rng = np.random.default_rng([seed, batch_index, 2])
    features = _trip_features(rng, n_rows, scenario.covariate_drift)
    mean = expected_duration(features, scenario.concept_drift)
    duration = np.maximum(1.0, mean + rng.normal(0, 1.5 + 0.1 * mean)).round(2)
    for column, rate in (("traffic_index", 0.03), ("weather", 0.01)):
        mask = rng.random(n_rows) < rate
        features[column] = features[column].where(~mask, None if column == "weather" else np.nan)
    ids = np.arange(n_rows, dtype="int64") + batch_index * 10_000_000 + 1
    start = START_TIME + pd.Timedelta(days=7 * batch_index)
    offsets = np.sort(rng.integers(0, 7 * 24 * 3600, n_rows))
    frame = pd.concat(
        [
            pd.DataFrame({TRIP_ID: ids, TRIP_TIME: start + pd.to_timedelta(offsets, unit="s")}),
            features,
            pd.DataFrame({TRIP_TARGET: duration}),
        ],
        axis=1,
    )
    flipped: tuple[int, ...] = ()
    if scenario.label_noise > 0:
        wrong = rng.random(n_rows) < scenario.label_noise
        factor = np.where(rng.random(int(wrong.sum())) < 0.5, 3.0, 0.3)
        frame.loc[wrong, TRIP_TARGET] = (frame.loc[wrong, TRIP_TARGET] * factor).round(2)
        flipped = tuple(int(i) for i in frame.loc[wrong, TRIP_ID])
    if scenario.unit_change:
        frame["distance_km"] = (frame["distance_km"] * 1000).round()  # metres in a kilometre column
    if scenario.schema_change:
        frame = frame.rename(columns={"traffic_index": "congestion"})
        frame["payment"] = rng.choice(["card", "cash"], n_rows)
    if scenario.duplicate_rate > 0:
        repeats = frame.iloc[rng.choice(n_rows, round(n_rows * scenario.duplicate_rate), replace=True)]
        frame = pd.concat([frame, repeats], ignore_index=True).sort_values(TRIP_TIME, kind="stable")
        frame = frame.reset_index(drop=True)
    return SimulatedBatch(frame=frame, flipped_ids=flipped)


# The streams `write_batches` writes: their generator and id column.
STREAMS: dict[str, tuple[Callable[..., SimulatedBatch], str]] = {
    "loans": (generate_loans, ID_COLUMN),
    "trips": (generate_trips, TRIP_ID),
}
