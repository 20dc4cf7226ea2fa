"""Proof, at load, that a compiled model answers as its scikit-learn pipeline does.

The probe rows are the model's reference rows (the rows logged with it), then each of them with
one value changed to an edge case: a missing value, each clip bound, large magnitudes, the
imputed value, values on and just beside the trees' split points (where float32 rounding would
show), every known category, a missing one, an empty one and one never seen. Both compiled
modes (trees walked as arrays, in small calls; the estimator's own loops, in one call) must give
every label the pipeline gives and every probability or prediction within `TOLERANCE`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from components.inference.compiled.model import Boosting, CompiledModel, CompiledPipeline, Forest, Node
from components.inference.compiled.preprocess import UNSEEN, Impute, Scale
from components.inference.inputs import Inputs, inputs_from_frame

TOLERANCE = 1e-6  # on a probability; on a prediction, relative to its magnitude when above 1
EXTREMES = (0.0, -1.0, 1.0, -1e12, 1e12)
THRESHOLDS_PER_COLUMN = 24
MAX_PROBE_ROWS = 6000
SMALL_CALL_ROWS = 16  # the walked mode is checked in calls this small (one-hot lookups by dictionary)


@dataclass(frozen=True)
class Equivalence:
    """The outcome of one check: `ok` when both compiled modes matched on every probe row."""

    ok: bool
    rows: int
    max_difference: float
    label_differences: int
    seconds: float
    reason: str | None = None


def _pipelines(node: Node) -> list[CompiledPipeline]:
    if isinstance(node, CompiledPipeline):
        return [node]
    members: Sequence[Any] = getattr(node, "members", ())
    found = []
    for member in members:
        found += _pipelines(getattr(member, "estimator", member))
    return found


def _split_points(pipeline: CompiledPipeline, numeric: int) -> dict[int, np.ndarray]:
    """Each numeric input column's tree split points, mapped back through scaling to input values."""
    estimator = pipeline.estimator
    if not isinstance(estimator, (Forest, Boosting)):
        return {}
    steps = pipeline.preprocess.numeric_steps
    impute = next((s for s in steps if isinstance(s, Impute)), None)
    scale = next((s for s in steps if isinstance(s, Scale)), None)
    kept = np.arange(numeric) if impute is None or impute.kept is None else impute.kept
    flat = estimator.flat
    points: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for output, column in enumerate(kept):
        values = flat.split_points(output)
        if not len(values):
            continue
        if len(values) > THRESHOLDS_PER_COLUMN:
            values = rng.choice(values, THRESHOLDS_PER_COLUMN, replace=False)
        if scale is not None:
            values = values * (1.0 if scale.scale is None else scale.scale[output])
            values = values + (0.0 if scale.mean is None else scale.mean[output])
        source = int(pipeline.preprocess.numeric_columns[column])
        points[source] = np.concatenate([values, np.nextafter(values, np.inf), np.nextafter(values, -np.inf)])
    return points


def _numeric_probes(compiled: CompiledModel, numeric: Sequence[str]) -> dict[int, list[float]]:
    probes: dict[int, list[float]] = {j: [np.nan, *EXTREMES] for j in range(len(numeric))}
    for pipeline in _pipelines(compiled.root):
        for step in pipeline.preprocess.numeric_steps:
            bounds = [getattr(step, "low", None), getattr(step, "high", None), getattr(step, "statistics", None)]
            for values in bounds:
                if values is None:
                    continue
                columns = pipeline.preprocess.numeric_columns
                if isinstance(step, Impute) and step.kept is not None:
                    columns = columns[step.kept]
                for column, value in zip(columns, np.broadcast_to(values, (len(columns),)), strict=True):
                    if np.isfinite(value):
                        probes[int(column)].append(float(value))
        for column, points in _split_points(pipeline, len(pipeline.preprocess.numeric_columns)).items():
            probes[column].extend(points.tolist())
    return probes


