"""Evaluation plots (ROC, precision-recall, confusion, calibration, learning curve, importance) as figures.

Figures are built with `matplotlib.figure.Figure`, never pyplot: no global figure registry, no GUI
backend, safe to build in worker threads, and freed by garbage collection like any other object.
matplotlib is imported only when a figure is drawn, so the compute_* functions work without it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.inspection import permutation_importance
from sklearn.model_selection import KFold, StratifiedKFold, learning_curve
from sklearn.utils import resample

from components.modeling.evaluate import label_positions

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_TRAIN_SIZES = (0.1, 0.325, 0.55, 0.775, 1.0)


def _figure(width: float = 6.0, height: float = 5.0) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _checked(
    y_true: pd.Series | np.ndarray, proba: np.ndarray, classes: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """(label positions, probabilities, classes) after checking that they describe the same rows."""
    classes = list(classes)
    proba = np.asarray(proba, dtype=np.float64)
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes to plot a classifier; got {classes}")
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ValueError(
            f"proba has shape {proba.shape}; expected (rows, {len(classes)}): one column per class in {classes}"
        )
    y = label_positions(y_true, classes)
    if len(y) != len(proba):
        raise ValueError(f"y_true has {len(y)} rows but proba has {len(proba)}")
    if not len(y):
        raise ValueError("no rows to plot")
    return y, proba, classes


def _one_vs_rest(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, is-positive, score) per curve: the positive class if binary, else each class against the rest.

    Classes absent from y_true (or the only class present) have no curve and are skipped.
    """
    targets = [1] if len(classes) == 2 else range(len(classes))
    drawable = 0
    for index in targets:
        positive = y == index
        if positive.all() or not positive.any():
            continue
        drawable += 1
        name = str(classes[index]) if len(classes) == 2 else f"{classes[index]} vs rest"
        yield name, positive, proba[:, index]
    if not drawable:
        raise ValueError(f"y_true holds a single class; curves need both positive and negative rows of {classes}")


def roc_figure(y_true: pd.Series | np.ndarray, proba: np.ndarray, classes: Sequence[Any]) -> Figure:
    """ROC curve(s) with AUC in the legend: ranking quality at every threshold, one vs rest if multiclass."""
    y, proba, classes = _checked(y_true, proba, classes)
    figure = _figure()
    ax = figure.add_subplot()
    aucs = []
    for name, positive, score in _one_vs_rest(y, proba, classes):
        fpr, tpr, _ = skm.roc_curve(positive, score)
        aucs.append(skm.auc(fpr, tpr))
        ax.plot(fpr, tpr, label=f"{name} (AUC = {aucs[-1]:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    title = "ROC curve" if len(classes) == 2 else f"ROC curves, one vs rest (mean AUC {np.mean(aucs):.3f})"
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize="small")
    return figure


def pr_figure(y_true: pd.Series | np.ndarray, proba: np.ndarray, classes: Sequence[Any]) -> Figure:
    """Precision-recall curve(s) with average precision: what ROC hides when positives are rare."""
    y, proba, classes = _checked(y_true, proba, classes)
    figure = _figure()
    ax = figure.add_subplot()
    for name, positive, score in _one_vs_rest(y, proba, classes):
        precision, recall, _ = skm.precision_recall_curve(positive, score)
        average = skm.average_precision_score(positive, score)
        (line,) = ax.plot(recall, precision, drawstyle="steps-post", label=f"{name} (AP = {average:.3f})")
        # A classifier that ranks at random has precision equal to the prevalence at every recall.
        prevalence = float(positive.mean())
        label = f"prevalence = {prevalence:.3f}" if len(classes) == 2 else None
        ax.axhline(prevalence, color=line.get_color(), linestyle=":", linewidth=1, label=label)
    title = "Precision-recall curve" if len(classes) == 2 else "Precision-recall curves, one vs rest"
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision", title=title)
    ax.legend(loc="lower left", fontsize="small")
    return figure


