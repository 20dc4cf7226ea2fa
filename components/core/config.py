"""Typed pipeline configuration: one YAML file plus environment overrides.

Environment variables named ``MLOPS__<SECTION>__<KEY>`` override the YAML, e.g.
``MLOPS__PROMOTION__MIN_SCORE=0.8``. ``MLOPS_HOME`` sets the workspace directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator
from pydantic_settings import EnvSettingsSource

from components.core.errors import UserError
from components.core.secrets import redact

ENV_PREFIX = "MLOPS__"
DEFAULT_CONFIG_NAME = "mlops.yaml"


class ConfigError(UserError, ValueError):
    """The configuration file or an override is invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where the training data comes from and which columns mean what."""

    source: str | None = Field(
        default=None,
        description="CSV/Parquet file, a directory or glob of them, or a SQLAlchemy URL "
        "(then `query` is required). Relative paths are resolved against the config file.",
    )
    query: str | None = Field(default=None, description="SQL query when `source` is a database URL.")
    target: str | None = Field(default=None, description="Label column.")
    id_column: str | None = Field(default=None, description="Row identifier; never used as a feature.")
    time_column: str | None = Field(
        default=None, description="Event-time column; kept for the data card, never used as a feature."
    )
    drop_columns: tuple[str, ...] = Field(default=(), description="Columns never used as features.")
    name: str | None = Field(
        default=None,
        description="Dataset name: names the suite and the registered model. Derived from the source when omitted.",
    )

    @field_serializer("source", when_used="json")
    def _source_without_password(self, source: str | None) -> str | None:
        # JSON is what leaves the process: Prefect's flow-run parameters, MLflow params, reports.
        return None if source is None else redact(source)


TaskName = Literal["binary", "multiclass", "regression"]
# `linear` is the regularized linear family of the task: logistic regression for classes, ridge for numbers.
EstimatorName = Literal["linear", "logistic_regression", "ridge", "random_forest", "hist_gradient_boosting"]


class ValidationConfig(_Section):
    suite_dir: Path = Field(default=Path("expectations"), description="Where GX suites live (reviewed, in git).")
    create_missing_suite: bool = Field(
        default=True, description="Profile the data into a new suite when none exists yet."
    )
    numeric_tolerance: float = Field(
        default=1.5,
        ge=0,
        description="Soft numeric bounds: the 0.5%-99.5% quantiles widened by this many inter-quartile ranges.",
    )
    null_rate_slack: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Absolute slack on a column's null rate (which also widens with the reference's sampling "
        "uncertainty); a column that had no nulls in enough rows must have none.",
    )
    null_rate_factor: float = Field(
        default=1.5, ge=1, description="A column's null rate may grow to this multiple of the reference's (+ slack)."
    )
    duplicate_tolerance: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of rows that may take part in duplicated ids (curation removes them); more is rejected.",
    )
    min_evidence_rows: int = Field(
        default=300,
        ge=1,
        description="'Never negative' and 'never null' are inferred from a sample only when it holds at least this "
        "many rows (none seen in n rows puts the rate below 3/n at 95% confidence); a smaller sample gets a lower "
        "bound below its minimum and a null rate it may reach instead. Declare them in the suite to be sure.",
    )
    max_bad_row_share: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Rows breaking a row rule (an impossible value, a category never seen, a null where the contract "
        "allows none, an unknown label) are set aside to quarantine with their reasons while the rest of the batch "
        "is used; a batch with a larger share of such rows is rejected whole.",
    )
    min_rows_fraction: float = Field(
        default=0.01, ge=0, le=1, description="Row-count floor: this fraction of the reference rows (at least 1)."
    )
    max_rows_factor: float = Field(
        default=100.0, ge=1, description="Row-count ceiling: this multiple of the reference."
    )
    quarantine: Literal["move", "copy"] = Field(
        default="move",
        description="How a rejected batch file reaches the quarantine folder; it is never deleted.",
    )


class CurationConfig(_Section):
    """Runs after validation, before preparation."""

    deduplicate: bool = Field(default=True, description="Remove exact duplicate rows and repeated ids (first kept).")
    outlier_policy: Literal["report", "cap", "drop"] = Field(
        default="report",
        description="report: only log outliers; cap: clip numeric features to IQR fences fitted on training rows "
        "(inside the model, so serving clips too); drop: remove training rows IsolationForest flags.",
    )
    iqr_factor: float = Field(default=3.0, gt=0, description="IQR fences: [q1 - k*IQR, q3 + k*IQR].")
    isolation_contamination: float = Field(
        default=0.01, gt=0, le=0.5, description="Share of rows IsolationForest flags as outliers."
    )
    max_rows: int = Field(
        default=200_000, ge=1000, description="Rows sampled to fit IsolationForest on large tables (seeded)."
    )


class LabelReviewConfig(_Section):
    """Confident learning on out-of-fold probabilities (cleanlab)."""

    enabled: bool = True
    action: Literal["report", "exclude"] = Field(
        default="report", description="report: log label_issues.csv only; exclude: also drop flagged training rows."
    )
    folds: int = Field(default=5, ge=2, le=20, description="Cross-validation folds for out-of-fold probabilities.")
    estimator: EstimatorName | None = Field(
        default=None,
        description="The one model family that reviews; by default each searched family and their average are "
        "tried and the one that best finds labels replaced at known rows reviews.",
    )
    target_precision: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Flag rows down to the deepest cut whose estimated precision reaches this; a table where no "
        "cut gets there has nothing flagged (its labels are too ambiguous to review).",
    )
    error_rate: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="The share of wrong labels the precision estimate assumes (a lower rate makes each flag "
        "less likely right, so fewer rows are flagged).",
    )
    max_rows: int = Field(
        default=200_000,
        ge=100,
        description="Review at most this many training rows (a seeded sample) to bound the cost on large tables.",
    )


class SplitConfig(_Section):
    test_size: float = Field(default=0.2, gt=0, lt=1, description="Share of the labeled rows held out for the gate.")
    strategy: Literal["random", "time"] = Field(
        default="random",
        description="random: a seeded split by what each row is (its id, else its content; about test_size of "
        "each class), so rows keep their side as data grows; time: the most recent rows (by "
        "`data.time_column`) are held out and the search's folds move forward in time, so promotion is "
        "judged on the newest data.",
    )
    refit: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="After the gate has judged the candidate on the held-out rows, register it refitted (same "
        "configuration) on every labeled row: auto below `search.small_rows` training rows, where the held-out "
        "fifth is data the model needs. The gate's evidence stays that of the model fitted without the "
        "held-out rows, and later gates compare against that model too.",
    )


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


CLASSIFICATION_METRICS = (
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
)
REGRESSION_METRICS = ("rmse", "mae", "r2", "mape")
MetricName = Literal[
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
    "rmse",
    "mae",
    "r2",
    "mape",
]
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
    dask_address: str | None = Field(default=None, description="A Dask scheduler to run trials on (tcp://host:8786).")


class EvaluationConfig(_Section):
    """What is measured on the held-out rows besides the metrics."""

    slices: tuple[str, ...] = Field(
        default=(), description="Categorical columns whose values get their own metrics (and a gate check)."
    )
    slice_min_rows: int = Field(default=100, ge=1, description="Slices with fewer held-out rows are not scored.")
    plots: bool = Field(default=True, description="ROC, PR, confusion, calibration, learning curve, importance.")
    learning_curve_max_rows: int = Field(default=50_000, ge=100)
    importance_max_rows: int = Field(default=20_000, ge=100)


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
    latency_budget_ms: float = Field(
        default=250.0,
        gt=0,
        description="The candidate, loaded as the service loads it, must answer its input "
        "example within this (median of 5 calls).",
    )


class PredictionLogConfig(_Section):
    """Every answered request's inputs and outputs, appended as Parquet files under the workspace."""

    enabled: bool = True
    flush_seconds: float = Field(default=5.0, gt=0, description="Write a file at least this often while busy.")
    flush_rows: int = Field(default=50_000, ge=1, description="... or when this many rows are waiting.")
    max_pending_rows: int = Field(
        default=1_000_000,
        ge=1,
        description="Rows held in memory while the disk is slower than traffic; beyond this, rows are dropped "
        "and counted (GET /metadata), never making a request wait.",
    )


