"""The data sections: where the rows come from, their contract, curation, label review and the split."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_serializer

from components.core.config.base import _Section
from components.core.secrets import redact


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
    snapshot: bool = Field(
        default=True,
        description="Log the validated rows (Parquet), the settings and the contract with each training run, "
        "so `mlops reproduce` can retrain a version whatever happens to the source later.",
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
