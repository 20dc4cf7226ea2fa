"""The data contract: Great Expectations suites kept as reviewed JSON files, and validation.

GX 1.x has no profiler, so `profile_suite` derives a suite from reference data: column set
and order, types, null rates, numeric ranges and medians, category sets, id uniqueness.
The JSON file in `expectations/` is the source of truth; the GX file context under the
workspace only holds run state and Data Docs.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from components.core.errors import UserError
from components.core.files import write_text_atomic
from components.modeling.prepare import reads_as_numbers

if TYPE_CHECKING:
    import great_expectations as gx

    from components.core.config import PipelineConfig

MAX_CATEGORIES = 50
# `mlops expectations diff` ignores bounds that widen by less than this share of their width.
DIFF_SLACK = 0.05
MIN_DISTINCT_FOR_MEDIAN = 10
UNIT_IQRS = 1.0  # a batch median beyond the quartiles +- this many IQRs is a unit change, not drift
MAX_DRIFT_FACTOR = math.sqrt(10)  # ... and a positive regression target's never more than this, as drift
INFERRED, DECLARED = "inferred", "declared"
DRIFT_CHECKS = {"range", "center"}  # failing these is drift for monitoring to judge, not a reason to refuse a batch
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
# Text and categorical columns are validated as object dtype (see `_normalize_for_gx`).
TEXT_TYPES = ["object", "str"]
BOOL_TYPES = ["bool", "boolean", "BooleanDtype", "bool_"]
DATETIME_TYPES = [f"datetime64[{unit}{tz}]" for unit in ("ns", "us", "ms", "s") for tz in ("", ", UTC")] + [
    "DatetimeTZDtype",
    "datetime64",
]


class ContractError(UserError, ValueError):
    """A suite file is missing, unreadable or not a valid GX suite."""


@dataclass(frozen=True)
class Failure:
    """One failed expectation, with what was observed."""

    expectation: str
    column: str | None
    message: str
    observed: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    severity: str = "break"  # break: the batch is refused; drift: monitoring's to judge


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one batch against one suite."""

    suite: str
    success: bool
    evaluated: int
    failures: tuple[Failure, ...]
    docs_url: str | None = None

    @property
    def breaks(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if f.severity != "drift")

    @property
    def drift(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if f.severity == "drift")

    @property
    def judgement(self) -> str:
        """corrupt (refused), drift (used, and monitoring judges the shift) or clean."""
        return "corrupt" if self.breaks else "drift" if self.drift else "clean"

    @property
    def why(self) -> str:
        if self.breaks:
            kinds = sorted({f.expectation.removeprefix("expect_") for f in self.breaks})
            return "refused as corrupt: it breaks " + ", ".join(kinds)
        if self.drift:
            columns = sorted({str(f.column) for f in self.drift})
            return (
                f"judged as drift: values of {', '.join(columns)} beyond the reference's range, while units, "
                "types, columns and hard bounds hold; monitoring judges the shift"
            )
        return "clean"

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "success": self.success,
            "judgement": self.judgement,
            "why": self.why,
            "evaluated_expectations": self.evaluated,
            "failed_expectations": [asdict(f) for f in self.breaks],
            "drift": [asdict(f) for f in self.drift],
            "docs_url": self.docs_url,
        }

    def summary(self) -> str:
        drift = [f"  ~ {failure.message} (drift)" for failure in self.drift]
        if self.success:
            return "\n".join([f"suite {self.suite!r}: all {self.evaluated - len(drift)} checks passed", *drift])
        lines = [f"suite {self.suite!r}: {len(self.breaks)} of {self.evaluated} expectations failed ({self.why})"]
        lines += [f"  - {failure.message}" for failure in self.breaks]
        return "\n".join(lines + drift)


class DataRejected(Exception):
    """Validation failed: the batch must not be used for training or scoring."""

    def __init__(self, report: ValidationReport, report_path: Path | None = None, quarantined: tuple[Path, ...] = ()):
        self.report = report
        self.report_path = report_path
        self.quarantined = quarantined
        where = f"\nvalidation report: {report_path}" if report_path else ""
        kept = "".join(f"\nquarantined: {folder}" for folder in quarantined)
        super().__init__(f"data rejected by the contract\n{report.summary()}{where}{kept}")


# ----------------------------------------------------------------------------- profiling


