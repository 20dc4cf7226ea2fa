"""Curation, between validation and preparation: duplicates out, outliers found, nothing silent.

Missing values are not curated here: they are imputed inside the model pipeline, fitted on
training rows only. Outliers are reported by default; `cap` clips numeric features to IQR
fences inside the model (so serving clips the same way) and `drop` removes the training rows
an IsolationForest flags (test rows are never dropped: evaluation stays honest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DedupSummary:
    rows_in: int
    exact_duplicates: int
    duplicate_ids: int
    rows_out: int
    kept_repeats: int = 0  # exact duplicates kept: too common to be copies (see `deduplicate`)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def deduplicate(
    frame: pd.DataFrame, id_column: str | None = None, max_share: float = 1.0
) -> tuple[pd.DataFrame, DedupSummary]:
    """Drop exact duplicate rows, then rows repeating an id (the first occurrence is kept).

    Without an id column, exact duplicates are copies only while they are rare: when more than
    `max_share` of the rows take part in one, the table repeats rows by nature (few, coarse columns:
    two passengers of the same class, sex and age) and they are kept.
    """
    rows_in = len(frame)
    exact = frame.duplicated(keep="first")
    kept_repeats = 0
    if id_column is None and float(frame.duplicated(keep=False).mean()) > max_share:
        kept_repeats = int(exact.sum())
        exact = pd.Series(False, index=frame.index)
    kept = frame.loc[~exact]
    repeated_ids = 0
    if id_column is not None and id_column in kept.columns:
        repeated = kept[id_column].duplicated(keep="first") & kept[id_column].notna()
        repeated_ids = int(repeated.sum())
        kept = kept.loc[~repeated]
    kept = kept.reset_index(drop=True)
    return kept, DedupSummary(rows_in, int(exact.sum()), repeated_ids, len(kept), kept_repeats)


def iqr_fences(frame: pd.DataFrame, columns: Sequence[str], factor: float) -> dict[str, tuple[float, float]]:
    """[q1 - k*IQR, q3 + k*IQR] per numeric column, from the non-missing finite values.

    Columns whose IQR is zero (counts that are mostly 0, near-constant flags) get no fences:
    every non-modal value would count as an outlier, and capping would erase the feature.
    """
    fences = {}
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        values = values[np.isfinite(values)]
        if values.empty:
            continue
        q1, q3 = (float(v) for v in values.quantile([0.25, 0.75]))
        iqr = q3 - q1
        if iqr <= 0:
            continue
        fences[column] = (q1 - factor * iqr, q3 + factor * iqr)
    return fences


def isolation_scores(
    frame: pd.DataFrame, columns: Sequence[str], contamination: float, seed: int, max_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """IsolationForest on the numeric features (median-imputed): (is_outlier mask, anomaly score).

    Fitted on a seeded sample of at most `max_rows` rows, scored on every row; a higher score
    is more anomalous.
    """
    from sklearn.ensemble import IsolationForest

    X = frame.loc[:, list(columns)].apply(pd.to_numeric, errors="coerce").astype("float64")
    X = X.replace([np.inf, -np.inf], np.nan)
    X = X.fillna(X.median()).fillna(0.0)
    sample = X.sample(n=max_rows, random_state=seed) if len(X) > max_rows else X
    forest = IsolationForest(contamination=contamination, random_state=seed, n_estimators=100, n_jobs=1)
    forest.fit(sample.to_numpy())
    values = X.to_numpy()
    return forest.predict(values) == -1, -forest.score_samples(values)


def outlier_report(
    frame: pd.DataFrame,
    columns: Sequence[str],
    *,
    iqr_factor: float,
    contamination: float,
    seed: int,
    max_rows: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """Per-feature counts beyond the IQR fences plus the IsolationForest verdict per row."""
    fences = iqr_fences(frame, columns, iqr_factor)
    per_feature: dict[str, Any] = {}
    for column, (low, high) in fences.items():
        values = pd.to_numeric(frame[column], errors="coerce")
        below, above = int((values < low).sum()), int((values > high).sum())
        per_feature[column] = {
            "low_fence": low,
            "high_fence": high,
            "below": below,
            "above": above,
            "share": round((below + above) / max(len(frame), 1), 6),
        }
    mask = np.zeros(len(frame), dtype=bool)
    forest: dict[str, Any] = {"flagged": 0, "share": 0.0}
    if columns and len(frame) >= 10:
        mask, scores = isolation_scores(frame, columns, contamination, seed, max_rows)
        forest = {
            "flagged": int(mask.sum()),
            "share": round(float(mask.mean()), 6),
            "contamination": contamination,
            "max_score": round(float(scores.max()), 6),
        }
    report = {"iqr_factor": iqr_factor, "features": per_feature, "isolation_forest": forest}
    return report, mask
