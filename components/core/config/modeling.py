"""The modeling sections: model families, the search, evaluation and the promotion gate."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, field_validator

from components.core.config.base import _Section
from components.core.config.data import EstimatorName


class ModelConfig(_Section):
    estimator: EstimatorName | Literal["auto"] = Field(
        default="auto",
        description="auto: the search spans `families` and picks by cross-validation; or one family.",
    )
    families: tuple[EstimatorName, ...] = Field(
        default=("linear", "hist_gradient_boosting"),
        min_length=1,
        description="The model families `estimator: auto` searches (linear: logistic regression or ridge).",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to the estimator's constructor; with a search, fixed values the search does not touch. "
        "With `estimator: auto`, keyed by family, e.g. {hist_gradient_boosting: {max_iter: 200}}.",
    )
    max_categories: int = Field(
        default=50, ge=2, description="One-hot encode at most this many categories per column; rarer ones are grouped."
    )
    class_weight: Literal["auto", "balanced", "none"] = Field(
        default="none",
        description="Classification: 'auto' weights classes inversely to their frequency when the rarest class is "
        "under `imbalance_threshold` of the rows; 'balanced' always; 'none' never. Weighted models are "
        "recalibrated (`calibration`), so served probabilities stay probabilities.",
    )
    imbalance_threshold: float = Field(default=0.3, gt=0, le=0.5)
    calibration: Literal["auto", "sigmoid", "isotonic", "none"] = Field(
        default="auto",
        description="Classification: recalibrate probabilities on out-of-fold predictions. auto: when class "
        "weights were applied or the family is random_forest (isotonic with enough rows, else sigmoid).",
    )
    interval_coverage: float | None = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="Regression: prediction intervals (split-conformal on out-of-fold residuals) at this "
        "coverage; null: none.",
    )

    @field_validator("params")
    @classmethod
    def _params_fit_estimator(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        if info.data.get("estimator") == "auto":
            families = set(get_args(EstimatorName))
            stray = [k for k, v in value.items() if k not in families or not isinstance(v, dict)]
            if stray:
                raise ValueError(
                    f"with estimator 'auto', params are keyed by family ({sorted(families)}), "
                    f"e.g. {{hist_gradient_boosting: {{max_iter: 200}}}}; got keys {stray}"
                )
        return value

    def family_params(self, family: str) -> dict[str, Any]:
        """The user's fixed params for one family."""
        if self.estimator == "auto":
            return dict(self.params.get(family, {}))
        return dict(self.params)


ClassificationMetric = Literal[
    "roc_auc",
    "average_precision",
    "f1",
    "balanced_accuracy",
    "accuracy",
    "log_loss",
    "brier",
    "precision",
    "recall",
    "calibration_error",
]
RegressionMetric = Literal["rmse", "mae", "r2", "mape"]
MetricName = Literal[ClassificationMetric, RegressionMetric]
CLASSIFICATION_METRICS: tuple[str, ...] = get_args(ClassificationMetric)
REGRESSION_METRICS: tuple[str, ...] = get_args(RegressionMetric)
LOWER_IS_BETTER_METRICS = frozenset({"log_loss", "brier", "calibration_error", "rmse", "mae", "mape"})


class SearchConfig(_Section):
    """Hyperparameter search on the training split, scored by cross-validation."""

    method: Literal["optuna", "random", "none"] = Field(
        default="optuna", description="optuna (TPE, Bayesian), random, or none (train `model.params` as given)."
    )
    trials: int = Field(default=20, ge=1, description="Trial budget.")
    cv_folds: int = Field(default=3, ge=2, le=20)
    cv_repeats: int | None = Field(
        default=None,
        ge=1,
        le=10,
        description="Repeat the cross-validation with reshuffled folds (default: 3 times below `small_rows` rows, "
        "where one split's luck decides otherwise; once above).",
    )
    small_rows: int = Field(default=3000, ge=0, description="Tables with fewer training rows count as small.")
    ensemble: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Searching several families: compare each family's best and their average (soft voting, or "
        "the mean prediction) on fresh folds and keep the top; auto: on small tables, where which family wins the "
        "search is most a matter of luck.",
    )
    selection: Literal["one_se", "best"] = Field(
        default="one_se",
        description="one_se: the earliest trial (the families' defaults come first) whose cross-validated score "
        "is within one standard error of the best, against the luck of many trials on few rows; best: the top score.",
    )
    metric: MetricName | None = Field(default=None, description="Default: the promotion metric.")
    timeout_minutes: float | None = Field(default=None, gt=0, description="Stop asking for trials after this.")
    max_rows: int | None = Field(
        default=200_000, ge=100, description="Search on a stratified sample of at most this many training rows."
    )
    workers: int = Field(
        default=1, ge=1, description="Trials run at once; more than 1 runs them on a local Dask cluster."
    )
    dask_address: str | None = Field(
        default=None,
        description="A Dask scheduler to run trials on (tcp://host:8786); checked before the first trial: "
        "reachable, with workers running the same Python, project and scikit-learn versions.",
    )


