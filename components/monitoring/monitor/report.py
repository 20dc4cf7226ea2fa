"""The drift report: one window compared with the reference, feature by feature and on the scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from components.core.config import MonitoringConfig
from components.monitoring.monitor.decay import Decay
from components.monitoring.monitor.drift import (
    FeatureDrift,
    QualityIssue,
    ScoreDrift,
    categorical_drift,
    numeric_drift,
    quality_issues,
    score_drift,
)
from components.monitoring.monitor.reference import SCORE_COLUMN, MonitoringError

Verdict = Literal["stable", "watching", "retrain", "insufficient"]


@dataclass
class DriftReport:
    """One window compared with the reference; `verdict` is set by `decide`."""

    model_name: str
    model_version: str
    window: str
    created_at: str
    reference_rows: int
    current_rows: int
    features: list[FeatureDrift]
    score: ScoreDrift | None
    quality: list[QualityIssue]
    decay: Decay | None
    drift: bool
    drifted_features: list[str]
    thresholds: dict[str, Any]
    verdict: Verdict = "stable"
    reason: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    estimated: Decay | None = None  # the metric estimated without labels (classifiers: CBPE)

    def decayed(self, count_estimate: bool) -> bool | None:
        """Whether performance decayed: measured on labels, else (when allowed) estimated."""
        if self.decay is not None:
            return self.decay.decayed
        if count_estimate and self.estimated is not None:
            return self.estimated.decayed
        return None

    @property
    def drift_share(self) -> float:
        return len(self.drifted_features) / len(self.features) if self.features else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["drift_share"] = self.drift_share
        for feature in data["features"]:
            feature.pop("histogram", None)
        if data["score"]:
            data["score"].pop("histogram", None)
        return _finite(data)


def _finite(value: Any) -> Any:
    """JSON has no NaN: such values become null."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    current_scores: np.ndarray | None,
    config: MonitoringConfig,
    model_name: str,
    model_version: str,
    window: str,
    probabilities: bool = True,
) -> DriftReport:
    """Compare `current` with `reference` on the model's features (and scores, when both have them)."""
    missing = [c for c in (*numeric, *categorical) if c not in current.columns]
    if missing:
        raise MonitoringError(f"the window lacks the model's feature column(s) {missing}")
    absent = [c for c in (*numeric, *categorical) if c not in reference.columns]
    if absent:
        raise MonitoringError(f"the reference lacks column(s) {absent}; it was stored for another feature set")
    if len(current) == 0:
        raise MonitoringError("the window has no rows")
    features = [numeric_drift(c, reference[c], current[c], config) for c in numeric]
    features += [categorical_drift(c, reference[c], current[c], config) for c in categorical]
    score = None
    if current_scores is not None and SCORE_COLUMN in reference.columns:
        score = score_drift(reference[SCORE_COLUMN].to_numpy(), current_scores, config, probabilities)
    drifted = [f.name for f in features if f.drifted]
    share = len(drifted) / len(features) if features else 0.0
    drift = share >= config.drift_share or bool(score and score.drifted)
    return DriftReport(
        model_name=model_name,
        model_version=model_version,
        window=window,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reference_rows=len(reference),
        current_rows=len(current),
        features=features,
        score=score,
        quality=quality_issues(features, config),
        decay=None,
        drift=drift,
        drifted_features=drifted,
        thresholds=config.model_dump(mode="json"),
    )