def _plain(value: Any) -> Any:
    """JSON-safe Python scalars from numpy/pandas ones."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _type_family(series: pd.Series) -> list[str]:
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


def _expectation(
    kind: str, meta_kind: str | None = None, observed: Any = None, evidence: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    # Profiled expectations are inferred; one a person writes (or edits and marks) is declared.
    meta: dict[str, Any] = {"origin": INFERRED}
    if meta_kind:
        meta["check"] = meta_kind
    if observed is not None:
        meta["observed"] = _plain(observed)  # what the reference showed; `diff` compares fresh data with it
    if evidence:
        meta["evidence"] = evidence
    return {"type": kind, "kwargs": {k: _plain(v) for k, v in kwargs.items()}, "meta": meta}


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


def _numeric_expectations(
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
    n = len(finite)
    low, high = float(finite.min()), float(finite.max())
    span = max(high - low, abs(high), 1e-9)
    never_negative = low >= 0 and n >= evidence_rows
    q_low, q25, q75, q_high = (float(q) for q in finite.quantile([0.005, 0.25, 0.75, 0.995]))
    spread = q75 - q25 if q75 > q25 else (q_high - q_low if q_high > q_low else span)
    widen = tolerance * max(1.0, math.sqrt(2000 / n))
    soft_low, soft_high = q_low - widen * spread, q_high + widen * spread
    if never_negative:
        soft_low = max(soft_low, 0.0)
        hard_low, evidence = 0.0, f"never negative in {n:,} rows"
    elif low >= 0:
        hard_low, evidence = low - span, f"{n:,} rows are too few to rule out negative values"
    else:
        hard_low, evidence = low - 10 * span, f"minimum {low:g} in {n:,} rows"
    result = [
        # Hard bounds catch infinities, sign flips and absurd magnitudes in any single row.
        _expectation(
            "expect_column_values_to_be_between",
            column=column,
            min_value=_round_bound(hard_low, up=False),
            max_value=_round_bound(high + 10 * span, up=True),
            meta_kind="plausible",
            evidence=evidence,
        ),
        # The 0.5%-99.5% quantiles widened by `tolerance` IQRs (more for a small sample): values
        # beyond it in more than 1% of a batch are drift, which monitoring judges.
        _expectation(
            "expect_column_values_to_be_between",
            column=column,
            min_value=_round_bound(min(soft_low, low), up=False),
            max_value=_round_bound(max(soft_high, high), up=True),
            mostly=0.99,
            meta_kind="range",
        ),
    ]
    if finite.nunique() >= MIN_DISTINCT_FOR_MEDIAN and q75 > q25:
        # A unit change (x10, /1000, C->F) moves the median far outside the reference's quartiles;
        # drift moves it less. The bounds are the quartiles widened by one IQR (and, for a column
        # that is never negative, no lower than a quarter of the first quartile), so that a
        # drifted batch reaches monitoring and retraining instead of being rejected as corrupt;
        # the range check, drift's, is the one `tolerance` widens.
        iqr, median = q75 - q25, float(finite.median())
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
        result.append(
            _expectation(
                "expect_column_median_to_be_between",
                column=column,
                min_value=_round_bound(median_low, up=False),
                max_value=_round_bound(median_high, up=True),
                meta_kind="unit",
                observed=round(median, 6),
                evidence=unit_evidence,
            )
        )
        q35, q65 = (float(q) for q in finite.quantile([0.35, 0.65]))
        if q65 > q35:
            # A batch's median outside the reference's 35%-65% quantiles: the distribution moved
            # (a batch of 1,000 rows puts its median there by chance with odds below one in a million).
            result.append(
                _expectation(
                    "expect_column_median_to_be_between",
                    column=column,
                    min_value=_round_bound(q35, up=False),
                    max_value=_round_bound(q65, up=True),
                    meta_kind="center",
                )
            )
    return result


NATURAL_REPEATS = 0.01  # a reference with more repeated whole rows than this is coarse by nature


def _unique_share(repeated: pd.Series, tolerance: float, coarse: bool = False) -> float | None:
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


def _label_null_expectation(column: str, null_rate: float) -> dict[str, Any]:
    """Labels arrive late: some unlabeled rows are normal (training leaves them out); a batch that is
    mostly unlabeled is a broken extract."""
    mostly = round(1.0 - max(LABEL_NULL_SHARE, min(1.0, null_rate * 1.5)), 4)
    return _expectation("expect_column_values_to_not_be_null", column=column, mostly=mostly, meta_kind="labels")


def _whole(value: Any) -> Any:
    """1.0 as 1: a label column with gaps reads as floats."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return value


