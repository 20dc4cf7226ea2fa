"""Drift statistics per feature (KS or chi-square, and PSI), of the model's scores, and data quality."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from components.core.config import MonitoringConfig

NULL_BIN = "<null>"
SCORE_BINS = 20
EPSILON = 1e-4


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins."""
    e = expected / max(expected.sum(), 1)
    a = actual / max(actual.sum(), 1)
    e, a = np.clip(e, EPSILON, None), np.clip(a, EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


NUMERIC_QUANTILES = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _numeric_bins(reference: np.ndarray) -> np.ndarray:
    """Bin edges: the reference's deciles, and its tails (1st, 5th, 95th and 99th percentiles)."""
    return np.unique(np.quantile(reference, NUMERIC_QUANTILES))


def _chi2(table: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the chi-square test of a 2 x k table of counts; bins empty on both
    sides are left out, and fewer than two bins say nothing."""
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    chi2 = stats.chi2_contingency(table, correction=False)
    return float(chi2.statistic), float(chi2.pvalue)


def _binned(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1).astype("float64")


@dataclass(frozen=True)
class Histogram:
    """What the report draws: shares per bin, reference and current."""

    labels: list[str]
    reference: list[float]
    current: list[float]


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    psi: float
    drifted: bool
    reference_null_rate: float
    current_null_rate: float
    new_categories: dict[str, float] = field(default_factory=dict)  # unseen value -> share of rows
    reference_mean: float | None = None
    current_mean: float | None = None
    histogram: Histogram | None = None


@dataclass(frozen=True)
class QualityIssue:
    column: str
    kind: Literal["null_rate", "new_categories"]
    detail: str


@dataclass(frozen=True)
class ScoreDrift:
    js_distance: float
    drifted: bool
    p_value: float
    reference_mean: float
    current_mean: float
    histogram: Histogram


def _edge_label(edges: np.ndarray, index: int) -> str:
    low = "-inf" if index == 0 else f"{edges[index - 1]:.4g}"
    high = "inf" if index == len(edges) else f"{edges[index]:.4g}"
    return f"[{low}, {high})"


def numeric_drift(name: str, reference: pd.Series, current: pd.Series, config: MonitoringConfig) -> FeatureDrift:
    ref = pd.to_numeric(reference, errors="coerce").to_numpy(dtype="float64")
    cur = pd.to_numeric(current, errors="coerce").to_numpy(dtype="float64")
    ref_null, cur_null = np.isnan(ref), np.isnan(cur)
    ref_ok, cur_ok = ref[~ref_null], cur[~cur_null]
    test: Literal["ks", "chi2"] = "ks"
    if len(ref_ok) and len(cur_ok):
        ks = stats.ks_2samp(ref_ok, cur_ok)
        edges = _numeric_bins(ref_ok)
        ref_counts, cur_counts = _binned(ref_ok, edges), _binned(cur_ok, edges)
        chi2, chi2_p = _chi2(np.vstack([ref_counts, cur_counts]))
        if chi2_p < float(ks.pvalue):
            test, statistic, p_value = "chi2", chi2, min(1.0, 2 * chi2_p)
        else:
            statistic, p_value = float(ks.statistic), min(1.0, 2 * float(ks.pvalue))
    else:  # all null on one side: only the null bins say anything
        statistic, p_value = (0.0, 1.0) if len(ref_ok) == len(cur_ok) == 0 else (1.0, 0.0)
        edges = np.array([])
        ref_counts, cur_counts = np.array([float(len(ref_ok))]), np.array([float(len(cur_ok))])
    ref_all = np.append(ref_counts, ref_null.sum())
    cur_all = np.append(cur_counts, cur_null.sum())
    psi = _psi(ref_all, cur_all)
    labels = [_edge_label(edges, i) for i in range(len(ref_counts))] + [NULL_BIN]
    return FeatureDrift(
        name=name,
        kind="numeric",
        test=test,
        statistic=statistic,
        p_value=p_value,
        psi=psi,
        drifted=_drifted(p_value, psi, config, _psi_noise(ref_all, cur_all)),
        reference_null_rate=float(ref_null.mean()) if len(ref) else 0.0,
        current_null_rate=float(cur_null.mean()) if len(cur) else 0.0,
        reference_mean=float(ref_ok.mean()) if len(ref_ok) else None,
        current_mean=float(cur_ok.mean()) if len(cur_ok) else None,
        histogram=Histogram(labels, _shares(ref_all), _shares(cur_all)),
    )


def _as_category(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), NULL_BIN).map(str)


def categorical_drift(name: str, reference: pd.Series, current: pd.Series, config: MonitoringConfig) -> FeatureDrift:
    ref, cur = _as_category(reference), _as_category(current)
    ref_counts, cur_counts = ref.value_counts(), cur.value_counts()
    values = sorted(set(ref_counts.index) | set(cur_counts.index), key=lambda v: (v == NULL_BIN, v))
    r = ref_counts.reindex(values, fill_value=0).to_numpy(dtype="float64")
    c = cur_counts.reindex(values, fill_value=0).to_numpy(dtype="float64")
    statistic, p_value = _chi2(np.vstack([r, c]))
    psi = _psi(r, c)
    seen = set(ref_counts.index)
    new = {str(v): float(cur_counts[v] / len(cur)) for v in cur_counts.index if v not in seen and v != NULL_BIN}
    return FeatureDrift(
        name=name,
        kind="categorical",
        test="chi2",
        statistic=statistic,
        p_value=p_value,
        psi=psi,
        drifted=_drifted(p_value, psi, config, _psi_noise(r, c)),
        reference_null_rate=float((ref == NULL_BIN).mean()) if len(ref) else 0.0,
        current_null_rate=float((cur == NULL_BIN).mean()) if len(cur) else 0.0,
        new_categories=new,
        histogram=Histogram(list(values), _shares(r), _shares(c)),
    )


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [float(x / total) if total else 0.0 for x in counts]


def _psi_noise(reference: np.ndarray, current: np.ndarray) -> float:
    """The PSI two samples of these sizes reach by chance over these bins, on average: (bins - 1) x
    (1/n + 1/m), the expectation of the symmetric divergence under no change. Many bins and a small
    sample make it large (46 states, 500 reference rows, 1,000 current: 0.14)."""
    bins = int(((reference + current) > 0).sum())
    n, m = float(reference.sum()), float(current.sum())
    return (bins - 1) * (1 / n + 1 / m) if bins > 1 and n and m else 0.0


def _drifted(p_value: float, psi: float, config: MonitoringConfig, noise: float = 0.0) -> bool:
    """The test rejects and the PSI is large enough to matter, or the PSI alone is large beyond what
    chance gives (`noise`): a PSI alone on a small sample of many bins is mostly noise."""
    return bool((p_value < config.p_value and psi >= config.psi_min) or psi - noise >= config.psi_threshold)


def score_drift(
    reference: np.ndarray, current: np.ndarray, config: MonitoringConfig, probabilities: bool = True
) -> ScoreDrift:
    """The Jensen-Shannon distance of the model's scores: over [0, 1] for probabilities, over the
    reference's quantiles for a regression model's predictions (values beyond them in the end bins)."""
    ref = np.asarray(reference, dtype="float64")
    cur = np.asarray(current, dtype="float64")
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if probabilities or not len(ref):
        edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
        low, high = 0.0, 1.0
    else:
        edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, SCORE_BINS + 1)))
        if len(edges) < 2:
            edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
        low, high = float(edges[0]), float(edges[-1])
    r = np.histogram(np.clip(ref, low, high), edges)[0].astype("float64")
    c = np.histogram(np.clip(cur, low, high), edges)[0].astype("float64")
    distance = float(jensenshannon(r + EPSILON, c + EPSILON, base=2)) if r.sum() and c.sum() else 0.0
    # Histograms of small samples differ by chance: the distance must also be significant (KS).
    p_value = float(stats.ks_2samp(ref, cur).pvalue) if len(ref) and len(cur) else 1.0
    style = ".2f" if probabilities else ".4g"
    labels = [f"{edges[i]:{style}}-{edges[i + 1]:{style}}" for i in range(len(edges) - 1)]
    return ScoreDrift(
        js_distance=distance,
        drifted=distance >= config.score_js_threshold and p_value < config.p_value,
        p_value=p_value,
        reference_mean=float(ref.mean()) if len(ref) else float("nan"),
        current_mean=float(cur.mean()) if len(cur) else float("nan"),
        histogram=Histogram(labels, _shares(r), _shares(c)),
    )


def quality_issues(features: Sequence[FeatureDrift], config: MonitoringConfig) -> list[QualityIssue]:
    issues: list[QualityIssue] = []
    for f in features:
        growth = f.current_null_rate - f.reference_null_rate
        if growth > config.null_rate_tolerance:
            issues.append(
                QualityIssue(
                    f.name,
                    "null_rate",
                    f"null rate {f.current_null_rate:.1%} vs {f.reference_null_rate:.1%} at training",
                )
            )
        unseen = sum(f.new_categories.values())
        if unseen > config.new_category_tolerance:
            shown = ", ".join(
                f"{k!r} ({v:.1%})" for k, v in sorted(f.new_categories.items(), key=lambda kv: -kv[1])[:5]
            )
            issues.append(QualityIssue(f.name, "new_categories", f"{unseen:.1%} of rows hold unseen values: {shown}"))
    return issues
