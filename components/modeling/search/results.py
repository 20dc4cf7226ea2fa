"""What a search returns: each trial's cross-validated score, and the chosen one."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd


class SearchError(ValueError):
    """The search could not produce a usable trial (every trial failed)."""


@dataclass(frozen=True)
class TrialResult:
    """One parameter set's cross-validated score; a failed fit has `error` set and the worst score."""

    number: int
    params: dict[str, Any]
    score: float
    score_std: float
    fold_scores: tuple[float, ...]
    train_score: float
    fit_seconds: float
    error: str | None = None
    stage: Literal["search", "final"] = "search"  # final: a finalist scored again on fresh folds

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: infinite and NaN scores (failed trials) become None."""
        data = asdict(self)
        data["params"] = {name: _json_value(value) for name, value in self.params.items()}
        for name in ("score", "score_std", "train_score", "fit_seconds"):
            data[name] = _json_float(data[name])
        data["fold_scores"] = [_json_float(value) for value in self.fold_scores]
        return data


@dataclass(frozen=True)
class SearchResult:
    """Every trial in the order it was asked, and the best one (ties go to the earlier trial)."""

    method: str
    metric: str
    best: TrialResult
    trials: tuple[TrialResult, ...]
    rows_used: int

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.best.params)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "metric": self.metric,
            "rows_used": self.rows_used,
            "best_params": {name: _json_value(value) for name, value in self.best.params.items()},
            "best": self.best.as_dict(),
            "trials": [trial.as_dict() for trial in self.trials],
        }


ModelFactory = Callable[[dict[str, Any]], Any]
BatchEvaluator = Callable[[list[tuple[int, dict[str, Any]]]], list[TrialResult]]


class Sample(NamedTuple):
    """The rows a search runs on."""

    X: pd.DataFrame
    y: pd.Series


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _json_float(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return str(value)