def _null_expectation(
    column: str, null_rate: float, factor: float, slack: float, rows: int, evidence_rows: int = 300
) -> dict[str, Any] | None:
    """A column with no nulls in `evidence_rows` or more must have none (a null is a broken row);
    otherwise its null rate, widened by its sampling uncertainty (three standard errors; 3/n when
    none were seen), may grow by `factor` plus `slack` in a batch."""
    if null_rate == 0 and rows >= evidence_rows:
        return _expectation(
            "expect_column_values_to_not_be_null",
            column=column,
            meta_kind="complete",
            evidence=f"no nulls in {rows:,} rows",
        )
    upper = 3 / rows if null_rate == 0 else null_rate + 3 * math.sqrt(null_rate * (1 - null_rate) / rows)
    mostly = round(1.0 - min(1.0, upper * factor + slack), 4)
    if mostly <= 0:
        return None
    return _expectation(
        "expect_column_values_to_not_be_null",
        column=column,
        mostly=mostly,
        meta_kind="null_rate",
        observed=round(null_rate, 6),
        evidence=f"{null_rate:.2%} null in {rows:,} rows",
    )


def _set_expectation(column: str, present: pd.Series, *, label: bool = False) -> dict[str, Any]:
    """The values seen. A set where one-off values make up `OPEN_SET_SHARE` of the rows or more is
    open: by the Good-Turing estimate about that share of new rows holds values never seen, so a
    batch may hold up to three times as many (drift); otherwise a value never seen is a broken row."""
    counts = present.value_counts()
    values = sorted(_plain(v) for v in counts.index) if label else sorted(str(v) for v in counts.index)
    unseen = float((counts == 1).sum() / max(len(present), 1))
    if label or unseen < OPEN_SET_SHARE:
        return _expectation(
            "expect_column_values_to_be_in_set",
            column=column,
            value_set=values,
            meta_kind="categories",
            evidence=f"{len(values)} value(s) in {len(present):,} rows",
        )
    return _expectation(
        "expect_column_values_to_be_in_set",
        column=column,
        value_set=values,
        mostly=round(1 - min(0.5, 3 * unseen), 4),
        meta_kind="open_set",
        evidence=f"{len(values)} values in {len(present):,} rows, {unseen:.1%} of them seen once",
    )