class ServingConfig(_Section):
    host: str = Field(default="127.0.0.1", description="Bind address; 0.0.0.0 exposes the service to the network.")
    port: int = Field(default=3000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, description="Server processes; each holds a copy of the model.")
    max_rows_per_request: int = Field(default=10_000, ge=1)
    max_body_mb: float = Field(default=32.0, gt=0, description="Larger request bodies are answered 413.")
    max_batch_rows: int = Field(
        default=4096, ge=1, description="Rows of concurrent requests predicted together in one call."
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="A request still queued after this is answered 503.")
    reload_seconds: float = Field(
        default=10.0, ge=0, description="How often the service checks whether `champion` moved; 0 never."
    )
    access_log: bool = Field(default=False, description="BentoML's per-request access log (costs latency).")
    metrics: bool = Field(default=True, description="Prometheus metrics at GET /metrics.")
    prediction_log: PredictionLogConfig = PredictionLogConfig()


class ScoringConfig(_Section):
    """Batch scoring (`mlops score`, the scoring flow); command-line flags override these."""

    chunk_rows: int = Field(
        default=100_000, ge=1, description="Rows scored per chunk, bounding memory (a Parquet row group is read whole)."
    )
    on_invalid: Literal["fail", "reject"] = Field(
        default="fail",
        description="A row that breaks the contract: 'fail' the job (nothing is written) or 'reject' it into "
        "the rejects file, with its reason, and score the rest.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="Processes scoring partitions at once; more than 1 runs them on a local Dask cluster.",
    )
    dask_address: str | None = Field(
        default=None,
        description="A Dask scheduler to score partitions on (tcp://host:8786); its workers must see the input, "
        "the output folder and the workspace at the same paths.",
    )


