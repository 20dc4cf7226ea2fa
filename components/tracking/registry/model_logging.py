"""Logging a fitted pipeline as an MLflow model: pinned requirements, a signature, skops's trusted types."""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

import pandas as pd

from components.core.logs import DROP, quiet
from components.tracking.registry.loading import trusted_types

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

MODEL_ARTIFACT = "model"
# What the logged model needs at serving time; pinned to what trained it.
RUNTIME_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "skops", "mlflow")


def pip_requirements() -> list[str]:
    """Exact versions of the serving-time packages, so MLflow need not infer them (seconds)."""
    pins = []
    for package in RUNTIME_PACKAGES:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def signature_frame(X: pd.DataFrame) -> pd.DataFrame:
    """Integer features declared as doubles: a missing value at serving time must not break the schema."""
    return X.astype({c: "float64" for c in X.columns if pd.api.types.is_integer_dtype(X[c].dtype)})


SIGNATURE_SAMPLE_ROWS = 500
# The input example holds this many training rows: the rows every loader checks the compiled
# inference path against (`components.inference.compiled`), and the gate's serving check asks.
EXAMPLE_ROWS = 100


def signature_sample(X: pd.DataFrame, rows: int = SIGNATURE_SAMPLE_ROWS) -> pd.DataFrame:
    """A few rows that show every column's type and, where any value is missing, a missing one.

    Inferring a signature walks every value; on a million rows that alone takes seconds,
    while the schema only needs types and which columns may be null.
    """
    head = X.head(rows)
    missing = X.isna().any()
    extra = [int(X[c].isna().to_numpy().argmax()) for c in X.columns if missing[c] and not head[c].isna().any()]
    sample = pd.concat([head, X.iloc[sorted(set(extra))]]) if extra else head
    return signature_frame(sample)


def log_model(
    run_id: str,
    model: Pipeline,
    X_example: pd.DataFrame,
    info: dict[str, Any] | None = None,
    name: str = MODEL_ARTIFACT,
) -> str:
    """Log the fitted pipeline with signature and input example (up to `EXAMPLE_ROWS` of the
    training rows); returns the model URI.

    `info` (the task, a prediction interval, ...) is kept in the MLmodel file's metadata under
    `mlops`, where every loader of the model reads it (`scoring.read_model_info`).
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from components.inference.scoring import MODEL_METADATA_KEY

    picked = X_example if len(X_example) <= EXAMPLE_ROWS else X_example.sample(n=EXAMPLE_ROWS, random_state=0)
    example = signature_frame(picked)
    sample = signature_sample(X_example)
    signature = infer_signature(sample, model.predict(sample))
    _quiet_pip_version_warning()
    with mlflow.start_run(run_id=run_id):
        logged = mlflow.sklearn.log_model(
            model,
            name=name,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            skops_trusted_types=trusted_types(model),
            metadata={MODEL_METADATA_KEY: info} if info else None,
        )
    return str(logged.model_uri)


def _quiet_pip_version_warning() -> None:
    """uv's environments have no pip: MLflow warns on every model it logs that conda.yaml gets an
    unpinned `pip`. The model's own requirements are pinned (`pip_requirements`); drop the noise."""
    quiet(
        "pip version",
        ["mlflow.utils.environment"],
        lambda record: DROP if record.getMessage().startswith("Failed to resolve installed pip version") else None,
    )