def _category_probes(compiled: CompiledModel, categorical: Sequence[str]) -> dict[int, list[Any]]:
    probes: dict[int, list[Any]] = {j: [None, "", UNSEEN + "probe"] for j in range(len(categorical))}
    for pipeline in _pipelines(compiled.root):
        for column, mapping in zip(pipeline.preprocess.categorical_columns, pipeline.preprocess.one_hot, strict=True):
            probes[column].extend(k for k in mapping.lookup if k is not None and k not in probes[column])
    return probes


def probe_rows(
    compiled: CompiledModel, numeric: Sequence[str], categorical: Sequence[str], reference: pd.DataFrame | None
) -> pd.DataFrame:
    """The reference rows, then one edge case per row in one column at a time."""
    columns = [*numeric, *categorical]
    if reference is not None and len(reference) and all(c in reference.columns for c in columns):
        base = reference[columns].reset_index(drop=True)
    else:
        base = pd.DataFrame({**{c: [np.nan] for c in numeric}, **{c: [None] for c in categorical}})
    data: dict[str, list[Any]] = {c: base[c].tolist() for c in columns}
    n = len(base)
    changes = [(numeric[j], v) for j, values in _numeric_probes(compiled, numeric).items() for v in values]
    changes += [(categorical[j], v) for j, values in _category_probes(compiled, categorical).items() for v in values]
    for i, (column, value) in enumerate(changes[: MAX_PROBE_ROWS - n]):
        source = i % n
        for name in columns:
            data[name].append(value if name == column else data[name][source])
    frame = pd.DataFrame({c: pd.Series(data[c], dtype="float64" if c in numeric else object) for c in columns})
    return frame


def _difference(expected: np.ndarray, got: np.ndarray, classifier: bool) -> float:
    expected, got = np.asarray(expected, dtype="float64"), np.asarray(got, dtype="float64")
    if expected.shape != got.shape:
        return np.inf
    both_nan = np.isnan(expected) & np.isnan(got)
    gap = np.where(both_nan, 0.0, np.abs(expected - got))
    if not classifier:
        gap = gap / np.maximum(1.0, np.abs(expected))
    gap = np.where(np.isnan(gap), np.inf, gap)
    return float(gap.max()) if gap.size else 0.0


def check_equivalence(
    model: Any,
    compiled: CompiledModel,
    numeric: Sequence[str],
    categorical: Sequence[str],
    reference: pd.DataFrame | None = None,
) -> Equivalence:
    """Compare both compiled modes with the pipeline on the probe rows."""
    from components.inference.scoring import answer_of

    started = time.perf_counter()
    frame = probe_rows(compiled, numeric, categorical, reference)
    inputs = inputs_from_frame(frame, numeric, categorical)
    method = "predict_proba" if compiled.classifier else "predict"
    expected = np.asarray(getattr(model, method)(inputs.frame()))
    labels = answer_of(model, expected).labels
    worst, label_differences = 0.0, 0
    for output in (_walked(compiled, inputs), compiled.output(inputs, walk=False)):
        worst = max(worst, _difference(expected, output, compiled.classifier))
        if compiled.classifier:  # a regression's labels are its predictions, compared above
            got = answer_of(model, output).labels
            label_differences += sum(a != b for a, b in zip(labels, got, strict=True))
    ok = worst <= TOLERANCE and label_differences == 0
    reason = None
    if not ok:
        reason = (
            f"compiled answers differ from the pipeline's on {len(frame)} probe rows: largest difference "
            f"{worst:.3g} (tolerance {TOLERANCE:g}), {label_differences} label(s) differ"
        )
    return Equivalence(ok, len(frame), worst, label_differences, time.perf_counter() - started, reason)


def _walked(compiled: CompiledModel, inputs: Inputs) -> np.ndarray:
    parts = []
    for start in range(0, len(inputs), SMALL_CALL_ROWS):
        rows = slice(start, start + SMALL_CALL_ROWS)
        part = Inputs(
            len(range(*rows.indices(len(inputs)))),
            inputs.numeric_names,
            inputs.numeric[rows],
            inputs.categorical_names,
            tuple(c[rows] for c in inputs.categorical),
        )
        parts.append(compiled.output(part, walk=True))
    return np.concatenate(parts)
