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


class TrackingUnreachable(RegistryError):
    """The tracking store (a server, or the database behind it) does not answer."""


def check_store(workspace: Workspace, timeout: float = 10.0) -> None:
    """Fail fast, naming the store, when the tracking store cannot be used; the workspace's own
    SQLite file needs no check. A server is asked one cheap question with the run's credentials
    (MLFLOW_TRACKING_USERNAME/PASSWORD); a database URL gets a connection and `SELECT 1`. Later
    calls keep MLflow's own retries, so a server restarting mid-run is waited for, not fatal."""
    uri = tracking_uri(workspace)
    if is_embedded(uri, workspace):
        return
    if uri.startswith(("http://", "https://")):
        _check_server(uri, timeout)
    elif "://" in uri and not uri.startswith(("file:", "databricks")):
        _check_database(uri, timeout)


def _check_server(uri: str, timeout: float) -> None:
    import requests

    from components.core.secrets import redact

    shown = redact(uri)
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
    try:
        response = requests.get(
            url,
            params={"max_results": 1},
            auth=(user, password) if user and password else None,
            timeout=timeout,
            verify=os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true",
        )
    except requests.RequestException as exc:
        raise TrackingUnreachable(
            f"the MLflow tracking server at {shown} does not answer ({type(exc).__name__}): start it, or fix "
            "MLFLOW_TRACKING_URI (unset it to use the workspace's own store)"
        ) from exc
    if response.status_code in (401, 403):
        raise TrackingUnreachable(
            f"the MLflow tracking server at {shown} refused the credentials (HTTP {response.status_code}): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user it knows"
        )
    if response.status_code >= 500:
        raise TrackingUnreachable(
            f"the MLflow tracking server at {shown} answers but fails (HTTP {response.status_code}); its backend "
            f"database may be down: {response.text.strip()[:300]}"
        )


def _check_database(uri: str, timeout: float) -> None:
    import sqlalchemy

    from components.core.secrets import redact

    shown = redact(uri)
    connect_args = {"connect_timeout": int(timeout)} if uri.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except ModuleNotFoundError as exc:
        raise TrackingUnreachable(
            f"the tracking store {shown} needs the database driver {exc.name!r}: install the project's "
            "server extra (`uv sync --extra server`)"
        ) from exc
    except Exception as exc:  # the driver's own error, its first line kept
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingUnreachable(
            f"the tracking database at {shown} is unreachable ({redact(first)}): start it, or fix MLFLOW_TRACKING_URI"
        ) from exc
