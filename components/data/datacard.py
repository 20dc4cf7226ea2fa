"""What the data was: a content fingerprint and a short data card."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """A content hash of columns, dtypes and values; equal data gives an equal fingerprint."""
    digest = hashlib.sha256()
    digest.update("|".join(f"{c}:{frame[c].dtype}" for c in frame.columns).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def time_range(frame: pd.DataFrame, time_column: str | None) -> list[str] | None:
    """[earliest, latest] event time, when the frame has a time column."""
    if not time_column or time_column not in frame.columns or not len(frame):
        return None
    times = pd.to_datetime(frame[time_column], errors="coerce")
    return [str(times.min()), str(times.max())]


def _number(value: Any) -> float | None:
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


def column_summary(frame: pd.DataFrame, top: int = 10) -> dict[str, dict[str, Any]]:
    """Per-column statistics: type, nulls, distinct count; quantiles for numbers, top values otherwise."""
    summary: dict[str, dict[str, Any]] = {}
    for column in frame.columns:
        series = frame[column]
        entry: dict[str, Any] = {
            "dtype": str(series.dtype),
            "null_rate": round(float(series.isna().mean()), 6),
            "distinct": int(series.nunique(dropna=True)),
        }
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
            values = series.astype("float64")
            finite = values[np.isfinite(values)]
            entry["non_finite"] = int(values.notna().sum() - len(finite))
            if len(finite):
                q = finite.quantile([0.01, 0.25, 0.5, 0.75, 0.99])
                entry.update(
                    mean=_number(finite.mean()),
                    std=_number(finite.std()),
                    min=_number(finite.min()),
                    p01=_number(q[0.01]),
                    p25=_number(q[0.25]),
                    median=_number(q[0.5]),
                    p75=_number(q[0.75]),
                    p99=_number(q[0.99]),
                    max=_number(finite.max()),
                )
        elif not pd.api.types.is_datetime64_any_dtype(series.dtype):
            counts = series.astype("string").value_counts(dropna=True).head(top)
            entry["top_values"] = {str(k): int(v) for k, v in counts.items()}
        summary[str(column)] = entry
    return summary


def data_card(
    frame: pd.DataFrame,
    *,
    source: str,
    rows_before_curation: int,
    time_column: str | None,
    assumptions: Sequence[str],
    curation: dict[str, Any],
) -> dict[str, Any]:
    """The card every run logs: where the data came from, what curation did, what it looks like."""
    return {
        "source": source,
        "rows_before_curation": rows_before_curation,
        "rows_after_curation": len(frame),
        "fingerprint": fingerprint_frame(frame),
        "time_range": time_range(frame, time_column),
        "columns": len(frame.columns),
        "curation": curation,
        "assumptions": list(assumptions),
        "column_summary": column_summary(frame),
    }
