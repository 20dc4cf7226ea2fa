"""Process environment for every entry point: telemetry off, state inside the workspace."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from components.core.workspace import Workspace

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    # MLflow reads only this switch (its DO_NOT_TRACK check wants the literal "true").
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
}


def disable_telemetry(environ: MutableMapping[str, str] | None = None) -> None:
    """Turn off every library's usage reporting unless the user set the switch explicitly."""
    target = os.environ if environ is None else environ
    for name, value in TELEMETRY_OFF.items():
        target.setdefault(name, value)


def private_files() -> None:
    """Files and folders this process creates are its owner's only (umask 077 added to the user's):
    the registry database, prediction logs and reports hold data and credentials."""
    os.umask(os.umask(0o077) | 0o077)


def workspace_environment(workspace: Workspace, environ: MutableMapping[str, str] | None = None) -> None:
    """Point Prefect's home (database, logs) into the workspace; a value the user set wins.

    MLflow is pointed at the workspace by `registry.connect`, unless MLFLOW_TRACKING_URI is set.
    """
    target = os.environ if environ is None else environ
    disable_telemetry(target)
    if environ is None:
        private_files()
    target.setdefault("PREFECT_HOME", str(workspace.prefect_home))
    # BentoML's model and Bento stores (`mlops build`) live in the workspace too.
    target.setdefault("BENTOML_HOME", str(workspace.root / "bentoml"))
    target.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
