"""What the data was: a content fingerprint and a short data card."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """A content hash of columns, dtypes and values; equal data gives an equal fingerprint."""
    digest = hashlib.sha256()
    digest.update("|".join(f"{c}:{frame[c].dtype}" for c in frame.columns).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def describe_frame(frame: pd.DataFrame, time_column: str | None = None) -> dict[str, Any]:
    """Row count, time range and per-column null rates: the minimum card every run logs."""
    card: dict[str, Any] = {
        "rows": len(frame),
        "columns": len(frame.columns),
        "fingerprint": fingerprint_frame(frame),
        "null_rate": {str(c): round(float(frame[c].isna().mean()), 4) for c in frame.columns},
    }
    if time_column and time_column in frame.columns and len(frame):
        times = pd.to_datetime(frame[time_column], errors="coerce")
        card["time_range"] = [str(times.min()), str(times.max())]
    return card