def profile_suite(
    frame: pd.DataFrame,
    name: str,
    *,
    target: str | None = None,
    id_column: str | None = None,
    numeric_tolerance: float = 1.5,
    null_rate_slack: float = 0.02,
    null_rate_factor: float = 1.5,
    duplicate_tolerance: float = 0.1,
    min_rows_fraction: float = 0.01,
    max_rows_factor: float = 100.0,
    max_categories: int = MAX_CATEGORIES,
    task: str | None = None,
    time_column: str | None = None,
    min_evidence_rows: int = 300,
) -> dict[str, Any]:
    """Derive a suite (GX's JSON structure) from reference data; people review and commit it.

    Every expectation is marked `inferred` in its meta, with the evidence behind it where a reviewer
    may want to tighten it (`declared` ones are a person's). Bounds widen with the sample's
    uncertainty: see `_numeric_expectations`, `_null_expectation`, `_set_expectation`.

    The target's values are a set for classes, and ranges like any number for regression (`task`);
    its null rate follows the labels: rows may arrive before their label, up to `LABEL_NULL_SHARE`.
    """
    if frame.empty:
        raise ContractError("cannot build a suite from an empty table")
    for role, column in (("target", target), ("id", id_column)):
        if column is not None and column not in frame.columns:
            raise ContractError(f"{role} column {column!r} is not in the data; columns: {list(frame.columns)}")
    columns = [str(c) for c in frame.columns]
    rows = len(frame)
    expectations = [
        _expectation("expect_table_columns_to_match_ordered_list", column_list=columns),
        _expectation(
            "expect_table_row_count_to_be_between",
            min_value=max(1, math.floor(rows * min_rows_fraction)),
            max_value=math.ceil(rows * max_rows_factor),
        ),
    ]
    if id_column is None:
        # Without an id, repeated whole rows are the duplicates; a batch of copies is rejected. A table of
        # few, coarse columns repeats rows by nature: the bound starts from the reference's own share.
        unique_rows = _unique_share(frame.duplicated(keep=False), duplicate_tolerance, coarse=True)
        if unique_rows is not None:
            expectations.append(
                _expectation(
                    "expect_compound_columns_to_be_unique",
                    column_list=columns,
                    mostly=unique_rows,
                    observed=round(float(1 - frame.duplicated(keep=False).mean()), 6),
                )
            )
    for column in columns:
        series = frame[column]
        expectations.append(_expectation("expect_column_to_exist", column=column))
        expectations.append(
            _expectation("expect_column_values_to_be_in_type_list", column=column, type_list=_type_family(series))
        )
        if column == id_column:
            expectations.append(_expectation("expect_column_values_to_not_be_null", column=column))
        elif column == target:
            expectations.append(_label_null_expectation(column, float(series.isna().mean())))
        elif (
            null := _null_expectation(
                column, float(series.isna().mean()), null_rate_factor, null_rate_slack, rows, min_evidence_rows
            )
        ) is not None:
            expectations.append(null)
        if column == id_column:
            # Curation drops repeated ids; more than the tolerance means a broken or replayed extract.
            unique_ids = _unique_share(series.duplicated(keep=False) & series.notna(), duplicate_tolerance)
            if unique_ids is not None:
                expectations.append(_expectation("expect_column_values_to_be_unique", column=column, mostly=unique_ids))
            continue
        present = series.dropna()
        if pd.api.types.is_bool_dtype(series.dtype):
            values: list[Any] = sorted({bool(v) for v in present})
            expectations.append(_expectation("expect_column_values_to_be_in_set", column=column, value_set=values))
        elif pd.api.types.is_numeric_dtype(series.dtype):
            if column == target and task != "regression":
                expectations.append(_set_expectation(column, present.map(_whole), label=True))
            else:
                expectations.extend(
                    _numeric_expectations(
                        column, present, numeric_tolerance, min_evidence_rows, target=column == target
                    )
                )
        elif not pd.api.types.is_datetime64_any_dtype(series.dtype) and not (
            column != target and reads_as_numbers(series)
        ):
            text = present.astype(str)
            if column == target or text.nunique() <= max_categories:
                expectations.append(_set_expectation(column, text, label=column == target))
    return {
        "name": name,
        "expectations": expectations,
        "meta": {
            "generated_by": "mlops expectations init",
            "reference_rows": rows,
            "target": target,
            "id_column": id_column,
            "time_column": time_column,
            "task": task,
            "note": "Reviewed contract: edit bounds and sets on purpose, commit the change.",
        },
        "notes": None,
    }


def profile_from_config(
    frame: pd.DataFrame, name: str, config: PipelineConfig, task: str | None = None
) -> dict[str, Any]:
    """`profile_suite` with the tolerances and column roles of the pipeline config (the task, when
    neither given nor configured, inferred from the target)."""
    v = config.validation
    task = task or config.task
    target = config.data.target
    if task is None and target is not None and target in frame.columns:
        from components.modeling.tasks import TargetError, infer_task

        try:
            task = infer_task(frame[target]).task
        except TargetError:
            task = None  # training refuses such a target with the reason
    return profile_suite(
        frame,
        name,
        target=config.data.target,
        id_column=config.data.id_column,
        numeric_tolerance=v.numeric_tolerance,
        null_rate_slack=v.null_rate_slack,
        null_rate_factor=v.null_rate_factor,
        duplicate_tolerance=v.duplicate_tolerance,
        min_rows_fraction=v.min_rows_fraction,
        max_rows_factor=v.max_rows_factor,
        max_categories=config.model.max_categories,
        task=task,
        time_column=config.data.time_column,
        min_evidence_rows=v.min_evidence_rows,
    )


def save_suite(suite: dict[str, Any], path: Path) -> Path:
    return write_text_atomic(path, json.dumps(suite, indent=2, sort_keys=False) + "\n")


def load_suite(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ContractError(f"no expectation suite at {path}")
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ContractError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list) or "name" not in suite:
        raise ContractError(f"{path} is not a GX suite: it needs 'name' and a list of 'expectations'")
    return suite


