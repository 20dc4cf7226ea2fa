"""One prediction path for online serving and batch scoring, so their answers never differ."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from components.inference.inputs import InputError, Inputs, inputs_from_frame, inputs_from_records

if TYPE_CHECKING:
    from components.inference.compiled import InferencePath
    from components.modeling.promotion import ServingCheck

logger = logging.getLogger(__name__)

__all__ = ["InputError", "Inputs", "ModelSchema", "Predictions", "ServingModel", "coerce_rows", "predict_frame"]


@dataclass(frozen=True)
class ModelSchema:
    """The columns a fitted pipeline expects, split by kind."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @classmethod
    def of(cls, model: Any) -> ModelSchema:
        """Read the column kinds from the pipeline's fitted ColumnTransformer."""
        preprocess = pipeline_of(model).named_steps["preprocess"]
        kinds: dict[str, tuple[str, ...]] = {}
        for name, _, columns in preprocess.transformers_:
            if name in ("numeric", "categorical"):
                kinds[name] = tuple(columns)
        return cls(kinds.get("numeric", ()), kinds.get("categorical", ()))


def model_layers(model: Any) -> list[Any]:
    """The model and each wrapper inside it (decision threshold, frozen, recalibrated), outermost
    first, down to the preprocessing + estimator Pipeline or an ensemble of them."""
    from sklearn.pipeline import Pipeline

    found = [model]
    while not (isinstance(model, Pipeline) or hasattr(model, "estimators_")):
        if hasattr(model, "calibrated_classifiers_"):
            model = model.calibrated_classifiers_[0].estimator
        elif hasattr(model, "estimator_"):
            model = model.estimator_
        elif hasattr(model, "estimator"):  # FrozenEstimator
            model = model.estimator
        else:
            raise InputError(f"{type(model).__name__} holds no preprocessing + estimator Pipeline")
        found.append(model)
    return found


def pipeline_of(model: Any) -> Any:
    """The preprocessing + estimator Pipeline inside any wrappers (an ensemble's first member: its
    members share the columns)."""
    inner = model_layers(model)[-1]
    return inner.estimators_[0] if hasattr(inner, "estimators_") else inner


def decision_threshold(model: Any) -> float | None:
    """The tuned probability cut-off a binary model predicts the positive class at, if any."""
    threshold = getattr(model, "threshold", None)
    return float(threshold) if isinstance(threshold, (int, float)) else None


def coerce_rows(frame: pd.DataFrame, schema: ModelSchema) -> pd.DataFrame:
    """The model's columns, in order, with numbers as float and categories as objects.

    Raises InputError naming every missing column and every value that is not a number.
    """
    return inputs_from_frame(frame, schema.numeric, schema.categorical).frame()


MODEL_METADATA_KEY = "mlops"  # in the MLmodel file's `metadata`: task, interval, calibration


@dataclass(frozen=True)
class Predictions:
    """One answer per row: a label and its probability (classes) or a number and its interval."""

    labels: list[Any]
    probabilities: list[float]  # binary: the positive class's; multiclass: the predicted class's; regression: []
    classes: list[Any]
    class_probabilities: list[list[float]] | None = None  # multiclass: every class's, in `classes` order
    lower: list[float] | None = None  # regression with an interval
    upper: list[float] | None = None

    @property
    def finite(self) -> bool:
        """Whether every number in the answer is finite (an input can overflow a model)."""
        values = self.probabilities if self.classes else self.labels
        return bool(np.isfinite(np.asarray(values, dtype="float64")).all())


def _plain_labels(values: np.ndarray) -> list[Any]:
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def predict_frame(
    model: Any, frame: pd.DataFrame, schema: ModelSchema | None = None, half_width: float | None = None
) -> Predictions:
    """Predicted labels and probabilities, or numbers and their intervals.

    The probability is that of the positive class (the second of two classes) for binary
    targets, and that of the predicted class for multiclass targets (every class's is in
    `class_probabilities`). A binary label is the positive class when its probability reaches
    the model's tuned decision threshold. A regression model answers numbers, with
    prediction ± `half_width` as the interval when one is given.
    """
    return predict_coerced(model, coerce_rows(frame, schema or ModelSchema.of(model)), half_width)


