"""A fitted model compiled into array operations: the pipelines, estimators and wrappers the project
trains (linear models, random forests, histogram boosting; soft-voting ensembles; recalibrated
probabilities; a fixed decision threshold, which the answer applies from the outer model).

`compile_model` raises NotCompiled naming the first part it does not cover; the caller then
serves the scikit-learn pipeline.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from components.inference.compiled.errors import NotCompiled
from components.inference.compiled.preprocess import CompiledPreprocessor, compile_preprocessor
from components.inference.compiled.trees import WALK_MAX_ROWS, FlatForest, flatten_boosting, flatten_sklearn_forest
from components.inference.inputs import Inputs

PROBA, PREDICT, DECISION = "predict_proba", "predict", "decision_function"


class Estimator(Protocol):
    """A fitted estimator on the preprocessed matrix."""

    def output(self, X: np.ndarray, method: str, walk: bool) -> np.ndarray: ...

    def has(self, method: str) -> bool: ...


class Node(Protocol):
    """A fitted model part on checked rows."""

    def output(self, inputs: Inputs, method: str, walk: bool) -> np.ndarray: ...

    def has(self, method: str) -> bool: ...


@dataclass(frozen=True)
class Linear:
    """Logistic regression (binary: expit; multinomial: softmax) or a linear regressor."""

    coef: np.ndarray  # (outputs, width)
    intercept: np.ndarray
    kind: str  # binary | multinomial | regression

    def has(self, method: str) -> bool:
        return method == PREDICT if self.kind == "regression" else method in (PROBA, DECISION)

    def output(self, X: np.ndarray, method: str, walk: bool) -> np.ndarray:
        from scipy.special import expit
        from sklearn.utils.extmath import softmax

        scores = X @ self.coef.T + self.intercept
        if scores.shape[1] == 1:
            scores = scores.reshape(-1)
        if method != PROBA:
            return scores
        if self.kind == "binary":
            p = expit(scores)
            return np.stack([1 - p, p], axis=1)
        return softmax(scores, copy=False)


# Threads a forest's trees may be shared among on a large batch (set by CompiledModel.output).
_THREADS: ContextVar[int] = ContextVar("forest_threads", default=1)


@dataclass(frozen=True)
class Forest:
    """A random forest: the mean of its trees' leaves (class fractions or values)."""

    flat: FlatForest
    estimator: Any
    classifier: bool

    def has(self, method: str) -> bool:
        return method == (PROBA if self.classifier else PREDICT)

    def output(self, X: np.ndarray, method: str, walk: bool) -> np.ndarray:
        if not walk:
            estimator = self.estimator
            threads = _THREADS.get()
            if threads > 1:  # the same fitted trees, predicted by several threads (scikit-learn's own)
                estimator = copy.copy(estimator)
                estimator.n_jobs = threads
            return getattr(estimator, method)(X)
        mean = self.flat.total(X) / len(self.flat.roots)
        return mean if self.classifier else mean[:, 0]


@dataclass(frozen=True)
class Boosting:
    """Histogram gradient boosting: baseline plus the trees' values, through the model's own link."""

    flat: FlatForest
    estimator: Any
    classifier: bool

    def has(self, method: str) -> bool:
        return method in (PROBA, DECISION) if self.classifier else method == PREDICT

    def output(self, X: np.ndarray, method: str, walk: bool) -> np.ndarray:
        if not walk:
            return getattr(self.estimator, method)(X)
        raw = self.estimator._baseline_prediction + self.flat.total(X)
        if method == PROBA:
            return self.estimator._loss.predict_proba(raw)
        if method == DECISION:
            return raw.reshape(-1) if raw.shape[1] == 1 else raw
        return self.estimator._loss.link.inverse(raw.reshape(-1))


@dataclass(frozen=True)
class CompiledPipeline:
    preprocess: CompiledPreprocessor
    estimator: Estimator

    def has(self, method: str) -> bool:
        return self.estimator.has(method)

    def output(self, inputs: Inputs, method: str, walk: bool) -> np.ndarray:
        return self.estimator.output(self.preprocess.transform(inputs), method, walk)