def suite_path(suite_dir: Path, dataset: str) -> Path:
    return suite_dir / f"{dataset}.json"


# ----------------------------------------------------------------------------- validation


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def _failure_message(
    kind: str, column: str | None, kwargs: dict[str, Any], result: dict[str, Any], error: str | None
) -> str:
    head = f"{kind}({column})" if column else kind
    if error:
        return f"{head}: could not be evaluated: {error.splitlines()[0][:300]}"
    if kind == "expect_column_to_exist":
        return f"{head}: column {column!r} is missing"
    if kind == "expect_table_columns_to_match_ordered_list":
        observed = result.get("observed_value") or []
        expected = kwargs.get("column_list") or []
        missing = [c for c in expected if c not in observed]
        extra = [c for c in observed if c not in expected]
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        if not parts:
            parts.append(f"order differs: observed {observed}")
        return f"{head}: " + "; ".join(parts)
    if "unexpected_count" in result and result.get("unexpected_count") is not None:
        what = {
            "expect_column_values_to_be_between": (
                f"outside [{_format_value(kwargs.get('min_value'))}, {_format_value(kwargs.get('max_value'))}]"
            ),
            "expect_column_values_to_be_in_set": "not in the allowed set",
            "expect_column_values_to_not_be_null": "null",
            "expect_column_values_to_be_unique": "duplicated",
            "expect_compound_columns_to_be_unique": "in duplicated rows",
        }.get(kind, "unexpected")
        examples = ", ".join(_format_value(v) for v in (result.get("partial_unexpected_list") or [])[:5])
        mostly = f" (allowed: {1 - kwargs['mostly']:.2%})" if "mostly" in kwargs else ""
        percent = result.get("unexpected_percent")
        share = f" = {percent:.2f}%" if percent is not None else ""
        count = result.get("element_count")
        return f"{head}: {result['unexpected_count']} of {count} values {what}{share}{mostly}; e.g. [{examples}]"
    if kind == "expect_column_values_to_be_in_type_list":
        return f"{head}: observed type {result.get('observed_value')!r}, expected one of {kwargs.get('type_list')}"
    expected = {k: v for k, v in kwargs.items() if k not in ("column", "batch_id")}
    return f"{head}: observed {_format_value(result.get('observed_value'))}, expected {expected}"


def _exception_message(info: dict[str, Any] | None) -> str | None:
    if not info:
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info["raised_exception"] else None
    messages = [
        str(v.get("exception_message")) for v in info.values() if isinstance(v, dict) and v.get("raised_exception")
    ]
    return "; ".join(messages) or None


def _report_from(suite_name: str, result: Any, docs_url: str | None) -> ValidationReport:
    failures = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        kwargs = {k: _plain(v) for k, v in config.kwargs.items() if k != "batch_id"}
        details = item.result or {}
        error = _exception_message(item.exception_info)
        check = (config.meta or {}).get("check")
        failures.append(
            Failure(
                expectation=config.type,
                column=kwargs.get("column"),
                message=_failure_message(config.type, kwargs.get("column"), kwargs, details, error),
                observed=_plain(details.get("observed_value")),
                kwargs=kwargs,
                severity="drift" if check in DRIFT_CHECKS else "break",
            )
        )
    # A missing or mistyped column makes its other expectations error out; they add no news.
    root_causes = {"expect_column_to_exist", "expect_column_values_to_be_in_type_list"}
    broken = {f.column for f in failures if f.expectation in root_causes and f.column}
    failures = [
        f
        for f in failures
        if f.expectation == "expect_column_to_exist"
        or f.column not in broken
        or ": could not be evaluated" not in f.message
    ]
    order = {"expect_table_columns_to_match_ordered_list": 0, "expect_column_to_exist": 1}
    failures.sort(key=lambda f: (order.get(f.expectation, 2), f.column or ""))
    return ValidationReport(
        suite=suite_name,
        success=not any(f.severity != "drift" for f in failures),
        evaluated=len(result.results),
        failures=tuple(failures),
        docs_url=docs_url,
    )


