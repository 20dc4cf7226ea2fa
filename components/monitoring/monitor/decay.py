"""Performance decay: the model's metric on labelled window rows against its held-out score at training."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import MonitoringConfig
from components.data.extract import ExtractionError, read_batches
from components.monitoring.monitor.reference import MonitoringError

UNIT_METRICS = frozenset({"rmse", "mae"})  # in the target's units: tolerances are shares of the baseline


@dataclass(frozen=True)
class Decay:
    metric: str
    baseline: float
    current: float
    drop: float  # positive: worse than at training
    decayed: bool
    rows: int
    accuracy: float | None = None
    noise: float = 0.0  # the drop a chance difference would reach (one-sided 95%)
    estimated: bool = False  # from the model's probabilities, without labels (estimate.py)


def measure_decay(
    metric: str,
    baseline: float,
    current: float,
    rows: int,
    config: MonitoringConfig,
    *,
    higher_is_better: bool = True,
    accuracy: float | None = None,
    current_se: float = 0.0,
    baseline_rows: int | None = None,
) -> Decay:
    """The metric's drop since training; decayed when it passes the tolerance and sampling noise.

    `current_se` is the window metric's standard error (bootstrap); the baseline, measured on
    `baseline_rows` held-out rows, is taken to be as noisy per row, so a small test split does not
    make every window look decayed. Errors in the target's units (RMSE, MAE) take the tolerance as a
    share of the baseline, so it means the same whatever the target measures.
    """
    baseline, current = float(baseline), float(current)
    drop = (baseline - current) if higher_is_better else (current - baseline)
    baseline_se = current_se * float(np.sqrt(rows / baseline_rows)) if baseline_rows else 0.0
    noise = 1.645 * float(np.hypot(current_se, baseline_se))
    tolerance = config.decay_tolerance * abs(baseline) if metric in UNIT_METRICS else config.decay_tolerance
    return Decay(metric, baseline, current, drop, bool(drop > max(tolerance, noise)), rows, accuracy, noise)


def bootstrap_se(score: Callable[[np.ndarray], float | None], rows: int, seed: int, samples: int = 200) -> float:
    """Standard error of `score(indices)` over bootstrap resamples of `rows` rows."""
    rng = np.random.default_rng(seed)
    values = [score(rng.integers(0, rows, rows)) for _ in range(samples)]
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


# How a label-queue row was chosen: the informative ones (where the model was unsure) are not a
# sample of what was served, so the realized metric leaves them out; the random ones are kept.
SELECTION, INFORMATIVE, RANDOM, WEIGHTED = "_selection", "informative", "random", "weighted"


def read_labels(
    sources: Sequence[str], id_column: str | None, target: str, *, required: bool = False, weighted: bool = False
) -> pd.DataFrame | None:
    """The id and target columns of every label file at `sources` (files, folders or globs), as one
    frame; None when none has arrived (an error instead when `required`, e.g. a file named by hand).
    Labels the queue asked for because the model was unsure are left out: on them every model looks
    worse than on what it serves (they train the next model instead), and so are those a rollout's
    queue drew with unequal probabilities, unless `weighted` (then they stay, with the `_selection`
    column that tells them apart: the online test weights them, see `components.monitoring.sampling`)."""
    frames = []
    for source in sources:
        try:
            batches = read_batches(source)
        except ExtractionError:
            if required:
                raise
            continue  # labels that have not arrived yet are no error
        for batch in batches:
            if batch.frame is None:
                raise MonitoringError(f"labels: {batch.error}")
            missing = [c for c in (id_column, target) if c is not None and c not in batch.frame.columns]
            if missing:
                raise MonitoringError(f"labels: {batch.name} lacks {missing}; its columns: {list(batch.frame.columns)}")
            kept = [c for c in (id_column, target, SELECTION) if c is not None and c in batch.frame.columns]
            frames.append(batch.frame[kept])
    if not frames:
        if required:
            raise MonitoringError(f"no label file in {', '.join(sources)}")
        return None
    if id_column is None:
        raise MonitoringError("labels are joined on the id column: set data.id_column")
    labels = pd.concat(frames, ignore_index=True)
    if SELECTION in labels.columns:
        labels = labels[labels[SELECTION] != INFORMATIVE]
        if not weighted:
            labels = labels[labels[SELECTION] != WEIGHTED].drop(columns=SELECTION)
    return labels


def join_labels(frame: pd.DataFrame, labels: pd.DataFrame, id_column: str, target: str) -> pd.Series:
    """The label of each row of `frame` (None where none arrived), joined on `id_column`."""
    for name, table in (("the window", frame), ("the labels", labels)):
        if id_column not in table.columns:
            raise MonitoringError(f"{name} lack(s) the id column {id_column!r}")
    if target not in labels.columns:
        raise MonitoringError(f"the labels lack the target column {target!r}; columns are {list(labels.columns)}")
    known = labels[[id_column, target]].dropna(subset=[target])
    duplicated = known[id_column].duplicated(keep=False)
    if duplicated.any():
        conflicting = known[duplicated].groupby(id_column)[target].nunique()
        if (conflicting > 1).any():
            raise MonitoringError(
                f"{int((conflicting > 1).sum())} id(s) carry different labels, "
                f"e.g. {conflicting[conflicting > 1].index[0]!r}"
            )
        known = known.drop_duplicates(subset=[id_column])
    ids, label_ids = frame[id_column], known[id_column]
    if ids.dtype != label_ids.dtype or ids.dtype == object:  # e.g. some ids logged as text (one was a string)
        ids, label_ids = _text_ids(ids), _text_ids(label_ids)
    mapping = pd.Series(known[target].to_numpy(), index=label_ids.to_numpy())
    return ids.map(mapping)


def _text_ids(values: pd.Series) -> pd.Series:
    """Ids as text, so that 12, 12.0 and "12" are the same id."""

    def text(value: Any) -> Any:
        if value is None or value is pd.NA or (isinstance(value, float) and value != value):
            return None
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return pd.Series([text(v) for v in values], index=values.index, dtype=object)
