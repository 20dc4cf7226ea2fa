import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from components.modeling.plots import (
    LearningCurve,
    calibration_figure,
    compute_learning_curve,
    compute_permutation_importance,
    confusion_figure,
    importance_figure,
    learning_curve_figure,
    pr_figure,
    roc_figure,
    save_figures,
)

NUMERIC = ["signal", "signal2", "noise"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_data(n_classes: int, labels: list[Any] | None = None, n: int = 300, flip: float = 0.0):
    """Two informative numeric columns, one pure-noise column and one random categorical."""
    features, y = make_classification(
        n_samples=n,
        n_features=2,
        n_informative=2,
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        class_sep=1.5,
        shuffle=False,
        random_state=0,
    )
    rng = np.random.default_rng(0)
    if flip:
        flipped = rng.random(n) < flip
        y = np.where(flipped, rng.integers(0, n_classes, n), y)
    X = pd.DataFrame(
        {
            "signal": features[:, 0],
            "signal2": features[:, 1],
            "noise": rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue"], n),
        }
    )
    return X, pd.Series(np.array(labels)[y] if labels is not None else y, name="label")


def make_pipeline(estimator: Any) -> Pipeline:
    preprocess = ColumnTransformer(
        [("numeric", StandardScaler(), NUMERIC), ("categorical", OneHotEncoder(handle_unknown="ignore"), ["color"])]
    )
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def drawn(figure: Figure) -> int:
    """Lines, patches and images across the figure's axes."""
    return sum(len(ax.lines) + len(ax.patches) + len(ax.images) for ax in figure.axes)


CASES = {
    "binary-int": (2, None),
    "binary-str": (2, ["no", "yes"]),
    "binary-bool": (2, [False, True]),
    "multiclass-int": (3, None),
    "multiclass-str": (3, ["ant", "bee", "cat"]),
}


@pytest.fixture(scope="module", params=list(CASES))
def fitted(request: pytest.FixtureRequest):
    n_classes, labels = CASES[request.param]
    X, y = make_data(n_classes, labels)
    model = make_pipeline(LogisticRegression(max_iter=1000)).fit(X, y)
    return X, y, model, model.predict_proba(X), list(model.classes_)


def test_curve_figures_draw_one_curve_per_class(fitted) -> None:
    _, y, _, proba, classes = fitted
    curves = 1 if len(classes) == 2 else len(classes)
    roc = roc_figure(y, proba, classes)
    pr = pr_figure(y, proba, classes)
    for figure, metric in ((roc, "AUC"), (pr, "AP")):
        assert isinstance(figure, Figure)
        (ax,) = figure.axes
        legend = [text.get_text() for text in ax.get_legend().get_texts()]
        assert sum(metric in text for text in legend) == curves
    assert len(roc.axes[0].lines) == curves + 1  # plus the chance diagonal
    assert len(pr.axes[0].lines) == 2 * curves  # each with its prevalence baseline
    if len(classes) == 2:
        prevalence = float((y == classes[1]).mean())
        assert any(f"prevalence = {prevalence:.3f}" in t.get_text() for t in pr.axes[0].get_legend().get_texts())


def test_confusion_and_calibration_figures(fitted) -> None:
    X, y, model, proba, classes = fitted
    confusion = confusion_figure(y, model.predict(X), classes, threshold=0.35)
    assert drawn(confusion) >= 1
    assert len(confusion.axes[0].texts) == len(classes) ** 2
    assert "0.35" in confusion.axes[0].get_title()
    assert "threshold" not in confusion_figure(y, model.predict(X), classes).axes[0].get_title()
    calibration = calibration_figure(y, proba, classes, bins=5)
    reliability, histogram = calibration.axes[:2]
    assert len(reliability.lines) == 2 and len(histogram.patches) > 0


def test_confusion_counts_and_row_shares() -> None:
    y_true = ["a", "a", "a", "b"]
    y_pred = ["a", "b", "b", "b"]
    (ax, _colorbar) = confusion_figure(y_true, y_pred, ["a", "b"]).axes
    assert [t.get_text() for t in ax.texts] == ["1\n33%", "2\n67%", "0\n0%", "1\n100%"]


def test_labels_and_shapes_are_checked() -> None:
    proba = np.array([[0.8, 0.2], [0.3, 0.7]])
    with pytest.raises(ValueError, match=r"\['maybe'\] are not among the model's classes"):
        roc_figure(["no", "maybe"], proba, ["no", "yes"])
    with pytest.raises(ValueError, match="not among"):
        confusion_figure(["no", "yes"], ["no", "maybe"], ["no", "yes"])
    with pytest.raises(ValueError, match="one column per class"):
        pr_figure(["no", "yes"], proba, ["no", "yes", "other"])
    with pytest.raises(ValueError, match="3 rows but proba has 2"):
        calibration_figure(["no", "yes", "no"], proba, ["no", "yes"])
    with pytest.raises(ValueError, match="single class"):
        roc_figure(["no", "no"], proba, ["no", "yes"])


def test_save_figures_writes_pngs(tmp_path: Path) -> None:
    X, y = make_data(2, n=120)
    model = make_pipeline(LogisticRegression(max_iter=1000)).fit(X, y)
    proba = model.predict_proba(X)
    figures = {"roc": roc_figure(y, proba, model.classes_), "pr": pr_figure(y, proba, model.classes_)}
    paths = save_figures(figures, tmp_path / "plots" / "eval", dpi=50)
    assert [p.name for p in paths] == ["roc.png", "pr.png"]
    for path in paths:
        content = path.read_bytes()
        assert len(content) > 1000 and content.startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="plain file names"):
        save_figures({"../escape": figures["roc"]}, tmp_path)