def predict_coerced(model: Any, X: pd.DataFrame, half_width: float | None = None) -> Predictions:
    """`predict_frame` on rows `coerce_rows` already checked, through the scikit-learn pipeline."""
    method = "predict_proba" if hasattr(model, "classes_") else "predict"
    return answer_of(model, getattr(model, method)(X), half_width)


@dataclass(frozen=True)
class AnswerArrays:
    """`Predictions` as arrays, for batch scoring (the lists are for JSON answers)."""

    labels: np.ndarray
    probabilities: np.ndarray | None  # None for regression
    classes: list[Any]
    class_probabilities: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None


def answer_arrays(model: Any, output: np.ndarray, half_width: float | None = None) -> AnswerArrays:
    """The answer from the model's output (class probabilities, or predictions) as arrays."""
    classes_ = getattr(model, "classes_", None)
    if classes_ is None:
        predicted = np.asarray(output, dtype="float64")
        if half_width is None:
            return AnswerArrays(predicted, None, [])
        return AnswerArrays(predicted, None, [], None, predicted - half_width, predicted + half_width)
    proba = np.asarray(output)
    classes = np.asarray(classes_)
    threshold = decision_threshold(model)
    if len(classes) == 2:
        labels = classes[(proba[:, 1] >= (0.5 if threshold is None else threshold)).astype(int)]
        return AnswerArrays(labels, proba[:, 1], _plain_labels(classes))
    winner = proba.argmax(axis=1)
    return AnswerArrays(classes[winner], proba[np.arange(len(proba)), winner], _plain_labels(classes), proba)


def answer_of(model: Any, output: np.ndarray, half_width: float | None = None) -> Predictions:
    """The answer from the model's output: class probabilities (classifiers) or predictions."""
    a = answer_arrays(model, output, half_width)
    return Predictions(
        a.labels.tolist(),
        a.probabilities.tolist() if a.probabilities is not None else [],
        a.classes,
        a.class_probabilities.tolist() if a.class_probabilities is not None else None,
        a.lower.tolist() if a.lower is not None else None,
        a.upper.tolist() if a.upper is not None else None,
    )


def predict_records(
    model: Any, rows: Sequence[Mapping[str, Any]], schema: ModelSchema | None = None, half_width: float | None = None
) -> Predictions:
    """Score JSON-like rows (a list of column -> value mappings)."""
    if not rows:
        raise InputError("no rows to score")
    return predict_frame(model, pd.DataFrame.from_records(list(rows)), schema, half_width)


@dataclass(frozen=True)
class ServingModel:
    """A registered model as the service holds it: the fitted model, its input schema, what its
    answers carry (`info`: the MLmodel metadata the training flow wrote) and the path that answers
    (`inference`: the compiled model when proven equivalent at load, else the pipeline)."""

    model: Any
    schema: ModelSchema
    info: Mapping[str, Any] = field(default_factory=dict)
    inference: InferencePath | None = None

    @property
    def task(self) -> str:
        if "task" in self.info:
            return str(self.info["task"])
        classes = getattr(self.model, "classes_", None)
        return "regression" if classes is None else "binary" if len(classes) == 2 else "multiclass"

    @property
    def half_width(self) -> float | None:
        interval = self.info.get("interval") or {}
        return float(interval["half_width"]) if "half_width" in interval else None

    @property
    def coverage(self) -> float | None:
        interval = self.info.get("interval") or {}
        return float(interval["coverage"]) if "coverage" in interval else None

    def output(self, inputs: Inputs, threads: int = 1) -> np.ndarray:
        """Class probabilities or predictions: through the compiled path when it was proven for this
        model, else the pipeline (and for rows with an infinite number, which the pipeline's own
        checks refuse). `threads`: what a forest may use on a large batch."""
        compiled = self.inference.compiled if self.inference is not None else None
        if compiled is not None and inputs.finite():
            return compiled.output(inputs, threads=threads)
        X = inputs.frame()
        return self.model.predict_proba(X) if hasattr(self.model, "classes_") else self.model.predict(X)

    def predict_inputs(self, inputs: Inputs, half_width: float | None = None) -> Predictions:
        """The answer to checked rows (`half_width` overrides the model's interval)."""
        return answer_of(self.model, self.output(inputs), self.half_width if half_width is None else half_width)

    def predict_arrays(self, inputs: Inputs, half_width: float | None = None, threads: int = 1) -> AnswerArrays:
        """`predict_inputs` as arrays, for batch scoring."""
        hw = self.half_width if half_width is None else half_width
        return answer_arrays(self.model, self.output(inputs, threads), hw)

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> Predictions:
        if not rows:
            raise InputError("no rows to score")
        return self.predict_inputs(inputs_from_records(rows, self.schema.numeric, self.schema.categorical))

    def predict_frame(self, frame: pd.DataFrame) -> Predictions:
        return self.predict_inputs(inputs_from_frame(frame, self.schema.numeric, self.schema.categorical))


