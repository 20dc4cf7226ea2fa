"""The expectations a profile derives per column kind: types, nulls, numeric bounds and medians, value sets.

Each builder returns GX's JSON structure for one or a few expectations, marked `inferred` in its meta
with the evidence behind it; `profiling` decides which of them a column gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from components.modeling.prepare import reads_as_numbers

MIN_DISTINCT_FOR_MEDIAN = 10
UNIT_IQRS = 1.0  # a batch median beyond the quartiles +- this many IQRs is a unit change, not drift
MAX_DRIFT_FACTOR = math.sqrt(10)  # ... and a positive regression target's never more than this, as drift
INFERRED, DECLARED = "inferred", "declared"
OPEN_SET_SHARE = 0.01  # one-off categories at least this share of the reference: new ones are expected
INT_TYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
]
FLOAT_TYPES = ["float16", "float32", "float64", "Float32", "Float64"]
# An int column with a missing value arrives as float: both are the same numeric contract.
NUMERIC_TYPES = INT_TYPES + FLOAT_TYPES
# Text and categorical columns are validated as object dtype (see `validation._normalize_for_gx`).
TEXT_TYPES = ["object", "str"]
BOOL_TYPES = ["bool", "boolean", "BooleanDtype", "bool_"]
DATETIME_TYPES = [f"datetime64[{unit}{tz}]" for unit in ("ns", "us", "ms", "s") for tz in ("", ", UTC")] + [
    "DatetimeTZDtype",
    "datetime64",
]


def plain(value: Any) -> Any:
    """JSON-safe Python scalars from numpy/pandas ones."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def type_family(series: pd.Series) -> list[str]:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return BOOL_TYPES
    if pd.api.types.is_numeric_dtype(dtype):
        return NUMERIC_TYPES
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return DATETIME_TYPES
    if reads_as_numbers(series):
        # Numbers stored as text ('?' for missing ones): a later file without a '?' reads as numbers.
        return TEXT_TYPES + NUMERIC_TYPES
    return TEXT_TYPES