class MonitoringConfig(_Section):
    """Drift and decay checks (`mlops monitor`, the monitoring flow) and when they ask for retraining."""

    reference_rows: int = Field(
        default=20_000,
        ge=100,
        description="Training rows (with the model's scores) stored with each model as its reference.",
    )
    min_rows: int = Field(default=200, ge=10, description="A window with fewer rows gets no verdict.")
    p_value: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="A feature's test (numeric: KS or chi-square over its bins; categorical: chi-square) must "
        "reject at this level ...",
    )
    psi_min: float = Field(
        default=0.1, ge=0, description="... and its population stability index reach this, for the feature to drift ..."
    )
    psi_threshold: float = Field(
        default=0.25,
        ge=0,
        description="... or its PSI alone reach this beyond what chance gives samples of these sizes.",
    )
    drift_share: float = Field(
        default=0.2, gt=0, le=1, description="The window drifts when at least this share of features drift ..."
    )
    score_js_threshold: float = Field(
        default=0.1, gt=0, le=1, description="... or the Jensen-Shannon distance of the model's scores reaches this."
    )
    decay_tolerance: float = Field(
        default=0.03,
        ge=0,
        description="With labels: performance decays when the champion's gate metric falls more than this below "
        "its held-out score at training (for rmse and mae, a share of that score: they carry the target's units).",
    )
    null_rate_tolerance: float = Field(
        default=0.05, ge=0, le=1, description="Flag a column whose null rate grows by more."
    )
    new_category_tolerance: float = Field(
        default=0.01, ge=0, le=1, description="Flag a column when more than this share of rows hold unseen categories."
    )
    labels: str | None = Field(
        default=None,
        description="Where labels arrive: a file, folder or glob of id + target rows ('{home}' expands), joined on "
        "the id column to windows without labels of their own (e.g. prediction-log windows); null: none.",
    )
    windows: int = Field(
        default=3, ge=1, description="Retrain when drift or decay held in `min_windows` of the last `windows` ..."
    )
    min_windows: int = Field(default=2, ge=1, description="... windows judged against the current champion.")
    retrain: Literal["inline", "event", "off"] = Field(
        default="inline",
        description="On a retraining verdict: 'inline' runs the training flow at once, 'event' emits the Prefect "
        "event `mlops.retrain.requested` (what `mlops deploy`'s training trigger listens for), 'off' only reports.",
    )

    @field_validator("min_windows")
    @classmethod
    def _fits_windows(cls, value: int, info: Any) -> int:
        windows = info.data.get("windows")
        if windows is not None and value > windows:
            raise ValueError(f"min_windows ({value}) cannot exceed windows ({windows})")
        return value


