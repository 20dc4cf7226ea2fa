"""A suite derived from reference data (GX 1.x has no profiler): which expectations each column gets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from components.data.contract.expectations import (
    expectation,
    label_null_expectation,
    null_expectation,
    numeric_expectations,
    set_expectation,
    type_family,
    unique_share,
)
from components.data.contract.suites import ContractError
from components.modeling.prepare import reads_as_numbers

if TYPE_CHECKING:
    from components.core.config import PipelineConfig

MAX_CATEGORIES = 50


@dataclass(frozen=True)
class _Roles:
    """The column roles and tolerances a profile is derived with (`profile_suite`'s keywords)."""

    target: str | None
    id_column: str | None
    time_column: str | None
    task: str | None
    numeric_tolerance: float
    null_rate_slack: float
    null_rate_factor: float
    duplicate_tolerance: float
    min_rows_fraction: float
    max_rows_factor: float
    max_categories: int
    min_evidence_rows: int


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
    uncertainty: see `numeric_expectations`, `null_expectation`, `set_expectation`.

    The target's values are a set for classes, and ranges like any number for regression (`task`);
    its null rate follows the labels: rows may arrive before their label, up to `LABEL_NULL_SHARE`.
    """
    if frame.empty:
        raise ContractError("cannot build a suite from an empty table")
    for role, column in (("target", target), ("id", id_column)):
        if column is not None and column not in frame.columns:
            raise ContractError(f"{role} column {column!r} is not in the data; columns: {list(frame.columns)}")
    roles = _Roles(
        target=target,
        id_column=id_column,
        time_column=time_column,
        task=task,
        numeric_tolerance=numeric_tolerance,
        null_rate_slack=null_rate_slack,
        null_rate_factor=null_rate_factor,
        duplicate_tolerance=duplicate_tolerance,
        min_rows_fraction=min_rows_fraction,
        max_rows_factor=max_rows_factor,
        max_categories=max_categories,
        min_evidence_rows=min_evidence_rows,
    )
    columns = [str(c) for c in frame.columns]
    expectations = _table_expectations(frame, columns, roles)
    for column in columns:
        expectations += _column_expectations(frame[column], column, len(frame), roles)
    return _suite(name, expectations, len(frame), roles)


def _suite(name: str, expectations: list[dict[str, Any]], rows: int, roles: _Roles) -> dict[str, Any]:
    """The suite as GX's JSON structure, its meta recording what it was profiled from."""
    return {
        "name": name,
        "expectations": expectations,
        "meta": {
            "generated_by": "mlops expectations init",
            "reference_rows": rows,
            "target": roles.target,
            "id_column": roles.id_column,
            "time_column": roles.time_column,
            "task": roles.task,
            "note": "Reviewed contract: edit bounds and sets on purpose, commit the change.",
        },
        "notes": None,
    }


def _table_expectations(frame: pd.DataFrame, columns: list[str], roles: _Roles) -> list[dict[str, Any]]:
    """The column list, the row count and, without an id column, how many whole rows may repeat."""
    rows = len(frame)
    expectations = [
        expectation("expect_table_columns_to_match_ordered_list", column_list=columns),
        expectation(
            "expect_table_row_count_to_be_between",
            min_value=max(1, math.floor(rows * roles.min_rows_fraction)),
            max_value=math.ceil(rows * roles.max_rows_factor),
        ),
    ]
    if roles.id_column is None:
        # Without an id, repeated whole rows are the duplicates; a batch of copies is rejected. A table of
        # few, coarse columns repeats rows by nature: the bound starts from the reference's own share.
        unique_rows = unique_share(frame.duplicated(keep=False), roles.duplicate_tolerance, coarse=True)
        if unique_rows is not None:
            expectations.append(
                expectation(
                    "expect_compound_columns_to_be_unique",
                    column_list=columns,
                    mostly=unique_rows,
                    observed=round(float(1 - frame.duplicated(keep=False).mean()), 6),
                )
            )
    return expectations


def _column_expectations(series: pd.Series, column: str, rows: int, roles: _Roles) -> list[dict[str, Any]]:
    """One column's: it exists, its type, its nulls, and its ids' uniqueness or its values."""
    expectations = [
        expectation("expect_column_to_exist", column=column),
        expectation("expect_column_values_to_be_in_type_list", column=column, type_list=type_family(series)),
    ]
    if column == roles.id_column:
        expectations.append(expectation("expect_column_values_to_not_be_null", column=column))
        # Curation drops repeated ids; more than the tolerance means a broken or replayed extract.
        unique_ids = unique_share(series.duplicated(keep=False) & series.notna(), roles.duplicate_tolerance)
        if unique_ids is not None:
            expectations.append(expectation("expect_column_values_to_be_unique", column=column, mostly=unique_ids))
        return expectations
    null_rate = float(series.isna().mean())
    if column == roles.target:
        expectations.append(label_null_expectation(column, null_rate))
    elif (
        null := null_expectation(
            column, null_rate, roles.null_rate_factor, roles.null_rate_slack, rows, roles.min_evidence_rows
        )
    ) is not None:
        expectations.append(null)
    return expectations + _value_expectations(series, column, roles)


def _value_expectations(series: pd.Series, column: str, roles: _Roles) -> list[dict[str, Any]]:
    """The values a column holds, by kind: a set of booleans, classes or categories, or numeric bounds.

    Dates, free text and numbers stored as text (other than the target) get none.
    """
    present = series.dropna()
    target = column == roles.target
    if pd.api.types.is_bool_dtype(series.dtype):
        values: list[Any] = sorted({bool(v) for v in present})
        return [expectation("expect_column_values_to_be_in_set", column=column, value_set=values)]
    if pd.api.types.is_numeric_dtype(series.dtype):
        if target and roles.task != "regression":
            return [set_expectation(column, present.map(_whole), label=True)]
        return numeric_expectations(column, present, roles.numeric_tolerance, roles.min_evidence_rows, target=target)
    if pd.api.types.is_datetime64_any_dtype(series.dtype) or (not target and reads_as_numbers(series)):
        return []
    text = present.astype(str)
    if target or text.nunique() <= roles.max_categories:
        return [set_expectation(column, text, label=target)]
    return []


def _whole(value: Any) -> Any:
    """1.0 as 1: a label column with gaps reads as floats."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return value


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
