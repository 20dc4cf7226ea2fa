"""The row-level part of a data contract: one implementation for training, monitoring and scoring.

A suite's expectations on single values without `mostly` (`..._to_not_be_null`, `..._to_be_between`,
`..._to_be_in_set`, `..._to_not_be_in_set`) hold for every row: a row breaking one is set aside with
its reason (scoring's rejects file, training's and monitoring's row quarantine) while the rest of
the batch goes on. Everything else in a suite (columns, types, `mostly` shares, medians, row counts,
uniqueness) describes a whole batch and is left to validation (`components.data.contract`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.data import contract

Family = Literal["numeric", "text", "boolean", "datetime"]
REASON = "set_aside_reason"

ROW_CHECKS = {
    "expect_column_values_to_not_be_null": "not_null",
    "expect_column_values_to_be_between": "between",
    "expect_column_values_to_be_in_set": "in_set",
    "expect_column_values_to_not_be_in_set": "not_in_set",
}
# Checked against what the model needs instead: a scoring file has no target and may carry extra columns.
FILE_CHECKS = {
    "expect_column_to_exist",
    "expect_column_values_to_be_in_type_list",
    "expect_table_columns_to_match_ordered_list",
}


@dataclass(frozen=True)
class RowRule:
    """One expectation on column values, checked on every row."""

    column: str
    check: str  # not_null | between | in_set | not_in_set
    expectation: str
    min_value: float | None = None
    max_value: float | None = None
    strict_min: bool = False
    strict_max: bool = False
    value_set: tuple[Any, ...] = ()

    def describe(self) -> str:
        if self.check == "between":
            low = "-inf" if self.min_value is None else f"{self.min_value:g}"
            high = "inf" if self.max_value is None else f"{self.max_value:g}"
            return f"{self.expectation}{'(' if self.strict_min else '['}{low}, {high}{')' if self.strict_max else ']'}"
        return self.expectation


@dataclass(frozen=True)
class RowContract:
    """What of a suite scoring checks per row, and what it leaves out (with why)."""

    suite: str | None
    rules: tuple[RowRule, ...] = ()
    families: Mapping[str, Family] = field(default_factory=dict)  # column -> type family of the suite
    skipped: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(rule.column for rule in self.rules))


def type_family(type_list: Sequence[str]) -> Family | None:
    """The family of a suite's `type_list` (see `components.data.contract`), None when it names none we know."""
    names = set(type_list)
    if names & set(contract.NUMERIC_TYPES):
        return "numeric"
    if names & set(contract.BOOL_TYPES):
        return "boolean"
    if names & set(contract.DATETIME_TYPES):
        return "datetime"
    if names & set(contract.TEXT_TYPES):
        return "text"
    return None


def compile_contract(
    suite: Mapping[str, Any] | None,
    columns: Sequence[str],
    *,
    required: Sequence[str] = (),
    target: str | None = None,
    with_target: bool = False,
) -> RowContract:
    """The row-level part of a suite for a file with `columns`; `required` columns are never skipped.

    Scoring files have no target: its expectations are skipped unless `with_target` (training and
    monitoring data, where a label outside the known classes is a broken row)."""
    if suite is None:
        return RowContract(suite=None)
    present = set(columns) | set(required)
    rules: list[RowRule] = []
    families: dict[str, Family] = {}
    skipped: list[str] = []
    for expectation in suite.get("expectations", []):
        kind = str(expectation.get("type"))
        kwargs = expectation.get("kwargs") or {}
        column = kwargs.get("column")
        label = f"{kind}({column})" if column else kind
        if column is not None and column == target and not with_target:
            skipped.append(f"{label}: the target, which scoring data does not have")
            continue
        if kind == "expect_column_values_to_be_in_type_list":
            family = type_family(kwargs.get("type_list") or ())
            if column is not None and family is not None:
                families[column] = family
            continue
        if kind in FILE_CHECKS:
            continue  # checked on the whole file or batch: by scoring against the model, by validation otherwise
        if column is not None and column not in present:
            skipped.append(f"{label}: column not in the file, and the model does not need it")
            continue
        check = ROW_CHECKS.get(kind)
        mostly = kwargs.get("mostly")
        if check is None or column is None:
            skipped.append(f"{label}: describes the whole batch, not a row (left to monitoring)")
        elif mostly is not None and float(mostly) < 1:
            skipped.append(f"{label}: 'mostly' bounds a share of the batch, not a row (left to monitoring)")
        else:
            rules.append(
                RowRule(
                    column=column,
                    check=check,
                    expectation=kind,
                    min_value=None if kwargs.get("min_value") is None else float(kwargs["min_value"]),
                    max_value=None if kwargs.get("max_value") is None else float(kwargs["max_value"]),
                    strict_min=bool(kwargs.get("strict_min", False)),
                    strict_max=bool(kwargs.get("strict_max", False)),
                    value_set=tuple(kwargs.get("value_set") or ()),
                )
            )
    return RowContract(suite=str(suite.get("name")), rules=tuple(rules), families=families, skipped=tuple(skipped))


