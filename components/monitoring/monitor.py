"""Drift, data-quality shift and performance decay of new data against a model's training reference.

The reference is a sample of the rows a model was trained on, with the model's own scores on them,
stored with the model when it is logged (`build_reference`). A window of new data (a batch file,
or rows of the service's prediction log) is compared with it feature by feature:

- numeric features: the two-sample Kolmogorov-Smirnov test, and the chi-square test and the
  population stability index (PSI) over bins at the reference's deciles and its 1st, 5th, 95th and
  99th percentiles, nulls as their own bin. The tail bins catch a tail that stretches (the top 5%
  of values growing by half), which moves KS and decile PSI by less than chance; the test's
  p-value is the smaller of the two, doubled (Bonferroni);
- categorical features: the chi-square test of the two value counts and the PSI over the values,
  nulls as their own value;
- the model's scores: the Jensen-Shannon distance (base 2, 0 to 1) of their histograms;
- data quality: a null rate that grew, and values the reference never had.

A feature drifts when its test rejects at `p_value` and its PSI reaches `psi_min` (a test alone
rejects trivial shifts on large windows; a PSI alone is noisy on small ones), or when its PSI
alone reaches `psi_threshold` beyond the PSI that chance gives samples of these sizes over these
bins ((bins - 1) x (1/n + 1/m): 0.14 for 46 states, 500 reference rows and 1,000 new ones).
The window drifts when `drift_share` of the features drift or the scores' distance reaches
`score_js_threshold`. With labels, the window decays when the model's
evaluation metric falls more than `decay_tolerance` below its held-out score at training.

Retraining is debounced (`sustained`): drift or decay must hold in `min_windows` of the last
`windows` windows judged against the same champion version.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from components.core.config import MonitoringConfig
from components.core.errors import UserError

SCORE_COLUMN = "_score"
REFERENCE_ARTIFACT = "monitoring/reference.parquet"
RETRAIN_EVENT = "mlops.retrain.requested"
NULL_BIN = "<null>"
SCORE_BINS = 20
EPSILON = 1e-4

UNIT_METRICS = frozenset({"rmse", "mae"})  # in the target's units: tolerances are shares of the baseline
Verdict = Literal["stable", "watching", "retrain", "insufficient"]


class MonitoringError(UserError, ValueError):
    """The window cannot be compared with the reference (missing columns, no rows, no reference)."""


def model_event_resource(model_name: str) -> str:
    """The Prefect event resource id of a registered model."""
    return f"mlops.model.{model_name}"


def build_reference(X: pd.DataFrame, scores: np.ndarray, rows: int, seed: int) -> pd.DataFrame:
    """A sample of training features with the model's scores on them (`SCORE_COLUMN`)."""
    frame = X.reset_index(drop=True).copy()
    frame[SCORE_COLUMN] = np.asarray(scores, dtype="float64")
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=seed).reset_index(drop=True)
    return frame


# ----------------------------------------------------------------------------- the statistics


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


# ----------------------------------------------------------------------------- the report


@dataclass
class DriftReport:
    """One window compared with the reference; `verdict` is set by `decide`."""

    model_name: str
    model_version: str
    window: str
    created_at: str
    reference_rows: int
    current_rows: int
    features: list[FeatureDrift]
    score: ScoreDrift | None
    quality: list[QualityIssue]
    decay: Decay | None
    drift: bool
    drifted_features: list[str]
    thresholds: dict[str, Any]
    verdict: Verdict = "stable"
    reason: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drift_share(self) -> float:
        return len(self.drifted_features) / len(self.features) if self.features else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["drift_share"] = self.drift_share
        for feature in data["features"]:
            feature.pop("histogram", None)
        if data["score"]:
            data["score"].pop("histogram", None)
        return _finite(data)