def test_figures_build_and_save_in_threads(tmp_path: Path) -> None:
    X, y = make_data(3, n=150)
    proba = make_pipeline(LogisticRegression(max_iter=1000)).fit(X, y).predict_proba(X)

    def work(index: int) -> list[Path]:
        return save_figures({f"roc{index}": roc_figure(y, proba, [0, 1, 2])}, tmp_path, dpi=40)

    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = [p for batch in pool.map(work, range(4)) for p in batch]
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in paths)


def test_import_uses_no_pyplot_or_global_state() -> None:
    # Reading rcParams["backend"] would itself import pyplot to resolve the backend: skip that key.
    script = (
        "import sys, matplotlib\n"
        "def settings(): return {k: matplotlib.rcParams[k] for k in matplotlib.rcParams if k != 'backend'}\n"
        "before = settings()\n"
        "from components.modeling import plots\n"
        "figure = plots.roc_figure([0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]], [0, 1])\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
        "assert settings() == before, 'rcParams changed'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2])


def test_learning_curve_shows_overfitting() -> None:
    X, y = make_data(2, n=300, flip=0.3)
    settings: dict[str, Any] = {"scoring": "accuracy", "cv_folds": 3, "seed": 0}
    tree = compute_learning_curve(make_pipeline(DecisionTreeClassifier(random_state=0)), X, y, **settings)
    logistic = compute_learning_curve(make_pipeline(LogisticRegression(C=0.1, max_iter=1000)), X, y, **settings)
    for curve in (tree, logistic):
        assert list(curve.train_sizes) == sorted(set(curve.train_sizes))
        scores = np.array([curve.train_mean, curve.validation_mean, curve.train_std, curve.validation_std])
        assert np.isfinite(scores).all()
        assert max(curve.validation_mean) <= 1
    assert tree.final_gap() > logistic.final_gap() + 0.1
    payload = json.loads(json.dumps(tree.as_dict()))
    assert payload["final_gap"] == pytest.approx(tree.final_gap())
    figure = learning_curve_figure(tree)
    assert f"{tree.final_gap():.3f}" in figure.axes[0].get_title()
    assert len(figure.axes[0].lines) == 2 and len(figure.axes[0].collections) == 2


def test_learning_curve_subsamples_and_is_seeded() -> None:
    X, y = make_data(3, ["ant", "bee", "cat"], n=300)
    model = make_pipeline(LogisticRegression(max_iter=1000))
    settings: dict[str, Any] = {"scoring": "f1_macro", "cv_folds": 3, "seed": 1, "train_sizes": (0.5, 1.0)}
    first = compute_learning_curve(model, X, y, max_rows=120, **settings)
    second = compute_learning_curve(model, X, y, max_rows=120, **settings)
    assert isinstance(first, LearningCurve) and first == second
    assert first.train_sizes == (40, 80)  # two of three folds of the 120 sampled rows


def test_permutation_importance_ranks_signal_above_noise() -> None:
    X, y = make_data(2, ["no", "yes"], n=300)
    model = make_pipeline(LogisticRegression(max_iter=1000)).fit(X, y)
    importance = compute_permutation_importance(model, X, y, scoring="roc_auc", n_repeats=3, seed=0, max_rows=200)
    assert list(importance.columns) == ["feature", "importance_mean", "importance_std"]
    assert set(importance["feature"]) == set(X.columns)
    assert importance["importance_mean"].is_monotonic_decreasing
    ranks = dict(zip(importance["feature"], importance.index, strict=True))
    assert importance.loc[0, "feature"] in {"signal", "signal2"}
    assert ranks["signal"] < ranks["noise"] and ranks["signal2"] < ranks["noise"]
    figure = importance_figure(importance, top=3)
    assert len(figure.axes[0].patches) == 3
    assert "top 3 of 4" in figure.axes[0].get_title()
