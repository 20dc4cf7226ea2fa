"""The training reference a window is compared with: training rows and the model's scores on them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.core.errors import UserError

SCORE_COLUMN = "_score"
REFERENCE_ARTIFACT = "monitoring/reference.parquet"


class MonitoringError(UserError, ValueError):
    """The window cannot be compared with the reference (missing columns, no rows, no reference)."""


def build_reference(X: pd.DataFrame, scores: np.ndarray, rows: int, seed: int) -> pd.DataFrame:
    """A sample of training features with the model's scores on them (`SCORE_COLUMN`)."""
    frame = X.reset_index(drop=True).copy()
    frame[SCORE_COLUMN] = np.asarray(scores, dtype="float64")
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=seed).reset_index(drop=True)
    return frame