def _finite(value: Any) -> Any:
    """JSON has no NaN: such values become null."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    current_scores: np.ndarray | None,
    config: MonitoringConfig,
    model_name: str,
    model_version: str,
    window: str,
    probabilities: bool = True,
) -> DriftReport:
    """Compare `current` with `reference` on the model's features (and scores, when both have them)."""
    missing = [c for c in (*numeric, *categorical) if c not in current.columns]
    if missing:
        raise MonitoringError(f"the window lacks the model's feature column(s) {missing}")
    absent = [c for c in (*numeric, *categorical) if c not in reference.columns]
    if absent:
        raise MonitoringError(f"the reference lacks column(s) {absent}; it was stored for another feature set")
    if len(current) == 0:
        raise MonitoringError("the window has no rows")
    features = [numeric_drift(c, reference[c], current[c], config) for c in numeric]
    features += [categorical_drift(c, reference[c], current[c], config) for c in categorical]
    score = None
    if current_scores is not None and SCORE_COLUMN in reference.columns:
        score = score_drift(reference[SCORE_COLUMN].to_numpy(), current_scores, config, probabilities)
    drifted = [f.name for f in features if f.drifted]
    share = len(drifted) / len(features) if features else 0.0
    drift = share >= config.drift_share or bool(score and score.drifted)
    return DriftReport(
        model_name=model_name,
        model_version=model_version,
        window=window,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reference_rows=len(reference),
        current_rows=len(current),
        features=features,
        score=score,
        quality=quality_issues(features, config),
        decay=None,
        drift=drift,
        drifted_features=drifted,
        thresholds=config.model_dump(mode="json"),
    )


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
    drop = (baseline - current) if higher_is_better else (current - baseline)
    baseline_se = current_se * float(np.sqrt(rows / baseline_rows)) if baseline_rows else 0.0
    noise = 1.645 * float(np.hypot(current_se, baseline_se))
    tolerance = config.decay_tolerance * abs(baseline) if metric in UNIT_METRICS else config.decay_tolerance
    return Decay(metric, baseline, current, drop, drop > max(tolerance, noise), rows, accuracy, noise)


def bootstrap_se(score: Callable[[np.ndarray], float | None], rows: int, seed: int, samples: int = 200) -> float:
    """Standard error of `score(indices)` over bootstrap resamples of `rows` rows."""
    rng = np.random.default_rng(seed)
    values = [score(rng.integers(0, rows, rows)) for _ in range(samples)]
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


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


# ----------------------------------------------------------------------------- debouncing


@dataclass(frozen=True)
class Window:
    """One judged window, as kept in the history file."""

    at: str
    window: str
    model_version: str
    drift: bool
    decay: bool | None
    rows: int
    retrained: bool = False  # a marker: retraining was started here; earlier alarms are spent

    @property
    def alarm(self) -> bool:
        return not self.retrained and (self.drift or bool(self.decay))


def history_file(monitoring_dir: Path, model_name: str) -> Path:
    """Where a model's judged windows are kept (JSON lines)."""
    return monitoring_dir / model_name / "windows.jsonl"


def read_history(path: Path) -> list[Window]:
    if not path.is_file():
        return []
    windows = []
    for line in path.read_text().splitlines():
        if line.strip():
            windows.append(Window(**json.loads(line)))
    return windows


def append_history(path: Path, window: Window) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(asdict(window)) + "\n")
        handle.flush()


def _counted(history: Sequence[Window], model_version: str) -> list[Window]:
    """Windows judged against `model_version` since retraining was last started for it.

    A retraining whose candidate the gate held back leaves the champion in place; without the
    marker the same old alarms would start another retraining on the next window, and the next.
    """
    counted: list[Window] = []
    for window in history:
        if window.model_version != model_version:
            continue
        if window.retrained:
            counted = []
        else:
            counted.append(window)
    return counted


def sustained(history: Sequence[Window], model_version: str, config: MonitoringConfig) -> tuple[int, int]:
    """(alarms, windows) among the last `config.windows` windows counted for `model_version`."""
    recent = _counted(history, model_version)[-config.windows :]
    return sum(w.alarm for w in recent), len(recent)