def as_floats(values: pa.Array) -> np.ndarray:
    """float64 values with NaN for nulls."""
    if not pa.types.is_floating(values.type):
        values = pc.cast(values, pa.float64(), safe=False)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype="float64")


def _violations(rule: RowRule, values: pa.Array, not_a_value: np.ndarray | None) -> np.ndarray:
    """Rows breaking the rule. Like GX, only the null check looks at missing values."""
    if rule.check == "not_null":
        missing = pc.is_null(values, nan_is_null=True).to_numpy(zero_copy_only=False)
        return np.asarray(missing & ~not_a_value if not_a_value is not None else missing, dtype=bool)
    if rule.check == "between":
        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
            return np.zeros(len(values), dtype=bool)  # non-numeric bounds are not checked per row
        numbers = as_floats(values)
        with np.errstate(invalid="ignore"):
            bad = np.zeros(len(numbers), dtype=bool)
            if rule.min_value is not None:
                bad |= numbers <= rule.min_value if rule.strict_min else numbers < rule.min_value
            if rule.max_value is not None:
                bad |= numbers >= rule.max_value if rule.strict_max else numbers > rule.max_value
        return bad
    present = ~pc.is_null(values, nan_is_null=True).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        allowed = [float(v) for v in rule.value_set if isinstance(v, (int, float)) and not isinstance(v, bool)]
        member = np.isin(as_floats(values), np.asarray(allowed, dtype="float64"))
    else:
        try:
            value_set = pa.array(list(rule.value_set)).cast(values.type)
            member = pc.is_in(values, value_set=value_set).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            member = pd.Series(values.to_pandas()).isin(list(rule.value_set)).to_numpy()
    outside = ~np.asarray(member, dtype=bool)
    return present & (outside if rule.check == "in_set" else ~outside)


@dataclass(frozen=True)
class RowCheck:
    """Which rows break the contract's row rules, and why (one reason per invalid row, in row order)."""

    invalid: np.ndarray | None  # None: no row does
    reasons: list[str]

    @property
    def count(self) -> int:
        return 0 if self.invalid is None else int(self.invalid.sum())


def find_problems(
    rules: Sequence[RowRule],
    arrays: Mapping[str, pa.Array],
    problems: Sequence[tuple[np.ndarray, str, pa.Array | None]] = (),
    unreadable: Mapping[str, np.ndarray] | None = None,
) -> RowCheck:
    """Check `rules` on typed columns; `problems` are breaks found before (unreadable values)."""
    found = list(problems)
    for rule in rules:
        values = arrays.get(rule.column)
        if values is None:
            continue
        bad = _violations(rule, values, (unreadable or {}).get(rule.column))
        if bad.any():
            shown = None if rule.check == "not_null" else values
            found.append((bad, f"{rule.column}: {rule.describe()}", shown))
    if not found:
        return RowCheck(None, [])
    invalid = np.logical_or.reduce([mask for mask, _, _ in found])
    rows = np.flatnonzero(invalid)
    slot = np.full(len(invalid), -1, dtype=np.int64)
    slot[rows] = np.arange(len(rows))
    notes: list[list[str]] = [[] for _ in rows]
    for mask, text, shown in found:
        where = np.flatnonzero(mask)
        values = shown.take(pa.array(where)).to_pylist() if shown is not None else [None] * len(where)
        for row, value in zip(where, values, strict=True):
            notes[slot[row]].append(text if shown is None else f"{text}, got {value!r}")
    return RowCheck(invalid, ["; ".join(n) for n in notes])


def _arrow(values: pd.Series) -> pa.Array | None:
    """A pandas column as Arrow; None when it cannot be one (mixed types: a type check's business)."""
    try:
        return pa.Array.from_pandas(values.to_numpy(dtype=object) if values.dtype == object else values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        return None


def check_frame(row_contract: RowContract, frame: pd.DataFrame) -> RowCheck:
    """The row rules on a DataFrame (training and monitoring batches)."""
    arrays = {}
    for column in row_contract.columns:
        if column in frame.columns:
            array = _arrow(frame[column])
            if array is not None:
                arrays[column] = array
    return find_problems(row_contract.rules, arrays)


def split_rows(row_contract: RowContract, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows that keep every row rule, rows set aside with a `set_aside_reason` column)."""
    check = check_frame(row_contract, frame)
    if check.invalid is None:
        return frame, frame.iloc[0:0].assign(**{REASON: pd.Series(dtype="object")})
    set_aside = frame[check.invalid].assign(**{REASON: check.reasons})
    return frame[~check.invalid], set_aside
