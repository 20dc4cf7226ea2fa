"""The BentoML service: serves the registry's `champion` for one dataset over HTTP.

Configuration comes from the environment (set by `mlops serve`): MLOPS_CONFIG / MLOPS_HOME
locate the pipeline config and workspace, MLOPS_MODEL_NAME picks the registered model
(default: the configured dataset), MLFLOW_TRACKING_URI points at a real registry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bentoml

from components import registry
from components.config import PipelineConfig, dataset_name, find_config_file, load_config
from components.environment import workspace_environment
from components.scoring import InputError, load_serving_model, predict_records
from components.workspace import Workspace


def _load_settings() -> tuple[PipelineConfig, str]:
    config = load_config(find_config_file())
    name = os.environ.get("MLOPS_MODEL_NAME") or dataset_name(config)
    return config, name


@bentoml.service(name="mlops_prediction_service", workers=1, traffic={"timeout": 30})
class PredictionService:
    """Loads `models:/<name>@champion` once per worker and answers predictions."""

    def __init__(self) -> None:
        config, name = _load_settings()
        workspace = Workspace.at(config.home)
        workspace_environment(workspace)
        client = registry.connect(workspace)
        champion = registry.get_champion(client, name)
        if champion is None:
            raise RuntimeError(f"registered model {name!r} has no champion; run `mlops run` first")
        self.model_name = name
        self.model_version = champion.version
        served = load_serving_model(champion.uri)
        self.model = served.model
        self.schema = served.schema
        self.max_rows = config.serving.max_rows_per_request

    @bentoml.api(route="/predict")
    def predict(self, rows: list[dict[str, Any]], ctx: bentoml.Context) -> dict[str, Any]:
        """Score rows given as {column: value} objects."""
        if len(rows) > self.max_rows:
            ctx.response.status_code = 413
            return {"error": f"{len(rows)} rows exceed the limit of {self.max_rows} per request"}
        try:
            predictions = predict_records(self.model, rows, self.schema)
        except InputError as exc:
            ctx.response.status_code = 400
            return {"error": str(exc)}
        return {
            "predictions": predictions.labels,
            "probabilities": predictions.probabilities,
            "model_version": self.model_version,
        }


def service_target() -> str:
    """The import string `bentoml serve` takes, relative to the project root."""
    return "serving.service:PredictionService"


PROJECT_ROOT = Path(__file__).resolve().parent.parent
