"""The tracking store: which MLflow server (or the workspace's SQLite file) and its experiments."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from components.core.errors import UserError
from components.core.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient


class RegistryError(UserError, RuntimeError):
    """The tracking server or model registry refused an operation."""


# mlflow.set_tracking_uri/set_registry_uri also export MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI;
# values this process exported itself are not a user's choice and must not pin later workspaces.
_EXPORTED: set[str] = set()


def _user_uri(variable: str) -> str | None:
    value = os.environ.get(variable)
    return value if value and value not in _EXPORTED else None


def tracking_uri(workspace: Workspace) -> str:
    """MLFLOW_TRACKING_URI when the user set it (a real server), else the workspace's SQLite store."""
    return _user_uri("MLFLOW_TRACKING_URI") or workspace.tracking_uri


def is_embedded(uri: str, workspace: Workspace) -> bool:
    return uri == workspace.tracking_uri


def connect(workspace: Workspace) -> MlflowClient:
    """Point MLflow at the configured store and return a client for it."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(workspace)
    if is_embedded(uri, workspace):
        workspace.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
        workspace.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    registry = _user_uri("MLFLOW_REGISTRY_URI") or uri
    if is_embedded(uri, workspace):
        _EXPORTED.add(uri)  # exported by the two calls below; a user's server URI is never added
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    return MlflowClient()


def ensure_experiment(client: MlflowClient, name: str, workspace: Workspace) -> str:
    """The experiment's id; on the embedded store its artifacts live under the workspace."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_location = None
    if is_embedded(tracking_uri(workspace), workspace):
        artifact_location = (workspace.mlflow_artifacts / name).as_uri()
    return str(client.create_experiment(name, artifact_location=artifact_location))
