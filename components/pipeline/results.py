"""What each training step hands the next: named, frozen results."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import ModelConfig
from components.modeling.prepare import FeatureSpec, Split
from components.modeling.tasks import Task


@dataclass(frozen=True)
class TrainingResult:
    """What a training run did; `as_json` is the CLI's machine-readable last line."""

    run_id: str | None
    model_name: str
    model_version: str | None
    promoted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False
    would_promote: bool = False
    failed_checks: list[str] = field(default_factory=list)
    task: str | None = None
    metric: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # the contract's judgement and the rows set aside
    awaiting_approval: bool = False  # passed the gate; `mlops approve` makes it champion
    challenger: bool = False  # passed the gate; tried in shadow or canary before it may become champion

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Validated:
    """What the contract let through, how it judged it, and the rows it set aside (and where)."""

    frame: pd.DataFrame = field(repr=False)
    judgement: str
    why: str
    rows_set_aside: int = 0
    set_aside_in: tuple[str, ...] = ()
    drifted: dict[str, str] = field(default_factory=dict)  # batch -> why the contract judged it drift

    def summary(self) -> dict[str, Any]:
        return {
            "judgement": self.judgement,
            "why": self.why,
            "rows_set_aside": self.rows_set_aside,
            "set_aside_in": list(self.set_aside_in),
            "drifted_batches": self.drifted,
        }


@dataclass(frozen=True)
class Curated:
    """The curated rows, their feature roles, the data card's fingerprint and the outlier rows."""

    frame: pd.DataFrame = field(repr=False)
    spec: FeatureSpec
    fingerprint: str
    outlier_mask: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Prepared:
    """The held-out split, the task, and the outlier policy's clip bounds (policy `cap`)."""

    spec: FeatureSpec
    split: Split = field(repr=False)
    task: Task
    clip: dict[str, tuple[float, float]] | None = None


@dataclass(frozen=True)
class Selected:
    """The model configuration training will fit (one family, or an ensemble of several), and how it was chosen."""

    members: tuple[ModelConfig, ...]  # one family's config, or an ensemble's members
    validation_score: float | None  # cross-validated, on the training split
    train_score: float | None  # on the training folds
    train_gap: float | None  # how much better the training folds score than the held-out ones (overfitting)


@dataclass(frozen=True)
class Evaluation:
    """Held-out metrics beside the dummy baseline's, per slice, and the held-out answers."""

    metrics: dict[str, float]
    dummy: dict[str, float]
    slices: dict[str, float]
    train_gap: float | None
    output: np.ndarray = field(repr=False)  # the answers on the held-out rows, reused by the gate
