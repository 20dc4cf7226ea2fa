"""Preparation: which columns are features, the seeded split, and the preprocessing transformer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

MIN_ROWS_PER_CLASS = 2
MISSING_CATEGORY = "__missing__"


class PreparationError(ValueError):
    """The data cannot be turned into a training problem (no target, one class, too few rows)."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns feed the model and how; everything else is carried, never learned from."""

    target: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    id_column: str | None = None
    excluded: tuple[str, ...] = ()

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


@dataclass(frozen=True)
class Split:
    """Seeded, stratified train/test split of features and labels."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series

    def without_training_rows(self, index: pd.Index) -> Split:
        """The same split minus some training rows (curation's drops); test rows are never touched."""
        return replace(self, X_train=self.X_train.drop(index=index), y_train=self.y_train.drop(index=index))


def infer_feature_spec(
    frame: pd.DataFrame,
    target: str,
    id_column: str | None = None,
    time_column: str | None = None,
    drop_columns: Sequence[str] = (),
) -> FeatureSpec:
    """Split columns into numeric and categorical features; ids, times and datetimes are excluded."""
    missing = [c for c in (target, id_column, time_column, *drop_columns) if c and c not in frame.columns]
    if missing:
        raise PreparationError(f"column(s) {missing} not in the data; columns are {list(frame.columns)}")
    excluded = [c for c in (id_column, time_column, *drop_columns) if c]
    numeric: list[str] = []
    categorical: list[str] = []
    for column in frame.columns:
        if column == target or column in excluded:
            continue
        dtype = frame[column].dtype
        if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
            excluded.append(column)
        elif pd.api.types.is_bool_dtype(dtype):
            categorical.append(column)
        elif pd.api.types.is_numeric_dtype(dtype):
            numeric.append(column)
        else:
            categorical.append(column)
    if not numeric and not categorical:
        raise PreparationError(f"no feature columns left besides target {target!r} and excluded {excluded}")
    return FeatureSpec(target, tuple(numeric), tuple(categorical), id_column, tuple(excluded))


def features_frame(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The feature columns in model order, with categorical values as plain Python objects.

    Categoricals become object dtype so that pandas' `str`, `category` and `bool` dtypes,
    which vary between files and pandas versions, all reach the encoder the same way.
    """
    X = frame.loc[:, list(spec.features)].copy()
    for column in spec.categorical:
        X[column] = X[column].astype(object).where(X[column].notna(), None)
    return X


def split_data(frame: pd.DataFrame, spec: FeatureSpec, test_size: float, seed: int) -> Split:
    """Stratified, seeded split; unlabeled rows cannot be learned from and are left out."""
    labeled = frame[frame[spec.target].notna()]
    counts = labeled[spec.target].value_counts()
    if len(counts) < 2:
        raise PreparationError(
            f"target {spec.target!r} has {len(counts)} class(es) {counts.index.tolist()}; need at least 2"
        )
    rare = counts[counts < MIN_ROWS_PER_CLASS]
    if not rare.empty:
        raise PreparationError(
            f"class(es) {rare.index.tolist()} of {spec.target!r} have fewer than {MIN_ROWS_PER_CLASS} rows; "
            "a stratified split needs more examples of each class"
        )
    n_test = int(np.ceil(len(labeled) * test_size))
    if n_test < len(counts) or len(labeled) - n_test < len(counts):
        raise PreparationError(
            f"{len(labeled)} labeled rows are too few for a test split of {test_size:.0%} over {len(counts)} classes"
        )
    X = features_frame(labeled, spec)
    y = labeled[spec.target]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    return Split(X_train, X_test, y_train, y_test)


def build_preprocessor(
    spec: FeatureSpec, max_categories: int = 50, clip: dict[str, tuple[float, float]] | None = None
) -> ColumnTransformer:
    """Imputation, scaling and one-hot encoding; fitted later, on training rows only.

    `clip` holds (low, high) per numeric column (IQR fences from training rows): values are
    clipped before imputation, in training and at serving alike.
    """
    steps: list[tuple[str, Any]] = []
    if clip:
        lows = np.array([clip.get(c, (-np.inf, np.inf))[0] for c in spec.numeric], dtype="float64")
        highs = np.array([clip.get(c, (-np.inf, np.inf))[1] for c in spec.numeric], dtype="float64")
        steps.append(
            (
                "clip",
                FunctionTransformer(np.clip, kw_args={"a_min": lows, "a_max": highs}, feature_names_out="one-to-one"),
            )
        )
    steps += [("impute", SimpleImputer(strategy="median", add_indicator=True)), ("scale", StandardScaler())]
    numeric = Pipeline(steps)
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            (
                "encode",
                OneHotEncoder(
                    handle_unknown="infrequent_if_exist",
                    max_categories=max_categories,
                    sparse_output=False,
                ),
            ),
        ]
    )
    return ColumnTransformer(
        [("numeric", numeric, list(spec.numeric)), ("categorical", categorical, list(spec.categorical))],
        remainder="drop",
        verbose_feature_names_out=False,
    )
