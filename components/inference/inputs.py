"""Rows as a model reads them: numbers in one float64 matrix, categories as object arrays.

`inputs_from_frame` is the one check and conversion of rows to score (a service request, a batch
chunk, a monitoring window); the compiled path reads the arrays, the scikit-learn pipeline reads
`Inputs.frame()`, the frame `coerce_rows` always built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from components.core.errors import UserError
from components.modeling.prepare import MISSING_TOKENS, numbers_from_text


class InputError(UserError, ValueError):
    """Rows cannot be scored: missing columns or values of the wrong type."""


@dataclass(frozen=True)
class Inputs:
    """Checked rows: `numeric` is (rows, len(numeric_names)) float64 with NaN for missing;
    each of `categorical` is one column's values as objects with None for missing."""

    rows: int
    numeric_names: tuple[str, ...]
    numeric: np.ndarray
    categorical_names: tuple[str, ...]
    categorical: tuple[np.ndarray, ...]
    index: pd.Index | None = None
    # Per categorical column, where the reader had it dictionary-encoded (Arrow text in a batch):
    # (codes, distinct values), code -1 for missing; lets a column be matched once per distinct value.
    codes: tuple[tuple[np.ndarray, np.ndarray] | None, ...] = ()

    def __len__(self) -> int:
        return self.rows

    def columns(self) -> dict[str, np.ndarray]:
        """Each column's values under its name (numbers as views of the matrix)."""
        out: dict[str, np.ndarray] = {name: self.numeric[:, j] for j, name in enumerate(self.numeric_names)}
        out.update(zip(self.categorical_names, self.categorical, strict=True))
        return out

    def frame(self) -> pd.DataFrame:
        """The rows as the pipeline reads them, built in one DataFrame construction (per-column
        assignment costs ~0.3 ms a column in pandas)."""
        index = self.index if self.index is not None else pd.RangeIndex(self.rows)
        data: dict[str, Any] = {name: self.numeric[:, j] for j, name in enumerate(self.numeric_names)}
        for name, values in zip(self.categorical_names, self.categorical, strict=True):
            # An explicit object Series: pandas 3 would otherwise infer its own string dtype.
            data[name] = pd.Series(values, index=index, dtype=object, copy=False)
        return pd.DataFrame(data, index=index, columns=[*self.numeric_names, *self.categorical_names])

    def finite(self) -> bool:
        """No infinite number (NaN is a missing value, which the model imputes)."""
        return not np.isinf(self.numeric).any()


def concat_inputs(parts: Sequence[Inputs]) -> Inputs:
    """Several checked batches of the same columns as one (their indexes dropped)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return Inputs(
        sum(p.rows for p in parts),
        first.numeric_names,
        np.vstack([p.numeric for p in parts]),
        first.categorical_names,
        tuple(np.concatenate(column) for column in zip(*(p.categorical for p in parts), strict=True)),
    )


def _numbers(column: str, values: pd.Series, problems: list[str]) -> np.ndarray | None:
    if pd.api.types.is_bool_dtype(values.dtype) or not pd.api.types.is_numeric_dtype(values.dtype):
        converted = numbers_from_text(values, force=True)
        assert converted is not None
        bad = converted.isna() & values.notna() & ~values.astype(str).str.strip().str.lower().isin(MISSING_TOKENS)
        if pd.api.types.is_bool_dtype(values.dtype) or bad.any():
            example = values[bad].iloc[0] if bad.any() else values.iloc[0]
            problems.append(f"{column} must be a number, got {example!r}")
            return None
        values = converted
    return values.to_numpy(dtype="float64", na_value=np.nan)


def _categories(column: str, values: pd.Series, problems: list[str]) -> np.ndarray | None:
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        nested = values.map(lambda v: isinstance(v, (dict, list, tuple, set)))
        if nested.any():
            problems.append(f"{column} must be a single value, got {values[nested].iloc[0]!r}")
            return None
    if isinstance(values.dtype, (pd.StringDtype, pd.ArrowDtype)):  # text read from Parquet or CSV: nulls known
        return values.to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]  # None is allowed
    categories = values.to_numpy(dtype=object, copy=True)
    categories[pd.isna(categories)] = None
    return categories


def text_codes(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow text array as (codes, distinct values as objects), code -1 where missing: built in
    Arrow, so each distinct value becomes a Python string once, not once a row."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(values)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
    return codes, encoded.dictionary.to_numpy(zero_copy_only=False).astype(object, copy=False)


def _decoded(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each row's value as an object (None where the code is -1), sharing the distinct values' objects."""
    table = np.empty(len(values) + 1, dtype=object)
    table[:-1] = values
    return table[codes]


def inputs_from_frame(
    frame: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    coded: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Inputs:
    """The model's columns with numbers as floats (text that reads as a number too) and categories
    as objects; raises InputError naming every missing column and every value that is not a number.
    `coded`: text columns given as `text_codes` instead of in `frame`."""
    coded = coded or {}
    missing = [c for c in (*numeric, *categorical) if c not in frame.columns and c not in coded]
    if missing:
        raise InputError(f"missing column(s): {', '.join(missing)}")
    problems: list[str] = []
    numbers = [_numbers(c, frame[c], problems) for c in numeric]
    categories = [_decoded(*coded[c]) if c in coded else _categories(c, frame[c], problems) for c in categorical]
    if problems:
        raise InputError("; ".join(problems))
    rows = len(frame)
    matrix = np.empty((rows, len(numbers)), dtype="float64")
    for j, values in enumerate(numbers):
        matrix[:, j] = values
    return Inputs(
        rows,
        tuple(numeric),
        matrix,
        tuple(categorical),
        tuple(c for c in categories if c is not None),
        frame.index,
        tuple(coded.get(c) for c in categorical) if coded else (),
    )


_NUMBER_TYPES = (float, int, type(None))  # exactly these: a bool is refused, like `inputs_from_frame` does
_CATEGORY_TYPES = (str, bool, int, float, type(None))  # scalars, kept as they are (NaN: None)


def inputs_from_records(
    rows: Sequence[Mapping[str, Any]], numeric: Sequence[str], categorical: Sequence[str]
) -> Inputs:
    """`inputs_from_frame` for JSON-like rows without building a DataFrame: numbers that are JSON
    numbers or null and categories that are text or null go straight into arrays (~20 µs a row
    instead of ~600 µs through pandas); anything else takes the frame's path and its checks."""
    try:
        numbers = [[row[c] for c in numeric] for row in rows]
        categories = [[row[c] for row in rows] for c in categorical]
    except KeyError:
        numbers = None
    if (
        numbers is None
        or not rows
        or any(type(v) not in _NUMBER_TYPES for values in numbers for v in values)
        or any(type(v) not in _CATEGORY_TYPES for values in categories for v in values)
    ):
        return inputs_from_frame(pd.DataFrame.from_records(list(rows)), numeric, categorical)
    matrix = np.array(numbers, dtype="float64").reshape(len(rows), len(numeric))  # None -> NaN
    columns = []
    for values in categories:
        column = np.empty(len(rows), dtype=object)
        column[:] = [None if v != v else v for v in values]  # NaN is missing, as the frame's path has it
        columns.append(column)
    return Inputs(len(rows), tuple(numeric), matrix, tuple(categorical), tuple(columns))
