"""The fitted ColumnTransformer as array operations: clipping, imputation, missing-value indicators,
scaling and one-hot encoding, written into one float64 matrix.

The numeric steps repeat scikit-learn's arithmetic (the same operations in the same order, so the
same bits); the one-hot mapping of each categorical column is read by probing the fitted
categorical pipeline itself with every known category, a missing value and an unseen one, so
infrequent groups, unknown categories and the imputer's treatment of None come out as it decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from components.inference.compiled.errors import NotCompiled
from components.inference.inputs import Inputs

# Stands for any category the encoder never saw.
UNSEEN = "\x00mlops: a category never seen in training\x00"


@dataclass(frozen=True)
class Clip:
    low: np.ndarray
    high: np.ndarray

    def apply(self, X: np.ndarray) -> np.ndarray:
        return np.clip(X, self.low, self.high)


@dataclass(frozen=True)
class Impute:
    """SimpleImputer on NaN: statistics for the kept columns, then the indicator columns."""

    statistics: np.ndarray  # of the kept columns
    kept: np.ndarray | None  # column indices kept (None: all)
    indicator: np.ndarray | None  # input columns whose missingness is a feature

    def apply(self, X: np.ndarray) -> np.ndarray:
        missing = np.isnan(X)
        values = X if self.kept is None else X[:, self.kept]
        holes = missing if self.kept is None else missing[:, self.kept]
        imputed = np.where(holes, self.statistics, values)
        if self.indicator is None:
            return imputed
        return np.hstack([imputed, missing[:, self.indicator]])


@dataclass(frozen=True)
class Scale:
    mean: np.ndarray | None
    scale: np.ndarray | None

    def apply(self, X: np.ndarray) -> np.ndarray:
        X = np.array(X, dtype="float64", copy=True)
        if self.mean is not None:
            X -= self.mean
        if self.scale is not None:
            X /= self.scale
        return X


def _numeric_step(name: str, step: Any) -> Clip | Impute | Scale:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from sklearn.utils._missing import is_scalar_nan

    if isinstance(step, FunctionTransformer) and step.func is np.clip and step.inverse_func is None:
        kw = step.kw_args or {}
        return Clip(np.asarray(kw.get("a_min"), dtype="float64"), np.asarray(kw.get("a_max"), dtype="float64"))
    if isinstance(step, SimpleImputer) and is_scalar_nan(step.missing_values):
        statistics = np.asarray(step.statistics_, dtype="float64")
        empty = np.isnan(statistics)
        kept = None
        if empty.any() and not step.keep_empty_features:
            kept = np.flatnonzero(~empty)
            statistics = statistics[kept]
        indicator = getattr(step, "indicator_", None)
        features = None
        if indicator is not None:
            if indicator.features != "missing-only" or indicator.sparse is True:
                raise NotCompiled(f"numeric step {name!r}: a missing indicator set up differently")
            features = np.asarray(indicator.features_, dtype=np.intp)
        return Impute(statistics, kept, features)
    if isinstance(step, StandardScaler):
        mean = np.asarray(step.mean_, dtype="float64") if step.with_mean else None
        scale = np.asarray(step.scale_, dtype="float64") if step.with_std else None
        return Scale(mean, scale)
    raise NotCompiled(f"numeric step {name!r} ({type(step).__name__}) has no compiled form")


@dataclass(frozen=True)
class OneHot:
    """One categorical column: each value's output column (offset within the block, -1: all zeros)."""

    lookup: dict[Any, int]
    unseen: int  # where a value not in `lookup` goes
    missing: int  # where None goes
    index: pd.Index  # the lookup's keys but None, for batches
    positions: np.ndarray  # the index's values, then `unseen`

    @classmethod
    def of(cls, lookup: dict[Any, int], unseen: int) -> OneHot:
        known = {k: v for k, v in lookup.items() if k is not None}
        index = pd.Index(list(known), dtype=object, tupleize_cols=False)
        if not index.is_unique or index.hasnans:
            raise NotCompiled("categories that pandas cannot tell apart")
        positions = np.array([*known.values(), unseen], dtype=np.intp)
        return cls(lookup, unseen, lookup.get(None, unseen), index, positions)

    def positions_of(self, values: np.ndarray, coded: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Each value's output column; `coded`: the values as (codes, distinct values) already."""
        if coded is None and len(values) <= 16:  # a dictionary lookup per value beats building a hash table
            return np.array([self._one(v) for v in values], dtype=np.intp)
        # Each distinct value looked up once, as a single row's is; missing ones (None, NaN) get
        # the code -1, which picks the last entry: where missing values go.
        codes, uniques = coded if coded is not None else pd.factorize(values, use_na_sentinel=True)
        mapped = np.fromiter((self._one(u) for u in uniques), dtype=np.intp, count=len(uniques))
        return np.append(mapped, self.missing)[codes]

    def _one(self, value: Any) -> int:
        try:
            return self.lookup.get(value, self.unseen)
        except TypeError:  # unhashable: never a known category
            return self.unseen


def _probe_categories(categorical: Any, names: Sequence[str], encoder: Any) -> tuple[list[OneHot], int]:
    """Each column's mapping (offsets within the categorical block) and the block's width, read from
    the fitted categorical pipeline's own answers."""
    categories = [list(c) for c in encoder.categories_]
    probes = [[*(v for v in c if v is not None), None, UNSEEN] for c in categories]
    height = max(len(p) for p in probes)
    data = {
        name: pd.Series(p + [p[0]] * (height - len(p)), dtype=object) for name, p in zip(names, probes, strict=True)
    }
    out = np.asarray(categorical.transform(pd.DataFrame(data, columns=list(names))), dtype="float64")
    widths = list(getattr(encoder, "_n_features_outs", []))
    if len(widths) != len(names) or sum(widths) != out.shape[1]:
        raise NotCompiled("the encoder's output columns cannot be told apart")
    columns: list[OneHot] = []
    start = 0
    for probe, width in zip(probes, widths, strict=True):
        block = out[: len(probe), start : start + width]
        if not np.isin(block, (0.0, 1.0)).all() or (block.sum(axis=1) > 1).any():
            raise NotCompiled("the categorical encoding is not one-hot")
        hot = np.where(block.any(axis=1), block.argmax(axis=1) + start, -1)
        lookup = {value: int(h) for value, h in zip(probe[:-1], hot[:-1], strict=True)}
        columns.append(OneHot.of(lookup, int(hot[-1])))
        start += width
    return columns, out.shape[1]


@dataclass(frozen=True)
class CompiledPreprocessor:
    """A fitted ColumnTransformer of a numeric pipeline and a one-hot categorical pipeline."""

    numeric_columns: np.ndarray  # positions in Inputs.numeric
    numeric_steps: tuple[Clip | Impute | Scale, ...]
    numeric_width: int
    categorical_columns: tuple[int, ...]  # positions in Inputs.categorical
    one_hot: tuple[OneHot, ...]
    width: int

    def transform(self, inputs: Inputs) -> np.ndarray:
        out = np.zeros((inputs.rows, self.width), dtype="float64")
        if self.numeric_width:
            X = inputs.numeric[:, self.numeric_columns]
            for step in self.numeric_steps:
                X = step.apply(X)
            out[:, : self.numeric_width] = X
        rows = np.arange(inputs.rows)
        for position, mapping in zip(self.categorical_columns, self.one_hot, strict=True):
            hot = mapping.positions_of(inputs.categorical[position], inputs.codes[position] if inputs.codes else None)
            known = hot >= 0
            out[rows[known], self.numeric_width + hot[known]] = 1.0
        return out


def compile_preprocessor(
    transformer: Any, numeric_names: Sequence[str], categorical_names: Sequence[str]
) -> CompiledPreprocessor:
    """The project's ColumnTransformer (numeric, then categorical; the rest dropped) as arrays."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    if not isinstance(transformer, ColumnTransformer):
        raise NotCompiled(f"the preprocessing is a {type(transformer).__name__}, not a ColumnTransformer")
    if getattr(transformer, "sparse_output_", False):
        raise NotCompiled("the preprocessing outputs a sparse matrix")
    numeric_steps: tuple[Clip | Impute | Scale, ...] = ()
    numeric_columns = np.empty(0, dtype=np.intp)
    categorical_columns: tuple[int, ...] = ()
    one_hot: tuple[OneHot, ...] = ()
    categorical_width = 0
    seen: list[str] = []
    for name, step, columns in transformer.transformers_:
        columns = list(columns) if not isinstance(columns, str) else [columns]
        if step == "drop" or not columns:
            continue
        if (seen and name == "numeric") or name not in ("numeric", "categorical") or not isinstance(step, Pipeline):
            raise NotCompiled(f"preprocessing part {name!r} ({type(step).__name__}) has no compiled form")
        seen.append(name)
        if name == "numeric":
            if any(c not in numeric_names for c in columns):
                raise NotCompiled("the numeric part reads columns the model schema does not call numbers")
            numeric_columns = np.array([list(numeric_names).index(c) for c in columns], dtype=np.intp)
            numeric_steps = tuple(_numeric_step(n, s) for n, s in step.steps if s != "passthrough")
        else:
            if any(c not in categorical_names for c in columns):
                raise NotCompiled("the categorical part reads columns the model schema does not call categories")
            encoder = step.steps[-1][1]
            if not isinstance(encoder, OneHotEncoder) or encoder.sparse_output:
                raise NotCompiled(f"categorical encoding {type(encoder).__name__} has no compiled form")
            categorical_columns = tuple(list(categorical_names).index(c) for c in columns)
            mappings, categorical_width = _probe_categories(step, columns, encoder)
            one_hot = tuple(mappings)
    width = len(transformer.get_feature_names_out())
    return CompiledPreprocessor(
        numeric_columns, numeric_steps, width - categorical_width, categorical_columns, one_hot, width
    )