class ScheduleConfig(_Section):
    cron: str | None = Field(default=None, description="Cron expression; null: no schedule.")


class ScoringScheduleConfig(ScheduleConfig):
    input: str | None = Field(default=None, description="File scored on each run ('{home}' expands).")
    output: str | None = Field(default=None, description="Output file ('{date}' expands to the run's date).")


class LandingConfig(_Section):
    folder: str | None = Field(
        default="{home}/landing/{model}",
        description="New data files dropped here start a training run ('{model}': the model's name); null: off.",
    )
    poll_seconds: float = Field(default=60.0, ge=1, description="How often the folder is checked.")


class DeployConfig(_Section):
    """`mlops deploy`: the Prefect deployments it serves, their schedules and triggers."""

    timezone: str = Field(default="UTC", description="Time zone of the cron schedules.")
    training: ScheduleConfig = ScheduleConfig(cron="0 3 * * 1")
    monitoring: ScheduleConfig = ScheduleConfig(cron="0 * * * *")
    scoring: ScoringScheduleConfig = ScoringScheduleConfig()
    drift_trigger: bool = Field(
        default=True, description="Run training when the monitor emits `mlops.retrain.requested`."
    )
    landing: LandingConfig = LandingConfig()


class PrefectConfig(_Section):
    server: Literal["local", "ephemeral"] = Field(
        default="local",
        description="Without PREFECT_API_URL: 'local' starts (once) and reuses a Prefect server under the "
        "workspace; 'ephemeral' starts a temporary server for each command.",
    )
    idle_minutes: float | None = Field(
        default=30.0,
        gt=0,
        description="The local server exits by itself after this long without a request (null: runs until "
        "`mlops server stop`); the next command starts it again.",
    )
    heartbeat_seconds: int | None = Field(
        default=None,
        ge=30,
        description="Flow-run heartbeat interval. Heartbeats only matter to a server that runs a "
        "zombie-flow automation; off by default, because stopping the heartbeat thread adds up to 1 s "
        "to every flow run.",
    )