@dataclass(frozen=True)
class Voting:
    """Soft voting (the weighted mean of members' probabilities) or the mean of predictions."""

    members: tuple[Node, ...]
    weights: np.ndarray | None
    classifier: bool

    def has(self, method: str) -> bool:
        return method == (PROBA if self.classifier else PREDICT)

    def output(self, inputs: Inputs, method: str, walk: bool) -> np.ndarray:
        answers = [m.output(inputs, method, walk) for m in self.members]
        if self.classifier:
            return np.average(np.asarray(answers), axis=0, weights=self.weights)
        return np.average(np.column_stack(answers), axis=1, weights=self.weights)


@dataclass(frozen=True)
class Calibrator:
    kind: str  # sigmoid | isotonic
    a: float = 0.0
    b: float = 0.0
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    low: float = -np.inf
    high: float = np.inf

    def apply(self, scores: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        if self.kind == "sigmoid":
            return expit(-(self.a * scores + self.b))
        assert self.x is not None and self.y is not None
        clipped = np.clip(scores, self.low, self.high)
        if len(self.x) == 1:
            return np.repeat(self.y[:1], len(scores))
        return np.interp(clipped, self.x, self.y)


def _calibrator(fitted: Any) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression

    if type(fitted).__name__ == "_SigmoidCalibration":
        return Calibrator("sigmoid", a=float(fitted.a_), b=float(fitted.b_))
    if isinstance(fitted, IsotonicRegression) and fitted.out_of_bounds == "clip":
        return Calibrator(
            "isotonic",
            x=np.asarray(fitted.X_thresholds_, dtype="float64"),
            y=np.asarray(fitted.y_thresholds_, dtype="float64"),
            low=float(fitted.X_min_),
            high=float(fitted.X_max_),
        )
    raise NotCompiled(f"calibrator {type(fitted).__name__} has no compiled form")


@dataclass(frozen=True)
class CalibratedMember:
    estimator: Node
    calibrators: tuple[Calibrator, ...]
    columns: tuple[int, ...]  # the class each calibrator's probability goes to


@dataclass(frozen=True)
class Calibrated:
    """CalibratedClassifierCV: each member's scores mapped by its per-class calibrators, normalised."""

    members: tuple[CalibratedMember, ...]
    classes: int

    def has(self, method: str) -> bool:
        return method == PROBA

    def output(self, inputs: Inputs, method: str, walk: bool) -> np.ndarray:
        total = np.zeros((len(inputs), self.classes))
        for member in self.members:
            total += self._member(member, inputs, walk)
        return total / len(self.members)

    def _member(self, member: CalibratedMember, inputs: Inputs, walk: bool) -> np.ndarray:
        response = DECISION if member.estimator.has(DECISION) else PROBA
        scores = member.estimator.output(inputs, response, walk)
        if response == PROBA and self.classes == 2:
            scores = scores[:, 1]
        scores = scores.reshape(len(inputs), -1)
        proba = np.zeros((len(inputs), self.classes))
        for column, values, calibrator in zip(member.columns, scores.T, member.calibrators, strict=True):
            proba[:, column] = calibrator.apply(values)
        if self.classes == 2:
            proba[:, 0] = 1.0 - proba[:, 1]
            return proba
        denominator = proba.sum(axis=1)[:, np.newaxis]
        uniform = np.full_like(proba, 1 / self.classes)
        return np.divide(proba, denominator, out=uniform, where=denominator != 0)


def _estimator(estimator: Any) -> Estimator:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    if isinstance(estimator, LogisticRegression):
        if getattr(estimator, "multi_class", "auto") == "ovr" and len(estimator.classes_) > 2:
            raise NotCompiled("one-vs-rest logistic regression")
        kind = "binary" if len(estimator.classes_) == 2 else "multinomial"
        return Linear(np.atleast_2d(estimator.coef_), np.atleast_1d(estimator.intercept_), kind)
    if isinstance(estimator, (Ridge, LinearRegression)):
        if np.ndim(estimator.coef_) != 1:
            raise NotCompiled("a linear model with several targets")
        return Linear(np.atleast_2d(estimator.coef_), np.atleast_1d(estimator.intercept_), "regression")
    if isinstance(estimator, (RandomForestClassifier, ExtraTreesClassifier)):
        return Forest(flatten_sklearn_forest(estimator), estimator, classifier=True)
    if isinstance(estimator, (RandomForestRegressor, ExtraTreesRegressor)):
        return Forest(flatten_sklearn_forest(estimator), estimator, classifier=False)
    if isinstance(estimator, HistGradientBoostingClassifier):
        return Boosting(flatten_boosting(estimator), estimator, classifier=True)
    if isinstance(estimator, HistGradientBoostingRegressor):
        return Boosting(flatten_boosting(estimator), estimator, classifier=False)
    raise NotCompiled(f"estimator {type(estimator).__name__} has no compiled form")


def _compile(model: Any, numeric: Sequence[str], categorical: Sequence[str]) -> Node:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import VotingClassifier, VotingRegressor
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import FixedThresholdClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import LabelEncoder

    if isinstance(model, FixedThresholdClassifier):  # the threshold is applied to the probabilities
        return _compile(model.estimator_, numeric, categorical)
    if isinstance(model, FrozenEstimator):
        return _compile(model.estimator, numeric, categorical)
    if isinstance(model, Pipeline):
        if len(model.steps) != 2:
            raise NotCompiled(f"a pipeline of {len(model.steps)} steps (preprocess + estimator compiles)")
        return CompiledPipeline(compile_preprocessor(model.steps[0][1], numeric, categorical), _estimator(model[-1]))
    if isinstance(model, (VotingClassifier, VotingRegressor)):
        classifier = isinstance(model, VotingClassifier)
        if classifier and model.voting != "soft":
            raise NotCompiled("hard voting")
        weights = model._weights_not_none
        voters = tuple(_compile(m, numeric, categorical) for m in model.estimators_)
        return Voting(voters, None if weights is None else np.asarray(weights, dtype="float64"), classifier)
    if isinstance(model, CalibratedClassifierCV):
        classes = np.asarray(model.classes_)
        members: list[CalibratedMember] = []
        for fitted in model.calibrated_classifiers_:
            if fitted.method not in ("sigmoid", "isotonic"):
                raise NotCompiled(f"calibration method {fitted.method!r}")
            columns = LabelEncoder().fit(classes).transform(fitted.estimator.classes_)
            if len(classes) == 2:  # one calibrator, for the positive class (as scikit-learn zips them)
                columns = columns[:1] + 1
            members.append(
                CalibratedMember(
                    _compile(fitted.estimator, numeric, categorical),
                    tuple(_calibrator(c) for c in fitted.calibrators),
                    tuple(int(c) for c in columns),
                )
            )
        return Calibrated(tuple(members), len(classes))
    raise NotCompiled(f"{type(model).__name__} has no compiled form")


@dataclass(frozen=True)
class CompiledModel:
    """The model's answer as array operations: class probabilities (classifiers) or predictions."""

    root: Node
    classifier: bool

    def output(self, inputs: Inputs, walk: bool | None = None, threads: int = 1) -> np.ndarray:
        """`walk`: trees walked as arrays (default: for up to WALK_MAX_ROWS rows) or by the estimator,
        a forest's trees shared among `threads` threads (batch scoring; the service uses one)."""
        walk = len(inputs) <= WALK_MAX_ROWS if walk is None else walk
        token = _THREADS.set(threads)
        try:
            return self.root.output(inputs, PROBA if self.classifier else PREDICT, walk)
        finally:
            _THREADS.reset(token)


def compile_model(model: Any, numeric: Sequence[str], categorical: Sequence[str]) -> CompiledModel:
    """The model compiled for rows with these numeric and categorical columns; raises NotCompiled."""
    return CompiledModel(_compile(model, numeric, categorical), hasattr(model, "classes_"))
