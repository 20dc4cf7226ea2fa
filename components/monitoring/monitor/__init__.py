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

* `reference`: the training rows and scores stored with the model;
* `drift`: the statistics per feature, of the scores, and data quality;
* `decay`: the metric on labelled rows against training's;
* `estimate`: without labels, a classifier's metric estimated from its probabilities (CBPE);
* `report`: `compare`, one window against the reference;
* `history`: the judged windows, and the verdict debounced over them;
* `html_report`: the report as a page.
"""

from __future__ import annotations

from components.monitoring.monitor.decay import (
    UNIT_METRICS,
    Decay,
    bootstrap_se,
    join_labels,
    measure_decay,
    read_labels,
)
from components.monitoring.monitor.drift import (
    EPSILON,
    NULL_BIN,
    NUMERIC_QUANTILES,
    SCORE_BINS,
    FeatureDrift,
    Histogram,
    QualityIssue,
    ScoreDrift,
    categorical_drift,
    numeric_drift,
    quality_issues,
    score_drift,
)
from components.monitoring.monitor.estimate import estimate_decay, estimate_metric
from components.monitoring.monitor.history import (
    RETRAIN_EVENT,
    Window,
    append_history,
    decide,
    history_file,
    model_event_resource,
    note_retraining,
    read_history,
    sustained,
)
from components.monitoring.monitor.html_report import render_html
from components.monitoring.monitor.loss import RESIDUALS_ARTIFACT, build_residuals, estimate_loss_decay
from components.monitoring.monitor.reference import REFERENCE_ARTIFACT, SCORE_COLUMN, MonitoringError, build_reference
from components.monitoring.monitor.report import DriftReport, Verdict, compare

__all__ = [
    "EPSILON",
    "NULL_BIN",
    "NUMERIC_QUANTILES",
    "REFERENCE_ARTIFACT",
    "RESIDUALS_ARTIFACT",
    "RETRAIN_EVENT",
    "SCORE_BINS",
    "SCORE_COLUMN",
    "UNIT_METRICS",
    "Decay",
    "DriftReport",
    "FeatureDrift",
    "Histogram",
    "MonitoringError",
    "QualityIssue",
    "ScoreDrift",
    "Verdict",
    "Window",
    "append_history",
    "bootstrap_se",
    "build_reference",
    "build_residuals",
    "categorical_drift",
    "compare",
    "decide",
    "estimate_decay",
    "estimate_loss_decay",
    "estimate_metric",
    "history_file",
    "join_labels",
    "measure_decay",
    "model_event_resource",
    "note_retraining",
    "numeric_drift",
    "quality_issues",
    "read_history",
    "read_labels",
    "render_html",
    "score_drift",
    "sustained",
]