def _normalize_for_gx(frame: pd.DataFrame) -> pd.DataFrame:
    """Text and categorical columns as object dtype, the one text type GX's type checks know.

    pandas 3 reads text as the `str` dtype, which GX 1.x type checks do not recognise.
    """
    text = [c for c in frame.columns if isinstance(frame[c].dtype, (pd.StringDtype, pd.CategoricalDtype))]
    if not text:
        return frame
    return frame.astype({c: object for c in text})


@contextmanager
def _exclusive(gx_dir: Path) -> Iterator[None]:
    """One process at a time in a GX file context: its stores are read-modify-write files, and two
    runs adding the same checkpoint at once fail ('Cannot add Checkpoint ... already exists')."""
    gx_dir.mkdir(parents=True, exist_ok=True)
    with open(gx_dir / ".mlops.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Validator:
    """Runs suites through GX Checkpoints in a file context (Data Docs under `gx_dir`).

    Safe to use from several processes on one workspace: context changes are serialized.
    """

    def __init__(self, gx_dir: Path, data_docs: bool = True):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        self.gx_dir = gx_dir
        self._gx = gx
        with _exclusive(gx_dir):
            self.context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
            self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
            try:
                self.datasource = self.context.data_sources.get("pandas")
            except KeyError:
                self.datasource = self.context.data_sources.add_pandas("pandas")
        self.data_docs = data_docs

    def _suite(self, suite: dict[str, Any]) -> gx.ExpectationSuite:
        # Deep copies: GX fills in defaults on the dicts it is given, and the caller's suite must not change.
        expectations = [
            copy.deepcopy({k: v for k, v in e.items() if k not in ("id", "rendered_content")})
            for e in suite["expectations"]
        ]
        built = self._gx.ExpectationSuite(
            name=suite["name"],
            expectations=expectations,
            meta=copy.deepcopy(suite.get("meta")),
            notes=suite.get("notes"),
        )
        if len(built.expectations) != len(expectations):
            raise ContractError(
                f"suite {suite['name']!r}: {len(expectations) - len(built.expectations)} expectation(s) "
                "are not valid GX expectations; check their type and kwargs"
            )
        return built

    def _batch_definition(self, asset_name: str) -> Any:
        try:
            asset = self.datasource.get_asset(asset_name)
        except LookupError:
            asset = self.datasource.add_dataframe_asset(name=asset_name)  # type: ignore[attr-defined]
        try:
            return asset.get_batch_definition("whole_dataframe")
        except KeyError:
            return asset.add_batch_definition_whole_dataframe("whole_dataframe")

    def validate(
        self,
        frame: pd.DataFrame,
        suite: dict[str, Any],
        run_name: str | None = None,
        data_docs: bool | None = None,
    ) -> ValidationReport:
        """Run the suite through a Checkpoint; `data_docs` (default: the validator's) updates the docs site."""
        with _exclusive(self.gx_dir):
            return self._validate(frame, suite, run_name, data_docs)

    def _validate(
        self, frame: pd.DataFrame, suite: dict[str, Any], run_name: str | None, data_docs: bool | None
    ) -> ValidationReport:
        from great_expectations.core.run_identifier import RunIdentifier

        gx = self._gx
        docs = self.data_docs if data_docs is None else data_docs
        built = self._suite(suite)
        name = built.name
        if not docs:
            # No docs, no stored results: validate the batch directly (the per-batch search of
            # `screen_batches`); the Checkpoint's bookkeeping would cost seconds per call.
            batch = self._batch_definition(name).get_batch(batch_parameters={"dataframe": _normalize_for_gx(frame)})
            outcome = batch.validate(built, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10})
            return _report_from(name, outcome, None)
        definition = gx.ValidationDefinition(name=name, data=self._batch_definition(name), suite=built)
        actions = [gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")] if docs else []
        checkpoint = self.context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                actions=actions,
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10},
            )
        )
        result = checkpoint.run(
            batch_parameters={"dataframe": _normalize_for_gx(frame)},
            run_id=RunIdentifier(run_name=run_name) if run_name else None,
        )
        key, suite_result = next(iter(result.run_results.items()))
        docs_url = None
        if docs:
            urls = self.context.get_docs_sites_urls(resource_identifier=key)
            docs_url = urls[0]["site_url"] if urls else None
        return _report_from(name, suite_result, docs_url)