class PipelineConfig(_Section):
    """The whole pipeline's settings; flows take it as their only parameter."""

    home: Path = Field(default=Path(".mlops"), description="Workspace directory holding all state.")
    models_dir: Path = Field(
        default=Path("models"), description="Where each model's own settings live, one `<name>.yaml` per model."
    )
    seed: int = 42
    task: TaskName | None = Field(
        default=None, description="binary, multiclass or regression; default: inferred from the target column."
    )
    assumptions: tuple[str, ...] = Field(default=(), description="Documented assumptions about the data.")
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    curation: CurationConfig = CurationConfig()
    label_review: LabelReviewConfig = LabelReviewConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    search: SearchConfig = SearchConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    promotion: PromotionConfig = PromotionConfig()
    serving: ServingConfig = ServingConfig()
    scoring: ScoringConfig = ScoringConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    deploy: DeployConfig = DeployConfig()
    prefect: PrefectConfig = PrefectConfig()

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    def with_overrides(self, **sections: dict[str, Any]) -> PipelineConfig:
        """Return a copy with some fields of some sections replaced (None values are ignored)."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section].update({k: v for k, v in values.items() if v is not None})
        return PipelineConfig.model_validate(data)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _EnvOverrides(EnvSettingsSource):
    """`MLOPS__<SECTION>__<KEY>` variables as nested overrides, read by pydantic-settings from a given
    environment. Values are parsed as YAML, like the file: "0.8" a number, "[a, b]" a list, "null" None."""

    def __init__(self, environ: dict[str, str]) -> None:
        self._environ = environ
        super().__init__(
            PipelineConfig,  # type: ignore[arg-type]  # a plain model: only its fields are read
            case_sensitive=False,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter="__",
        )

    def _load_env_vars(self) -> dict[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{ENV_PREFIX}{field_name.upper()}: not valid YAML: {exc}") from exc


def _nulls(node: Any) -> Any:
    """Empty or `null` scalars mean None, as they do in the YAML file."""
    if isinstance(node, dict):
        return {key: _nulls(value) for key, value in node.items()}
    if isinstance(node, str) and node.strip() in ("", "~", "null", "Null", "NULL"):
        return None
    return node


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    unknown = sorted(
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX)
        and name[len(ENV_PREFIX) :].split("__")[0].lower() not in PipelineConfig.model_fields
    )
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in the environment: {', '.join(unknown)}; "
            f"the sections are {', '.join(PipelineConfig.model_fields)}"
        )
    overrides: dict[str, Any] = _nulls(_EnvOverrides(environ)())
    if "MLOPS_HOME" in environ and environ["MLOPS_HOME"].strip():
        overrides["home"] = environ["MLOPS_HOME"]
    return overrides


def _resolve_relative(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Resolve paths written in the YAML file relative to the file, not to the current directory."""
    data = dict(data)
    if "home" in data and data["home"] is not None and not Path(data["home"]).expanduser().is_absolute():
        data["home"] = str(base_dir / data["home"])
    if data.get("models_dir") and not Path(data["models_dir"]).expanduser().is_absolute():
        data["models_dir"] = str(base_dir / data["models_dir"])
    validation = data.get("validation")
    if isinstance(validation, dict) and validation.get("suite_dir"):
        suite_dir = Path(validation["suite_dir"])
        if not suite_dir.is_absolute():
            data["validation"] = {**validation, "suite_dir": str(base_dir / suite_dir)}
    source = (data.get("data") or {}).get("source")
    if (
        isinstance(source, str)
        and source
        and "{home}" not in source
        and not re.match(r"^[a-zA-Z][\w+.-]*://", source)
        and not Path(source).expanduser().is_absolute()
    ):
        data["data"] = {**data["data"], "source": str(base_dir / source)}
    return data


def find_config_file(start: Path | None = None) -> Path | None:
    """The config named by MLOPS_CONFIG, else the nearest mlops.yaml from `start` upwards."""
    named = os.environ.get("MLOPS_CONFIG")
    if named:
        return Path(named)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / DEFAULT_CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> PipelineConfig:
    """Load the YAML config (if any), apply environment overrides, and validate."""
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, got {type(loaded).__name__}")
        data = _resolve_relative(loaded, path.resolve().parent)
    data = _deep_merge(data, _env_overrides(environ))
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid configuration{where}: {problems}") from exc


def dataset_name(config: PipelineConfig) -> str:
    """The dataset's name: it names the suite, the experiment and the registered model."""
    from components.data.extract import dataset_name_for

    if config.data.name:
        return config.data.name
    if not config.data.source:
        raise ConfigError("no data source: set data.source in the config or pass --data")
    return dataset_name_for(config.data.source)


def resolve_source(config: PipelineConfig, home: Path) -> str:
    """The training data source with `{home}` expanded to the workspace root."""
    if not config.data.source:
        raise ConfigError("no data source: set data.source in the config or pass --data")
    if not config.data.target:
        raise ConfigError("no target column: set data.target in the config or pass --target")
    return config.data.source.replace("{home}", str(home))
