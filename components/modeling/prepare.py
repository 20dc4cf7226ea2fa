"""Preparation: which columns are features, the seeded split, and the preprocessing transformer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from components.core.errors import UserError
from components.modeling.tasks import MIN_ROWS_PER_CLASS, TASKS, Task, labeled_target

MISSING_CATEGORY = "__missing__"


class PreparationError(UserError, ValueError):
    """The data cannot be turned into a training problem (no target, one class, too few rows)."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns feed the model and how; everything else is carried, never learned from."""

    target: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    id_column: str | None = None
    excluded: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict, compare=False)  # why a column was left out on its own
    numeric_text: tuple[str, ...] = ()  # numeric features stored as text: read as numbers

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


@dataclass(frozen=True)
class Split:
    """Seeded train/test split of features and labels (stratified for classes, or by time)."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    unlabeled_rows: int = 0  # rows without a target value: left out, counted
    rare_classes: dict[str, int] = field(default_factory=dict)  # classes too rare to learn, left out
    by_time: bool = False  # test rows are the newest; training rows are in time order

    def all_rows(self) -> tuple[pd.DataFrame, pd.Series]:
        """Training and held-out rows together (training first, so a time split stays in time order)."""
        return pd.concat([self.X_train, self.X_test]), pd.concat([self.y_train, self.y_test])

    def without_training_rows(self, index: pd.Index) -> Split:
        """The same split minus some training rows (curation's drops); test rows are never touched."""
        return replace(self, X_train=self.X_train.drop(index=index), y_train=self.y_train.drop(index=index))


# Text that stands for a missing number in exported tables ('?' in UCI files, '-' or 'n/a' in spreadsheets).
MISSING_TOKENS = frozenset({"", "?", "-", "--", ".", "na", "n/a", "nan", "none", "null", "missing", "unknown", "#n/a"})
THOUSANDS = r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$"
IDENTIFIER_SHARE = 0.9  # text with at least this share of distinct values (and many of them) names rows
IDENTIFIER_MIN_DISTINCT = 50
DATE_SAMPLE = 200


def numbers_from_text(values: pd.Series, *, force: bool = False) -> pd.Series | None:
    """Numbers stored as text ('12.5', '1,234', '?' for missing) as float64, or None when some value is
    real text. With `force`, what does not read as a number becomes missing."""
    text = values.astype(object).where(values.notna(), None).astype(str).str.strip()
    missing = values.isna() | text.str.lower().isin(MISSING_TOKENS)
    grouped = text.str.fullmatch(THOUSANDS, na=False)
    cleaned = text.where(~grouped, text.str.replace(",", "", regex=False))
    numbers = pd.to_numeric(cleaned.where(~missing, None), errors="coerce")
    if force:
        return numbers.astype("float64")
    unreadable = numbers.isna() & ~missing
    coded = text.str.match(r"^0\d", na=False)  # '02139', '007': codes, not numbers
    if unreadable.any() or coded.any() or numbers.notna().sum() == 0:
        return None
    return numbers.astype("float64")


def reads_as_numbers(values: pd.Series, sample: int = 1000) -> bool:
    """Whether a text column holds numbers (see `numbers_from_text`): a sample first, then every value."""
    present = values.dropna()
    return numbers_from_text(present.head(sample)) is not None and numbers_from_text(present) is not None


def looks_like_dates(values: pd.Series) -> bool:
    """Text that reads as dates or times (ISO-like, with separators), judged on a sample."""
    sample = values.dropna().astype(str).head(DATE_SAMPLE)
    if sample.empty or not sample.str.contains(r"\d{1,4}[-/.:]\d{1,2}", regex=True).all():
        return False
    return bool(pd.to_datetime(sample, errors="coerce", format="mixed").notna().mean() >= 0.95)


def looks_like_identifiers(values: pd.Series) -> bool:
    """Text where almost every row has its own value: a name or key, not a category."""
    present = values.dropna()
    distinct = present.nunique()
    return distinct >= IDENTIFIER_MIN_DISTINCT and distinct >= IDENTIFIER_SHARE * len(present)


def infer_feature_spec(
    frame: pd.DataFrame,
    target: str,
    id_column: str | None = None,
    time_column: str | None = None,
    drop_columns: Sequence[str] = (),
) -> FeatureSpec:
    """Split columns into numeric and categorical features.

    Ids, times, datetimes (typed or as text), identifier-like text and columns without information
    (empty, or one value) are left out; `notes` says why for the ones found here. Numbers stored as
    text (with '?' or 'n/a' for missing ones) are numeric features (`numeric_text`).
    """
    missing = [c for c in (target, id_column, time_column, *drop_columns) if c and c not in frame.columns]
    if missing:
        raise PreparationError(f"column(s) {missing} not in the data; columns are {list(frame.columns)}")
    excluded = [c for c in (id_column, time_column, *drop_columns) if c]
    notes: dict[str, str] = {}
    numeric: list[str] = []
    numeric_text: list[str] = []
    categorical: list[str] = []
    for column in frame.columns:
        if column == target or column in excluded:
            continue
        values = frame[column]
        dtype = values.dtype
        if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
            notes[column] = "date/time"
        elif values.nunique(dropna=False) < 2:
            notes[column] = "empty" if values.isna().all() else "a single value"
        elif pd.api.types.is_bool_dtype(dtype):
            categorical.append(column)
        elif pd.api.types.is_numeric_dtype(dtype):
            numeric.append(column)
        elif looks_like_dates(values):
            notes[column] = "dates or times as text"
        elif reads_as_numbers(values):
            numeric.append(column)
            numeric_text.append(column)
        elif looks_like_identifiers(values):
            notes[column] = f"identifier-like text ({values.nunique()} distinct values in {values.notna().sum()} rows)"
        else:
            categorical.append(column)
    excluded += list(notes)
    if not numeric and not categorical:
        raise PreparationError(f"no feature columns left besides target {target!r} and excluded {excluded}")
    return FeatureSpec(
        target, tuple(numeric), tuple(categorical), id_column, tuple(excluded), notes, tuple(numeric_text)
    )


def features_frame(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The feature columns in model order, with categorical values as plain Python objects.

    Categoricals become object dtype so that pandas' `str`, `category` and `bool` dtypes,
    which vary between files and pandas versions, all reach the encoder the same way.
    """
    X = frame.loc[:, list(spec.features)].copy()
    for column in spec.numeric_text:
        if not pd.api.types.is_numeric_dtype(X[column].dtype):
            X[column] = numbers_from_text(X[column], force=True)
    for column in spec.categorical:
        X[column] = X[column].astype(object).where(X[column].notna(), None)
    return X


def event_times(values: pd.Series, column: str) -> pd.Series:
    """A time column as timestamps (text is parsed); PreparationError when it cannot be read as times."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values  # epoch numbers or periods order as they are
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    if parsed.notna().sum() < values.notna().sum():
        bad = values[parsed.isna() & values.notna()].iloc[0]
        raise PreparationError(f"time column {column!r} holds {bad!r}, which is not a date or time")
    return parsed


@dataclass(frozen=True)
class _Learnable:
    """The rows a model can learn from: labeled, of classes with enough rows; and what was left out."""

    target: pd.Series
    rows: pd.DataFrame
    unlabeled: int
    rare: dict[str, int]


def _learnable_rows(frame: pd.DataFrame, spec: FeatureSpec, task: Task) -> _Learnable:
    """Leave out unlabeled rows and classes too rare to split; refuse a target with fewer than 2 classes."""
    target = labeled_target(frame[spec.target])
    unlabeled = len(frame) - len(target)
    labeled = frame.loc[target.index]
    if not task.classification:
        return _Learnable(target, labeled, unlabeled, {})
    counts = target.value_counts()
    if len(counts) < 2:
        raise PreparationError(
            f"target {spec.target!r} has {len(counts)} class(es) {counts.index.tolist()}; need at least 2"
        )
    too_rare = counts[counts < MIN_ROWS_PER_CLASS]
    rare = {str(k): int(v) for k, v in too_rare.items()}
    if rare:
        keep = ~target.isin(too_rare.index)
        target, labeled = target[keep], labeled[keep]
        if target.nunique() < 2:
            raise PreparationError(
                f"class(es) {list(rare)} of {spec.target!r} have fewer than {MIN_ROWS_PER_CLASS} rows each; "
                "without them fewer than 2 classes are left to learn"
            )
    return _Learnable(target, labeled, unlabeled, rare)


def _test_rows(target: pd.Series, test_size: float, min_test_rows: int, task: Task) -> int:
    """How many rows to hold out; PreparationError when too few are left on either side."""
    classes = target.nunique() if task.classification else 1
    # A small table holds out more than `test_size` so that the gate gets `min_test_rows` to judge,
    # as long as two thirds of the rows are left to train on.
    n_test = max(int(np.ceil(len(target) * test_size)), min(min_test_rows, len(target) // 3))
    if n_test < max(classes, 2) or len(target) - n_test < max(classes, 2) * 2:
        raise PreparationError(
            f"{len(target)} labeled rows are too few for a test split of {test_size:.0%}"
            + (f" over {classes} classes" if task.classification else "")
        )
    return n_test


def _split_by_time(
    X: pd.DataFrame, data: _Learnable, n_test: int, time_column: str | None, spec: FeatureSpec, task: Task
) -> Split:
    """The newest `n_test` rows held out; training rows in time order."""
    labeled, target = data.rows, data.target
    if not time_column:
        raise PreparationError("split.strategy 'time' needs data.time_column")
    if time_column not in labeled.columns:
        raise PreparationError(f"time column {time_column!r} is not in the data")
    times = event_times(labeled[time_column], time_column)
    if times.isna().any():
        raise PreparationError(f"time column {time_column!r} has missing values; a time split needs every time")
    order = np.argsort(times.to_numpy(), kind="stable")
    train_rows, test_rows = order[: len(order) - n_test], order[len(order) - n_test :]
    y_test = target.iloc[test_rows]
    if task.classification and y_test.nunique() < 2:
        raise PreparationError(
            f"the newest {n_test} rows hold a single class of {spec.target!r}: a time split cannot score them; "
            "use split.strategy: random or more data"
        )
    return Split(
        X.iloc[train_rows], X.iloc[test_rows], target.iloc[train_rows], y_test, data.unlabeled, data.rare, by_time=True
    )


def split_data(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    test_size: float,
    seed: int,
    *,
    task: Task | None = None,
    strategy: str = "random",
    time_column: str | None = None,
    min_test_rows: int = 0,
) -> Split:
    """Hold out `test_size` of the labeled rows: seeded (stratified for classes), or the newest by time.

    The seeded split keys each row by what it is (`split_keys`: its id, else its content), so a
    row held out once stays held out when more data arrives, and a row trained on stays a
    training row: the champion is never scored on rows it learned from because the data grew.

    Unlabeled rows cannot be learned from and are left out (counted); so are classes with fewer
    than `MIN_ROWS_PER_CLASS` rows, which can be neither split nor cross-validated (counted by class).
    At least `min_test_rows` are held out when that leaves two thirds of the rows to train on.
    """
    task = task or TASKS["binary"]
    data = _learnable_rows(frame, spec, task)
    target, labeled = data.target, data.rows
    n_test = _test_rows(target, test_size, min_test_rows, task)
    X = features_frame(labeled, spec)
    if strategy == "time":
        return _split_by_time(X, data, n_test, time_column, spec, task)
    keys = split_keys(labeled, seed, spec.id_column)
    test = _held_out(
        keys, target, n_test / len(target), task.classification, at_least=min(min_test_rows, len(target) // 3)
    )
    order = np.argsort(keys, kind="stable")  # a seeded shuffle that is the same for the same rows
    train_rows, test_rows = order[~test[order]], order[test[order]]
    y_train, y_test = target.iloc[train_rows], target.iloc[test_rows]
    return Split(X.iloc[train_rows], X.iloc[test_rows], y_train, y_test, data.unlabeled, data.rare)


def split_keys(frame: pd.DataFrame, seed: int, id_column: str | None = None) -> np.ndarray:
    """A seeded pseudo-random key per row from what the row is (its id, else its content), so that a
    row keeps its side of the split however many rows arrive around it: the gate never scores a
    champion on rows it was trained on because the data grew (copies of a row share a side, too)."""
    basis = frame[[id_column]] if id_column and id_column in frame.columns else frame
    hashed = pd.util.hash_pandas_object(basis, index=False).to_numpy(dtype=np.uint64)
    return pd.util.hash_array(hashed ^ np.uint64(seed % (1 << 63)))


def _held_out(keys: np.ndarray, target: pd.Series, share: float, stratify: bool, at_least: int = 0) -> np.ndarray:
    """Rows whose key falls in the lowest `share` of the key space: a row's side never depends on the
    other rows (a smaller `share` later only moves held-out rows to training, never the other way),
    so the count is `share` of the rows give or take sampling noise; when that falls short of
    `at_least` (what the gate needs), the next keys make it up. Each class keeps at least one row
    on each side."""
    test = keys < np.uint64(min(share, 1.0) * float(np.iinfo(np.uint64).max))
    if test.sum() < at_least:
        test[np.argsort(keys, kind="stable")[:at_least]] = True
    if stratify:
        values = target.to_numpy()
        for value in pd.unique(values):
            members = np.flatnonzero(values == value)
            ranked = members[np.argsort(keys[members], kind="stable")]
            if not test[ranked].any():
                test[ranked[0]] = True
            if test[ranked].all():
                test[ranked[-1]] = False
    return test


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