def read_model_info(model_uri: str) -> dict[str, Any]:
    """The training flow's notes in a logged model's MLmodel file (task, interval, calibration)."""
    from mlflow.models import Model

    path = Path(model_uri)
    meta = Model.load(str(path if path.is_dir() else model_uri)).metadata or {}
    return dict(meta.get(MODEL_METADATA_KEY) or {})


def reference_rows(folder: Path) -> pd.DataFrame | None:
    """The rows logged with the model (its input example), or None when it has none."""
    from mlflow.models import Model

    try:
        example = Model.load(str(folder)).load_input_example(str(folder))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("%s: its input example is unreadable (%s); checking on edge cases only", folder, exc)
        return None
    return example if isinstance(example, pd.DataFrame) else None


def local_model_folder(model_uri: str) -> Path:
    """A local folder of the logged model (downloaded when the URI is not one)."""
    folder = Path(model_uri)
    if (folder / "MLmodel").is_file():
        return folder
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(artifact_uri=model_uri))


def load_serving_model(model_uri: str, compiled: bool = True) -> ServingModel:
    """The one loading path of the service, batch scoring and the gate's serving check: the model,
    compiled and checked against its pipeline (`compiled=False`: the pipeline only)."""
    from components.inference.compiled import InferencePath, prepare_path
    from components.tracking.registry import load_model_folder

    folder = local_model_folder(model_uri)
    model = load_model_folder(folder, model_uri)
    schema = ModelSchema.of(model)
    if compiled:
        path = prepare_path(model, schema.numeric, schema.categorical, reference_rows(folder))
    else:
        path = InferencePath(None, "compiled path turned off")
    if path.compiled is None:
        logger.warning("%s answers through the scikit-learn pipeline: %s", model_uri, path.reason)
    else:
        assert path.equivalence is not None
        logger.info(
            "%s answers through its compiled form (checked on %d rows, largest difference %.2g)",
            model_uri,
            path.equivalence.rows,
            path.equivalence.max_difference,
        )
    return ServingModel(model, schema, read_model_info(str(folder)), path)


def serving_model_of(model: Any, info: Mapping[str, Any] | None = None) -> ServingModel:
    """A fitted model (not loaded from a model folder) as the service would hold it, compiled and checked."""
    from components.inference.compiled import prepare_path

    schema = ModelSchema.of(model)
    return ServingModel(model, schema, dict(info or {}), prepare_path(model, schema.numeric, schema.categorical))


def measure_serving(model_uri: str, rows: Sequence[Mapping[str, Any]], calls: int = 5) -> ServingCheck:
    """Load the model as the service does and time its answer to `rows` (median of `calls`, after one)."""
    import time

    from threadpoolctl import threadpool_limits

    from components.modeling.promotion import ServingCheck

    try:
        served = load_serving_model(model_uri)
        # One thread, as the service runs (OMP_NUM_THREADS=1): thread pools make small requests stall.
        with threadpool_limits(limits=1):
            served.predict(rows)  # first call: lazy initialisation is not what a request pays
            timings = []
            for _ in range(calls):
                started = time.perf_counter()
                answer = served.predict(rows)
                timings.append((time.perf_counter() - started) * 1000)
    except Exception as exc:  # noqa: BLE001 - any failure here means the service could not serve it
        return ServingCheck(False, None, f"{type(exc).__name__}: {exc}")
    if len(answer.labels) != len(rows) or not answer.finite:
        return ServingCheck(False, None, "answered with missing or non-finite predictions")
    inference = served.inference
    path = "pipeline" if inference is None else inference.name
    reason = f" ({inference.reason})" if inference is not None and inference.reason else ""
    return ServingCheck(True, float(np.median(timings)), f"{len(rows)} row(s) through the {path}{reason}", path)