def confusion_figure(
    y_true: pd.Series | np.ndarray,
    y_pred: pd.Series | np.ndarray,
    classes: Sequence[Any],
    threshold: float | None = None,
) -> Figure:
    """Confusion matrix with counts and each actual class's share: which mistakes the model makes."""
    classes = list(classes)
    y = label_positions(y_true, classes)
    predicted = label_positions(y_pred, classes)
    if len(y) != len(predicted):
        raise ValueError(f"y_true has {len(y)} rows but y_pred has {len(predicted)}")
    counts = skm.confusion_matrix(y, predicted, labels=list(range(len(classes))))
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = max(4.5, 0.7 * len(classes) + 2.5)
    figure = _figure(size + 1, size)
    ax = figure.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(counts):
        color = "white" if share[row, column] > 0.5 else "black"
        text = f"{count}\n{share[row, column]:.0%}"
        ax.text(column, row, text, ha="center", va="center", color=color, fontsize="small")
    ticks = list(range(len(classes)))
    names = [str(label) for label in classes]
    ax.set_xticks(ticks, names, rotation=45 if len(classes) > 4 else 0, ha="right" if len(classes) > 4 else "center")
    ax.set_yticks(ticks, names)
    title = "Confusion matrix" if threshold is None else f"Confusion matrix at threshold {threshold:.3g}"
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    figure.colorbar(image, ax=ax, label="share of the actual class")
    return figure


def calibration_figure(
    y_true: pd.Series | np.ndarray, proba: np.ndarray, classes: Sequence[Any], bins: int = 10
) -> Figure:
    """Reliability diagram over quantile bins plus the spread of predictions: can the probabilities be trusted?

    Binary: the positive class's probability against its frequency. Multiclass: the predicted
    class's probability (the confidence) against how often that prediction is right.
    """
    y, proba, classes = _checked(y_true, proba, classes)
    if len(classes) == 2:
        score, outcome = proba[:, 1], (y == 1).astype(np.int64)
        xlabel, ylabel = f"predicted P({classes[1]})", f"observed share of {classes[1]}"
    else:
        predicted = proba.argmax(axis=1)
        score, outcome = proba[np.arange(len(y)), predicted], (predicted == y).astype(np.int64)
        xlabel, ylabel = "confidence (probability of the predicted class)", "observed accuracy"
    observed, mean_predicted = calibration_curve(outcome, score, n_bins=bins, strategy="quantile", pos_label=1)
    figure = _figure(6.0, 6.5)
    reliability, histogram = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    reliability.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    reliability.plot(mean_predicted, observed, marker="o", label="model")
    reliability.set(
        xlim=(0, 1), ylim=(0, 1.01), ylabel=ylabel, title=f"Reliability diagram ({len(observed)} quantile bins)"
    )
    reliability.legend(loc="upper left", fontsize="small")
    histogram.hist(score, bins=20, range=(0, 1))
    histogram.set(xlabel=xlabel, ylabel="rows")
    return figure


@dataclass(frozen=True)
class LearningCurve:
    """Cross-validated train and validation scores at growing training sizes (sklearn scorers: higher is better)."""

    train_sizes: tuple[int, ...]
    train_mean: tuple[float, ...]
    train_std: tuple[float, ...]
    validation_mean: tuple[float, ...]
    validation_std: tuple[float, ...]
    scoring: str

    def final_gap(self) -> float:
        """Train minus validation score at the largest size: a wide gap means the model overfits."""
        return self.train_mean[-1] - self.validation_mean[-1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "scoring": self.scoring,
            "train_sizes": list(self.train_sizes),
            "train_mean": list(self.train_mean),
            "train_std": list(self.train_std),
            "validation_mean": list(self.validation_mean),
            "validation_std": list(self.validation_std),
            "final_gap": self.final_gap(),
        }


def _stratified_sample(
    X: pd.DataFrame, y: pd.Series, max_rows: int | None, seed: int, stratify: bool = True
) -> tuple[pd.DataFrame, pd.Series]:
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if max_rows is None or len(X) <= max_rows:
        return X, y
    X_sample, y_sample = resample(
        X, y, replace=False, n_samples=max_rows, stratify=y if stratify else None, random_state=seed
    )
    return X_sample, y_sample


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(value) for value in values)


