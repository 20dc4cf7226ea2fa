"""Batch scoring's row checks: values cast to the contract's types and the row rules applied, per
chunk; what breaks them, and why."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.data.rows import find_problems
from components.inference.batch.plan import (
    ScoringPlan,
    _is_stringlike,
)
from components.modeling.prepare import MISSING_TOKENS, numbers_from_text


def _fallback_cast(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast value by value (vectorised in pandas): what cannot be read becomes null and is flagged."""
    raw = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
    present = raw.notna().to_numpy()
    if pa.types.is_boolean(target):
        words = raw.astype(str).str.strip().str.lower()
        mapped = words.map({"true": True, "false": False, "1": True, "0": False})
        bad = present & mapped.isna().to_numpy()
        return pa.array(mapped.where(~bad & present, None).tolist(), type=target), bad
    # Text that stands for a missing number ('?', 'n/a') is missing, as in training; '1,234' is a number.
    present = present & ~raw.astype(str).str.strip().str.lower().isin(MISSING_TOKENS).to_numpy()
    numbers = numbers_from_text(raw.where(present, None), force=True)
    assert numbers is not None
    floats = numbers.to_numpy(dtype="float64", na_value=np.nan)
    bad = present & np.isnan(floats)
    if pa.types.is_integer(target):
        fractional = ~np.isnan(floats) & (np.mod(floats, 1) != 0)
        bad |= fractional
        floats = np.where(fractional, np.nan, floats)
    return pa.array(floats, from_pandas=True).cast(target, safe=False), bad


def _typed(values: pa.Array, target: pa.DataType | None) -> tuple[pa.Array, np.ndarray | None]:
    """The column as `target` and a mask of the values that are not of that type (None: all are)."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if target is None or values.type == target:
        return values, None
    if not (_is_stringlike(values.type) or pa.types.is_null(values.type)):
        return pc.cast(values, target, safe=False), None
    try:
        return pc.cast(values, target), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _fallback_cast(values, target)


@dataclass(frozen=True)
class _Checked:
    arrays: dict[str, pa.Array]  # typed view of each used column
    invalid: np.ndarray | None  # rows breaking the contract (None: none do)
    reasons: list[str]  # one per invalid row, in row order


def _type_problem(target: pa.DataType | None) -> str:
    if target is not None and pa.types.is_integer(target):
        return "not an integer"
    if target is not None and pa.types.is_boolean(target):
        return "not true/false"
    return "not a number"


def _check_rows(plan: ScoringPlan, batch: pa.RecordBatch) -> _Checked:
    arrays: dict[str, pa.Array] = {}
    problems: list[tuple[np.ndarray, str, pa.Array | None]] = []
    unreadable: dict[str, np.ndarray] = {}
    for column, target in plan.casts.items():
        raw = batch.column(column)
        typed, bad = _typed(raw, target)
        arrays[column] = typed
        if bad is not None and bad.any():
            unreadable[column] = bad
            problems.append((bad, f"{column}: {_type_problem(target)}", raw))
    check = find_problems(plan.contract.rules, arrays, problems, unreadable)
    return _Checked(arrays, check.invalid, check.reasons)