class EvaluationConfig(_Section):
    """What is measured on the held-out rows besides the metrics."""

    slices: tuple[str, ...] = Field(
        default=(), description="Categorical columns whose values get their own metrics (and a gate check)."
    )
    slice_min_rows: int = Field(default=100, ge=1, description="Slices with fewer held-out rows are not scored.")
    plots: bool = Field(default=True, description="ROC, PR, confusion, calibration, learning curve, importance.")
    learning_curve_max_rows: int = Field(default=50_000, ge=100)
    importance_max_rows: int = Field(default=20_000, ge=100)


class OnlineTestConfig(_Section):
    """Champion against challenger on the same labelled requests: an always-valid test (mSPRT on the
    paired loss difference: log loss for classifiers, squared error for regressors), looked at by
    every `mlops monitor`."""

    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="Error rate, however often the test is looked at.")
    min_rows: int = Field(default=200, ge=2, description="No decision on fewer paired labels than this.")
    max_rows: int = Field(
        default=20_000, ge=2, description="With no difference proven after this many, the challenger is retired."
    )
    mixture: float = Field(
        default=0.1,
        gt=0,
        description="The standardized effect size the test is most sensitive to (the mixture's width).",
    )
    without_labels: Literal["never", "estimated"] = Field(
        default="never",
        description="estimated: with no decision on labels yet, promote on each version's expected loss on the "
        "requests both answered (classifiers: from their own calibrated probabilities; regressors: from a model "
        "of their held-out errors); a promotion made so keeps the old champion in shadow and is rolled back if "
        "the labels, once they arrive, prove it better. never: wait for labels.",
    )
    max_calibration_error: float = Field(
        default=0.03,
        ge=0,
        le=1,
        description="without_labels: a classifier's probabilities grade it only when both versions' held-out "
        "calibration error is at most this beyond what a calibrated model shows by chance on as many rows "
        "(about 0.038 on 1,100 held-out rows).",
    )
    estimated_margin: float = Field(
        default=0.05,
        ge=0,
        description="without_labels: the expected loss difference's always-valid interval must clear this share "
        "of the champion's expected loss (against the estimate's own bias: 3.6-7.7% on simulate-ct's shifts).",
    )


class PromotionConfig(_Section):
    """The gate: a candidate becomes champion only when every check passes."""

    metric: MetricName | None = Field(
        default=None,
        description="Metric the gate compares (default: the task's: roc_auc for binary, balanced_accuracy for "
        "multiclass, "
        "rmse for regression); lower is better for log_loss, brier, calibration_error, rmse, mae and mape.",
    )
    min_score: float | None = Field(
        default=None, description="Absolute floor on `metric` (default: 0.6 for roc_auc, none for other metrics)."
    )
    floors: dict[MetricName, float] = Field(
        default_factory=dict, description="More absolute floors, e.g. {recall: 0.5, brier: 0.2}."
    )
    min_improvement: float = Field(
        default=0.0, ge=0, description="Required gain over the champion on the same rows, in metric units."
    )
    min_relative_improvement: float = Field(
        default=0.0, ge=0, description="Required gain as a share of the champion's score (0.01 = 1%)."
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="The paired bootstrap interval's lower bound must clear the gain."
    )
    bootstrap_samples: int = Field(default=1000, ge=100)
    bootstrap_max_rows: int = Field(
        default=20_000, ge=100, description="Bootstrap on at most this many held-out rows (a wider, safer interval)."
    )
    min_test_rows: int = Field(default=30, ge=1, description="Fewer held-out rows than this cannot promote.")
    slice_tolerance: float = Field(
        default=0.02, ge=0, description="No configured slice may lose more than this against the champion."
    )
    max_train_gap: float | None = Field(
        default=None, gt=0, description="Train minus cross-validated score above this holds the candidate back."
    )
    require_beats_dummy: bool = Field(
        default=True, description="The candidate must beat the task's dummy baseline (class prior or mean)."
    )
    approval: Literal["auto", "manual"] = Field(
        default="auto",
        description="'manual': a candidate that passes stops at ready (approval pending) until "
        "`mlops approve` or `mlops reject`; 'auto': it becomes champion at once.",
    )
    rollout: Literal["direct", "shadow", "canary"] = Field(
        default="direct",
        description="What a candidate that passes the gate becomes while a champion serves: 'direct': the "
        "champion at once; 'shadow': the `challenger`, scored by the service on every request off the "
        "response path; 'canary': the challenger, answering `canary_share` of requests (sticky per request "
        "key). `mlops monitor` then promotes or retires it on labelled requests (`online`).",
    )
    canary_share: float = Field(
        default=0.1, gt=0, lt=1, description="With rollout 'canary': the share of request keys the challenger answers."
    )
    online: OnlineTestConfig = Field(
        default_factory=lambda: OnlineTestConfig(),
        description="The sequential test that ends a challenger period on labelled requests.",
    )
    latency_budget_ms: float = Field(
        default=250.0,
        gt=0,
        description="The candidate, loaded as the service loads it, must answer its input "
        "example within this (median of 5 calls).",
    )