def compute_learning_curve(
    estimator: Any,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    scoring: str,
    cv_folds: int,
    seed: int,
    train_sizes: Sequence[float] = DEFAULT_TRAIN_SIZES,
    max_rows: int | None = 50_000,
    regression: bool = False,
) -> LearningCurve:
    """Scores of `estimator` refitted on growing shares of a (stratified) sample: more data or less capacity?

    The folds are capped by the smallest class, so each fold can hold out every class.
    """
    X, y = _stratified_sample(X, y, max_rows, seed, stratify=not regression)
    folds = min(cv_folds, len(y) // 2 if regression else int(y.value_counts().min()))
    if folds < 2:
        raise ValueError(f"a learning curve needs at least 2 rows per class; got {y.value_counts().to_dict()}")
    splitter = (KFold if regression else StratifiedKFold)(n_splits=folds, shuffle=True, random_state=seed)
    # shuffle: learning_curve trains on the first rows of each fold, which are in data order
    # (by time, or by class) unless shuffled: the small sizes would see a biased slice.
    sizes, train_scores, validation_scores = learning_curve(
        estimator,
        X,
        y,
        train_sizes=np.asarray(train_sizes, dtype=np.float64),
        cv=splitter,
        scoring=scoring,
        n_jobs=1,
        # A small share of a small table can be too few rows for the model (an early-stopping split
        # of fewer rows than classes): that size is left out rather than the whole curve.
        error_score=np.nan,
        shuffle=True,
        random_state=seed,
    )
    fitted = ~(np.isnan(train_scores).any(axis=1) | np.isnan(validation_scores).any(axis=1))
    if not fitted.any():
        raise ValueError(f"the model could not be fitted at any of the learning curve's sizes {list(sizes)}")
    sizes, train_scores, validation_scores = sizes[fitted], train_scores[fitted], validation_scores[fitted]
    return LearningCurve(
        train_sizes=tuple(int(size) for size in sizes),
        train_mean=_floats(train_scores.mean(axis=1)),
        train_std=_floats(train_scores.std(axis=1)),
        validation_mean=_floats(validation_scores.mean(axis=1)),
        validation_std=_floats(validation_scores.std(axis=1)),
        scoring=scoring,
    )


def learning_curve_figure(curve: LearningCurve) -> Figure:
    """Train and validation score against training rows, ±1 std: is the model data- or capacity-limited?"""
    figure = _figure()
    ax = figure.add_subplot()
    sizes = np.asarray(curve.train_sizes)
    for name, mean, std in (
        ("train", curve.train_mean, curve.train_std),
        ("validation", curve.validation_mean, curve.validation_std),
    ):
        mean_array, std_array = np.asarray(mean), np.asarray(std)
        (line,) = ax.plot(sizes, mean_array, marker="o", label=name)
        ax.fill_between(sizes, mean_array - std_array, mean_array + std_array, color=line.get_color(), alpha=0.2)
    ax.set(
        xlabel="training rows",
        ylabel=curve.scoring,
        title=f"Learning curve (final gap train - validation = {curve.final_gap():.3f})",
    )
    ax.legend(loc="best", fontsize="small")
    return figure


def compute_permutation_importance(
    model: Any,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    scoring: str,
    n_repeats: int = 5,
    seed: int = 0,
    max_rows: int | None = 20_000,
    regression: bool = False,
) -> pd.DataFrame:
    """Drop in score when each raw input column is shuffled, most important first.

    Shuffling raw columns (before the Pipeline's encoder) scores a categorical as one feature,
    not one per one-hot column.
    """
    X, y = _stratified_sample(X, y, max_rows, seed, stratify=not regression)
    result = permutation_importance(model, X, y, scoring=scoring, n_repeats=n_repeats, n_jobs=1, random_state=seed)
    importance = pd.DataFrame(
        {
            "feature": [str(column) for column in X.columns],
            "importance_mean": result.importances_mean,
            "importance_std": result.importances_std,
        }
    )
    return importance.sort_values("importance_mean", ascending=False, ignore_index=True)


def importance_figure(importance: pd.DataFrame, top: int = 20) -> Figure:
    """Horizontal bars of the `top` permutation importances with ±1 std error bars."""
    missing = {"feature", "importance_mean", "importance_std"} - set(importance.columns)
    if missing:
        raise ValueError(f"importance frame lacks column(s) {sorted(missing)}; use compute_permutation_importance")
    if importance.empty:
        raise ValueError("importance frame has no rows")
    shown = importance.sort_values("importance_mean", ascending=False).head(top).iloc[::-1]
    figure = _figure(7.0, max(3.0, 0.3 * len(shown) + 1.5))
    ax = figure.add_subplot()
    ax.barh(shown["feature"].astype(str), shown["importance_mean"], xerr=shown["importance_std"], capsize=3)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set(
        xlabel="mean drop in score when the column is shuffled",
        title=f"Permutation importance (top {len(shown)} of {len(importance)})",
    )
    return figure


def save_figures(figures: Mapping[str, Figure], folder: Path, dpi: int = 100) -> list[Path]:
    """Write each figure as `<name>.png` in `folder`, ready to log as MLflow artifacts."""
    bad = [name for name in figures if not name or Path(name).name != name or name in {".", ".."}]
    if bad:
        raise ValueError(f"figure names {bad} must be plain file names without folders")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=dpi, format="png")
        paths.append(path)
    return paths


PLOT_POINTS = 5000  # scatter plots draw a seeded sample of at most this many rows