def note_retraining(path: Path, model_version: str, window: str) -> None:
    """Record that retraining started on alarms against `model_version` (see `_counted`)."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    append_history(path, Window(at, window, model_version, drift=False, decay=None, rows=0, retrained=True))


def decide(report: DriftReport, history: Sequence[Window], config: MonitoringConfig) -> DriftReport:
    """Set the verdict from this window (already appended to `history`) and those before it."""
    alarms, seen = sustained(history, report.model_version, config)
    report.history = [asdict(w) for w in _counted(history, report.model_version)][-config.windows :]
    causes = []
    if report.drift:
        if report.drifted_features:
            causes.append(f"{len(report.drifted_features)} of {len(report.features)} features drifted")
        if report.score and report.score.drifted:
            causes.append(f"score distance {report.score.js_distance:.3f}")
        if not causes:
            causes.append("drift")
    if report.decay and report.decay.decayed:
        causes.append(
            f"{report.decay.metric} {report.decay.current:.4f} vs {report.decay.baseline:.4f} at training "
            f"(-{report.decay.drop:.4f})"
        )
    this = "; ".join(causes)
    tally = (
        f"{alarms} of the last {seen} window(s) against v{report.model_version} alarmed "
        f"(retrain at {config.min_windows} of {config.windows})"
    )
    if alarms >= config.min_windows:
        report.verdict, report.reason = "retrain", f"{this or 'no alarm in this window'}; {tally}"
    elif causes:
        report.verdict, report.reason = "watching", f"{this}; {tally}"
    elif report.drifted_features:
        report.verdict, report.reason = (
            "stable",
            f"{len(report.drifted_features)} of {len(report.features)} features drifted "
            f"({', '.join(report.drifted_features)}), below the {config.drift_share:.0%} that makes a window drift; "
            f"no decay; {tally}",
        )
    else:
        report.verdict, report.reason = "stable", f"no drift or decay; {tally}"
    return report


# ----------------------------------------------------------------------------- HTML


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1f2328;max-width:1200px}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;font-size:.9rem}th{background:#f6f8fa}
.bad{color:#cf222e;font-weight:600}.ok{color:#1a7f37}
.verdict{font-size:1.1rem;padding:.6rem 1rem;border-radius:6px;display:inline-block}
.v-retrain{background:#ffebe9}.v-watching{background:#fff8c5}.v-stable{background:#dafbe1}.v-insufficient{background:#eaeef2}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:1rem}
.card{border:1px solid #d0d7de;border-radius:6px;padding:.6rem}.card h3{margin:.2rem 0;font-size:1rem}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
"""
_REF, _CUR = "#8c959f", "#0969da"
_NO_QUALITY_ISSUE = '<p class="ok">No null-rate growth or unseen values beyond the tolerances.</p>'


def _bars(histogram: Histogram, width: int = 340, height: int = 150) -> str:
    """Reference and current shares per bin as an inline SVG bar chart."""
    n = len(histogram.labels)
    top = max([*histogram.reference, *histogram.current, 1e-9])
    left = 50  # room for the first rotated label
    slot = (width - left - 5) / max(n, 1)
    bar = max(slot / 2 - 1, 1)
    parts = [f'<svg width="{width}" height="{height + 40}" role="img">']
    for i, label in enumerate(histogram.labels):
        x = left + i * slot
        for j, (share, colour) in enumerate(((histogram.reference[i], _REF), (histogram.current[i], _CUR))):
            h = share / top * height
            title = html.escape(f"{label}: {'reference' if j == 0 else 'current'} {share:.1%}")
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{title}</title></rect>'
            )
        if n <= 12:
            text = html.escape(label if len(label) <= 14 else label[:13] + "…")
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{height + 12}" font-size="9" text-anchor="end" '
                f'transform="rotate(-35 {x + slot / 2:.1f} {height + 12})">{text}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "–" if value is None or not np.isfinite(value) else format(value, spec)


