"""Tracking runs: what a pipeline run records in MLflow (params, metrics, tags, artifacts, nested trials)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.core.workspace import Workspace
from components.tracking.registry.connection import connect, ensure_experiment

if TYPE_CHECKING:
    from mlflow import MlflowClient


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the code that runs, when it runs from a git checkout."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=start or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def run_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    """The latest value of each metric a run logged."""
    return {k: float(v) for k, v in client.get_run(run_id).data.metrics.items()}


def flatten_config(config: Any) -> dict[str, str]:
    """A pydantic config as flat `section.key` params, the way MLflow stores them."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = str(value)[:6000]

    walk("", config.model_dump(mode="json", exclude={"serving", "scoring", "prefect", "home", "assumptions", "alerts"}))
    return flat


def start_run(client: MlflowClient, experiment_id: str, tags: dict[str, str], params: dict[str, str]) -> str:
    run = client.create_run(experiment_id, tags=tags)
    log_params(run.info.run_id, params)
    return str(run.info.run_id)


def log_params(run_id: str, params: dict[str, Any]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Param

    if params:
        MlflowClient().log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])


def log_metrics(run_id: str, metrics: dict[str, float]) -> None:
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    if metrics:
        MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    MlflowClient().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_child_run(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    failed: bool = False,
) -> str:
    """A nested run (a search trial) under `parent_run_id`, logged in one batch."""
    import math
    import time

    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent_run_id, "mlflow.runName": name})
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)],
    )
    client.set_terminated(run.info.run_id, status="FAILED" if failed else "FINISHED")
    return str(run.info.run_id)


def log_figure(run_id: str, figure: Any, artifact_file: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_figure(run_id, figure, artifact_file)


def log_dict(run_id: str, data: Any, artifact_file: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_dict(run_id, data, artifact_file)


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_text(run_id, text, artifact_file)


def log_artifact(run_id: str, path: Path, artifact_path: str | None = None) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_artifact(run_id, str(path), artifact_path)


def log_validation_run(
    workspace: Workspace,
    dataset: str,
    report: dict[str, Any],
    suite: dict[str, Any],
    docs_pages: list[Path],
    accepted: bool,
) -> str:
    """Record a standalone validation (no training) as its own MLflow run in the dataset's experiment."""
    client = connect(workspace)
    run_id = start_run(
        client,
        ensure_experiment(client, dataset, workspace),
        tags={"mlflow.runName": "validate", "mlops.kind": "validation", "dataset": dataset},
        params={},
    )
    log_dict(run_id, report, "validation/report.json")
    log_dict(run_id, suite, f"validation/{dataset}.json")
    for page in docs_pages:
        log_artifact(run_id, page, "validation/data_docs")
    end_run(client, run_id, "FINISHED" if accepted else "FAILED", {"outcome": "accepted" if accepted else "rejected"})
    return run_id


def end_run(client: MlflowClient, run_id: str, status: str, tags: dict[str, str]) -> None:
    set_tags(run_id, tags)
    client.set_terminated(run_id, status=status)