def _plot_sample(y: np.ndarray, predicted: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    if len(y) <= PLOT_POINTS:
        return y, predicted
    keep = np.random.default_rng(seed).choice(len(y), PLOT_POINTS, replace=False)
    return y[keep], predicted[keep]


def _regression_checked(y_true: pd.Series | np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if y.shape != predicted.shape or y.ndim != 1:
        raise ValueError(f"y_true has shape {y.shape} but predictions have {predicted.shape}; expected one per row")
    if not len(y):
        raise ValueError("no rows to plot")
    return y, predicted


def predicted_vs_actual_figure(
    y_true: pd.Series | np.ndarray, predicted: np.ndarray, half_width: float | None = None
) -> Figure:
    """Predictions against true values with the identity line (and the interval band): bias and spread at a glance."""
    y, predicted = _regression_checked(y_true, predicted)
    shown_y, shown_p = _plot_sample(y, predicted)
    figure = _figure()
    ax = figure.add_subplot()
    low, high = float(min(y.min(), predicted.min())), float(max(y.max(), predicted.max()))
    ax.scatter(shown_y, shown_p, s=8, alpha=0.4, label=f"rows ({len(shown_y)} of {len(y)})")
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="perfect prediction")
    if half_width is not None:
        ax.fill_between(
            [low, high],
            [low - half_width, high - half_width],
            [low + half_width, high + half_width],
            color="grey",
            alpha=0.12,
            label=f"interval ± {half_width:.4g}",
        )
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - float(np.sum((predicted - y) ** 2)) / total if total > 0 else float("nan")
    ax.set(xlabel="actual", ylabel="predicted", title=f"Predicted vs actual (R² = {r2:.3f})")
    ax.legend(loc="upper left", fontsize="small")
    return figure


def residuals_figure(y_true: pd.Series | np.ndarray, predicted: np.ndarray) -> Figure:
    """Residuals against predictions (patterns mean missed structure) and their distribution."""
    y, predicted = _regression_checked(y_true, predicted)
    residuals = y - predicted
    shown_y, shown_p = _plot_sample(y, predicted)
    figure = _figure(9.0, 4.5)
    scatter, histogram = figure.subplots(1, 2, width_ratios=(3, 2))
    scatter.scatter(shown_p, shown_y - shown_p, s=8, alpha=0.4)
    scatter.axhline(0, color="grey", linestyle="--", linewidth=1)
    scatter.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals")
    histogram.hist(residuals, bins=40)
    histogram.axvline(0, color="grey", linestyle="--", linewidth=1)
    histogram.set(
        xlabel="actual - predicted",
        ylabel="rows",
        title=f"mean {residuals.mean():.3g}, sd {residuals.std():.3g}",
    )
    return figure


@dataclass(frozen=True)
class EvaluationPlots:
    figures: dict[str, Figure]
    learning_curve: LearningCurve
    importance: pd.DataFrame


def evaluation_plots(
    model: Any,
    unfitted: Any,
    split: Any,
    output: np.ndarray,
    classes: Sequence[Any],
    *,
    threshold: float | None,
    scoring: str,
    cv_folds: int,
    seed: int,
    learning_curve_max_rows: int | None = 50_000,
    importance_max_rows: int | None = 20_000,
    half_width: float | None = None,
) -> EvaluationPlots:
    """Every evaluation plot of a run: held-out views of `model` (`output`: its class probabilities,
    or its predictions when `classes` is empty) and the learning curve of `unfitted` (the same
    configuration) on the training split of `split` (a `prepare.Split`)."""
    from components.modeling.evaluate import predicted_positions

    regression = not len(classes)
    curve = compute_learning_curve(
        unfitted,
        split.X_train,
        split.y_train,
        scoring=scoring,
        cv_folds=cv_folds,
        seed=seed,
        max_rows=learning_curve_max_rows,
        regression=regression,
    )
    importance = compute_permutation_importance(
        model,
        split.X_test,
        split.y_test,
        scoring=scoring,
        seed=seed,
        max_rows=importance_max_rows,
        regression=regression,
    )
    if regression:
        figures = {
            "predicted_vs_actual": predicted_vs_actual_figure(split.y_test, output, half_width),
            "residuals": residuals_figure(split.y_test, output),
        }
    else:
        predicted = np.asarray(list(classes), dtype=object)[predicted_positions(output, threshold)]
        figures = {
            "roc": roc_figure(split.y_test, output, classes),
            "precision_recall": pr_figure(split.y_test, output, classes),
            "confusion_matrix": confusion_figure(split.y_test, predicted, classes, threshold),
            "calibration": calibration_figure(split.y_test, output, classes),
        }
    figures["learning_curve"] = learning_curve_figure(curve)
    figures["permutation_importance"] = importance_figure(importance)
    return EvaluationPlots(figures, curve, importance)