def expectation(
    kind: str, meta_kind: str | None = None, observed: Any = None, evidence: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    # Profiled expectations are inferred; one a person writes (or edits and marks) is declared.
    meta: dict[str, Any] = {"origin": INFERRED}
    if meta_kind:
        meta["check"] = meta_kind
    if observed is not None:
        meta["observed"] = plain(observed)  # what the reference showed; `diff` compares fresh data with it
    if evidence:
        meta["evidence"] = evidence
    return {"type": kind, "kwargs": {k: plain(v) for k, v in kwargs.items()}, "meta": meta}


def origin(expectation: dict[str, Any]) -> str:
    """inferred (profiled from a sample) or declared (written or confirmed by a person)."""
    return str((expectation.get("meta") or {}).get("origin") or DECLARED)


def _round_bound(value: float, up: bool) -> float:
    """Round a bound outward to 4 significant digits so the JSON stays readable."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    digits = 3 - math.floor(math.log10(abs(value)))
    scale = 10.0**digits
    return float((math.ceil if up else math.floor)(value * scale) / scale)


@dataclass(frozen=True)
class _Spread:
    """A numeric column's finite values summed up once: count, extremes and the quantiles the bounds use."""

    rows: int
    low: float
    high: float
    q_low: float  # 0.5%
    q25: float
    q75: float
    q_high: float  # 99.5%

    @classmethod
    def of(cls, finite: pd.Series) -> _Spread:
        q_low, q25, q75, q_high = (float(q) for q in finite.quantile([0.005, 0.25, 0.75, 0.995]))
        return cls(len(finite), float(finite.min()), float(finite.max()), q_low, q25, q75, q_high)


def numeric_expectations(
    column: str, values: pd.Series, tolerance: float, evidence_rows: int = 300, *, target: bool = False
) -> list[dict[str, Any]]:
    """Plausibility bounds (hard, per row), a quantile-based range (drift) and the median (units).

    Bounds widen with the sample's uncertainty: "never negative" needs `evidence_rows` values (a
    smaller sample's lower bound is one span below its minimum), and the range's tolerance grows
    as the sample shrinks, since its extreme quantiles rest on a handful of values.
    """
    finite = values[np.isfinite(values.astype("float64"))].astype("float64")
    if finite.empty:
        return []
    spread = _Spread.of(finite)
    result = _range_expectations(column, spread, tolerance, evidence_rows)
    if finite.nunique() >= MIN_DISTINCT_FOR_MEDIAN and spread.q75 > spread.q25:
        result.append(_unit_expectation(column, spread, float(finite.median()), target=target))
        q35, q65 = (float(q) for q in finite.quantile([0.35, 0.65]))
        if q65 > q35:
            # A batch's median outside the reference's 35%-65% quantiles: the distribution moved
            # (a batch of 1,000 rows puts its median there by chance with odds below one in a million).
            result.append(
                expectation(
                    "expect_column_median_to_be_between",
                    column=column,
                    min_value=_round_bound(q35, up=False),
                    max_value=_round_bound(q65, up=True),
                    meta_kind="center",
                )
            )
    return result


def _range_expectations(column: str, spread: _Spread, tolerance: float, evidence_rows: int) -> list[dict[str, Any]]:
    """The hard plausibility bounds of any single row, and the range beyond which values are drift."""
    n, low, high = spread.rows, spread.low, spread.high
    span = max(high - low, abs(high), 1e-9)
    never_negative = low >= 0 and n >= evidence_rows
    q_low, q25, q75, q_high = spread.q_low, spread.q25, spread.q75, spread.q_high
    width = q75 - q25 if q75 > q25 else (q_high - q_low if q_high > q_low else span)
    widen = tolerance * max(1.0, math.sqrt(2000 / n))
    soft_low, soft_high = q_low - widen * width, q_high + widen * width
    if never_negative:
        soft_low = max(soft_low, 0.0)
        hard_low, evidence = 0.0, f"never negative in {n:,} rows"
    elif low >= 0:
        hard_low, evidence = low - span, f"{n:,} rows are too few to rule out negative values"
    else:
        hard_low, evidence = low - 10 * span, f"minimum {low:g} in {n:,} rows"
    return [
        # Hard bounds catch infinities, sign flips and absurd magnitudes in any single row.
        expectation(
            "expect_column_values_to_be_between",
            column=column,
            min_value=_round_bound(hard_low, up=False),
            max_value=_round_bound(high + 10 * span, up=True),
            meta_kind="plausible",
            evidence=evidence,
        ),
        # The 0.5%-99.5% quantiles widened by `tolerance` IQRs (more for a small sample): values
        # beyond it in more than 1% of a batch are drift, which monitoring judges.
        expectation(
            "expect_column_values_to_be_between",
            column=column,
            min_value=_round_bound(min(soft_low, low), up=False),
            max_value=_round_bound(max(soft_high, high), up=True),
            mostly=0.99,
            meta_kind="range",
        ),
    ]


def _unit_expectation(column: str, spread: _Spread, median: float, *, target: bool) -> dict[str, Any]:
    """The median's bounds, beyond which a batch's values changed units rather than drifted.

    A unit change (x10, /1000, C->F) moves the median far outside the reference's quartiles;
    drift moves it less. The bounds are the quartiles widened by one IQR (and, for a column
    that is never negative, no lower than a quarter of the first quartile), so that a
    drifted batch reaches monitoring and retraining instead of being rejected as corrupt;
    the range check, drift's, is the one `tolerance` widens.
    """
    low, q25, q75 = spread.low, spread.q25, spread.q75
    iqr = q75 - q25
    median_low, median_high = q25 - UNIT_IQRS * iqr, q75 + UNIT_IQRS * iqr
    if low >= 0:
        median_low = max(median_low, q25 / 4)
    unit_evidence: str | None = None
    if target and low >= 0 and q25 > 0:
        # A regression target that is a positive quantity (a duration, a price) is what concept
        # drift moves, by factors: the same bound on the log scale (the quartiles' ratio beyond
        # the third quartile) lets trips 2.3x longer under road works through as drift, for
        # retraining to learn, never beyond half an order of magnitude (MAX_DRIFT_FACTOR: a
        # median moved further is nearer x10 than x1). Features keep the tighter bound: a
        # feature that doubles at once (x1.8 + 32 on an amount) is more likely a unit change.
        factor = min((q75 / q25) ** UNIT_IQRS, MAX_DRIFT_FACTOR * median / q75)
        if q75 * factor > median_high:
            median_high = q75 * factor
            unit_evidence = "a positive target: quartiles +- one IQR, above on the log scale (concept drift)"
    return expectation(
        "expect_column_median_to_be_between",
        column=column,
        min_value=_round_bound(median_low, up=False),
        max_value=_round_bound(median_high, up=True),
        meta_kind="unit",
        observed=round(median, 6),
        evidence=unit_evidence,
    )


NATURAL_REPEATS = 0.01  # a reference with more repeated whole rows than this is coarse by nature


def unique_share(repeated: pd.Series, tolerance: float, coarse: bool = False) -> float | None:
    """`mostly` of a uniqueness expectation: the reference's own share of unrepeated rows, less the
    tolerance (at most 1 - tolerance); None when that leaves nothing to check.

    `coarse`: whole rows of few, coarse columns repeat by nature, and more of them the bigger the
    batch, so a batch fails only when fewer than half as many of its rows are unique as in the
    reference: a replayed extract, not a bigger one."""
    unique = float(1.0 - repeated.mean())
    if coarse and 1 - unique > NATURAL_REPEATS:
        share = unique / 2 - tolerance
    else:
        share = min(1.0 - tolerance, unique - tolerance)
    return round(share, 4) if share > 0 else None


LABEL_NULL_SHARE = 0.5  # a batch may hold rows whose label has not arrived yet, but not mostly such rows


def label_null_expectation(column: str, null_rate: float) -> dict[str, Any]:
    """Labels arrive late: some unlabeled rows are normal (training leaves them out); a batch that is
    mostly unlabeled is a broken extract."""
    mostly = round(1.0 - max(LABEL_NULL_SHARE, min(1.0, null_rate * 1.5)), 4)
    return expectation("expect_column_values_to_not_be_null", column=column, mostly=mostly, meta_kind="labels")


def null_expectation(
    column: str, null_rate: float, factor: float, slack: float, rows: int, evidence_rows: int = 300
) -> dict[str, Any] | None:
    """A column with no nulls in `evidence_rows` or more must have none (a null is a broken row);
    otherwise its null rate, widened by its sampling uncertainty (three standard errors; 3/n when
    none were seen), may grow by `factor` plus `slack` in a batch."""
    if null_rate == 0 and rows >= evidence_rows:
        return expectation(
            "expect_column_values_to_not_be_null",
            column=column,
            meta_kind="complete",
            evidence=f"no nulls in {rows:,} rows",
        )
    upper = 3 / rows if null_rate == 0 else null_rate + 3 * math.sqrt(null_rate * (1 - null_rate) / rows)
    mostly = round(1.0 - min(1.0, upper * factor + slack), 4)
    if mostly <= 0:
        return None
    return expectation(
        "expect_column_values_to_not_be_null",
        column=column,
        mostly=mostly,
        meta_kind="null_rate",
        observed=round(null_rate, 6),
        evidence=f"{null_rate:.2%} null in {rows:,} rows",
    )


def set_expectation(column: str, present: pd.Series, *, label: bool = False) -> dict[str, Any]:
    """The values seen. A set where one-off values make up `OPEN_SET_SHARE` of the rows or more is
    open: by the Good-Turing estimate about that share of new rows holds values never seen, so a
    batch may hold up to three times as many (drift); otherwise a value never seen is a broken row."""
    counts = present.value_counts()
    values = sorted(plain(v) for v in counts.index) if label else sorted(str(v) for v in counts.index)
    unseen = float((counts == 1).sum() / max(len(present), 1))
    if label or unseen < OPEN_SET_SHARE:
        return expectation(
            "expect_column_values_to_be_in_set",
            column=column,
            value_set=values,
            meta_kind="categories",
            evidence=f"{len(values)} value(s) in {len(present):,} rows",
        )
    return expectation(
        "expect_column_values_to_be_in_set",
        column=column,
        value_set=values,
        mostly=round(1 - min(0.5, 3 * unseen), 4),
        meta_kind="open_set",
        evidence=f"{len(values)} values in {len(present):,} rows, {unseen:.1%} of them seen once",
    )