def without_column(suite: dict[str, Any], column: str) -> dict[str, Any]:
    """The suite for data that lacks `column` (new rows before their labels): its expectations dropped,
    and the column taken out of the table's column list."""
    expectations = []
    for expectation in suite["expectations"]:
        kwargs = expectation.get("kwargs") or {}
        if kwargs.get("column") == column:
            continue
        if expectation["type"] in ("expect_table_columns_to_match_ordered_list", "expect_table_columns_to_match_set"):
            expectation = copy.deepcopy(expectation)
            expectation["kwargs"]["column_list"] = [c for c in kwargs.get("column_list", []) if c != column]
        expectations.append(expectation)
    return {**suite, "expectations": expectations}


def expected_columns(suite: dict[str, Any]) -> Sequence[str]:
    for expectation in suite["expectations"]:
        if expectation["type"] == "expect_table_columns_to_match_ordered_list":
            return list(expectation["kwargs"]["column_list"])
    return []


# ----------------------------------------------------------------------------- review


@dataclass(frozen=True)
class SuiteChange:
    """One difference between the committed suite and a profile of fresh data."""

    kind: str  # "added", "removed" or "changed"
    expectation: str
    column: str | None
    detail: str


def _key(expectation: dict[str, Any]) -> tuple[str, str | None, str | None]:
    kwargs = expectation.get("kwargs", {})
    return expectation["type"], kwargs.get("column"), (expectation.get("meta") or {}).get("check")


def _describe_kwargs(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if isinstance(before, list) and isinstance(after, list):
            added = [v for v in after if v not in before]
            removed = [v for v in before if v not in after]
            if added:
                parts.append(f"{name}: new {added}")
            if removed:
                parts.append(f"{name}: no longer seen {removed}")
            if not added and not removed:
                parts.append(f"{name}: order {before} -> {after}")
        else:
            parts.append(f"{name}: {_format_value(before)} -> {_format_value(after)}")
    return "; ".join(parts)


def _matters(kind: str, before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Fresh data always moves bounds a little: report only what the current suite would not admit."""
    if kind == "expect_table_row_count_to_be_between":
        return False  # derived from the sample's size, not from the data's meaning
    if kind.endswith("_to_be_between"):
        low, high = before.get("min_value"), before.get("max_value")
        new_low, new_high = after.get("min_value"), after.get("max_value")
        slack = DIFF_SLACK * (high - low) if low is not None and high is not None else 0.0
        below = low is not None and new_low is not None and new_low < low - slack
        above = high is not None and new_high is not None and new_high > high + slack
        return below or above
    if kind == "expect_column_values_to_not_be_null":
        return float(after.get("mostly", 1.0)) < float(before.get("mostly", 1.0)) - DIFF_SLACK / 5
    return True


def diff_suites(current: dict[str, Any], fresh: dict[str, Any]) -> list[SuiteChange]:
    """What accepting `fresh` (a profile of new data) instead of `current` would change."""
    old = {_key(e): e for e in current["expectations"]}
    new = {_key(e): e for e in fresh["expectations"]}
    changes = []
    for key in old.keys() | new.keys():
        kind, column, _ = key
        if key not in new:
            changes.append(SuiteChange("removed", kind, column, "no longer derived from the fresh data"))
        elif key not in old:
            changes.append(SuiteChange("added", kind, column, json.dumps(new[key]["kwargs"], default=str)[:300]))
        else:
            strip = {"column", "batch_id"}
            before = {k: v for k, v in old[key].get("kwargs", {}).items() if k not in strip}
            after = {k: v for k, v in new[key].get("kwargs", {}).items() if k not in strip}
            median = (new[key].get("meta") or {}).get("observed")
            if kind == "expect_column_median_to_be_between" and median is not None:
                # A median check is about the median: report it when the fresh one leaves the committed range.
                low, high = before.get("min_value"), before.get("max_value")
                if (low is not None and median < low) or (high is not None and median > high):
                    detail = f"median {_format_value(median)} outside [{_format_value(low)}, {_format_value(high)}]"
                    changes.append(SuiteChange("changed", kind, column, detail))
            elif before != after and _matters(kind, before, after):
                changes.append(SuiteChange("changed", kind, column, _describe_kwargs(before, after)))
    order = {"expect_table_columns_to_match_ordered_list": 0, "expect_column_to_exist": 1}
    changes.sort(key=lambda c: (order.get(c.expectation, 2), c.column or "", c.expectation, c.kind))
    return changes