def render_html(report: DriftReport) -> str:
    """A self-contained page (no scripts, no downloads): verdict, tables and per-feature charts."""
    e = html.escape
    rows = []
    for f in sorted(report.features, key=lambda f: (not f.drifted, -f.psi)):
        cls = "bad" if f.drifted else "ok"
        rows.append(
            f"<tr><td>{e(f.name)}</td><td>{f.kind}</td><td class='{cls}'>{'drifted' if f.drifted else 'stable'}</td>"
            f"<td>{f.test} {_fmt(f.statistic)}</td><td>{_fmt(f.p_value, '.3g')}</td><td>{_fmt(f.psi, '.3f')}</td>"
            f"<td>{f.reference_null_rate:.1%} → {f.current_null_rate:.1%}</td>"
            f"<td>{_fmt(f.reference_mean)} → {_fmt(f.current_mean)}</td></tr>"
        )
    quality = "".join(f"<li><b>{e(q.column)}</b> ({q.kind}): {e(q.detail)}</li>" for q in report.quality)
    decay = ""
    if report.decay:
        d = report.decay
        cls = "bad" if d.decayed else "ok"
        accuracy = f"; accuracy {d.accuracy:.4f}" if d.accuracy is not None else ""
        decay = (
            f"<h2>Performance</h2><p class='{cls}'>{e(d.metric)} on {d.rows} labelled rows: {d.current:.4f} "
            f"vs {d.baseline:.4f} held out at training (drop {d.drop:+.4f}; decayed beyond "
            f"{max(report.thresholds['decay_tolerance'], d.noise):.4f}: the tolerance or the sampling noise, "
            f"whichever is larger){accuracy}</p>"
        )
    score = ""
    if report.score:
        s = report.score
        cls = "bad" if s.drifted else "ok"
        score = (
            f"<h2>Model scores</h2><p class='{cls}'>Jensen-Shannon distance {s.js_distance:.3f} "
            f"(threshold {report.thresholds['score_js_threshold']}); mean score {s.reference_mean:.3f} → "
            f"{s.current_mean:.3f}</p>{_bars(s.histogram, 720, 160)}"
            "<p><small>score from 0 (left) to 1 (right), 20 bins; hover a bar for its share</small></p>"
        )
    cards = "".join(
        f"<div class='card'><h3 class='{'bad' if f.drifted else ''}'>{e(f.name)}</h3>"
        f"<div>PSI {_fmt(f.psi, '.3f')}, p {_fmt(f.p_value, '.3g')}</div>{_bars(f.histogram)}</div>"
        for f in sorted(report.features, key=lambda f: (not f.drifted, -f.psi))
        if f.histogram
    )
    history = "".join(
        f"<tr><td>{e(w['at'])}</td><td>{e(w['window'])}</td><td>{'yes' if w['drift'] else 'no'}</td>"
        f"<td>{'–' if w['decay'] is None else 'yes' if w['decay'] else 'no'}</td><td>{w['rows']}</td></tr>"
        for w in report.history
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Drift report: {e(report.model_name)} v{e(report.model_version)}</title><style>{_STYLE}</style></head><body>
<h1>Drift report: {e(report.model_name)} v{e(report.model_version)}</h1>
<p>Window <code>{e(report.window)}</code>: {report.current_rows:,} rows against {report.reference_rows:,} reference
rows stored with the model at training; {e(report.created_at)}.</p>
<p class="verdict v-{report.verdict}"><b>{report.verdict}</b>: {e(report.reason)}</p>
<p>{len(report.drifted_features)} of {len(report.features)} features drifted ({report.drift_share:.0%};
the window drifts at {report.thresholds["drift_share"]:.0%}). A feature drifts when its test rejects at
p &lt; {report.thresholds["p_value"]} and its PSI reaches {report.thresholds["psi_min"]}, or its PSI alone
reaches {report.thresholds["psi_threshold"]} beyond what chance gives samples of these sizes.</p>
{decay}{score}
<h2>Features</h2><table><tr><th>feature</th><th>kind</th><th>verdict</th><th>test statistic</th><th>p-value</th>
<th>PSI</th><th>null rate</th><th>mean</th></tr>{"".join(rows)}</table>
<h2>Data quality</h2>{f"<ul>{quality}</ul>" if quality else _NO_QUALITY_ISSUE}
<h2>Distributions</h2><p class="legend"><span style="background:{_REF}"></span>reference (training)
<span style="background:{_CUR}"></span>current window</p><div class="grid">{cards}</div>
<h2>Recent windows against this version</h2><table><tr><th>at</th><th>window</th><th>drift</th><th>decay</th>
<th>rows</th></tr>{history}</table>
</body></html>
"""
