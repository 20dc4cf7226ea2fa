"""Shared fixtures: telemetry off, small generated data, isolated workspaces."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from components.core.config import PipelineConfig
from components.core.environment import disable_telemetry
from components.core.project import load_project

disable_telemetry()
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/stack (the server stack as real processes) is collected only when asked for: `-m stack`."""
    if collection_path == Path(__file__).parent / "stack":
        return "stack" not in (config.getoption("markexpr") or "") or None
    return None


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may read the developer's workspace, config or tracking server."""
    for name in ("MLOPS_HOME", "MLOPS_CONFIG", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_MODEL_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("MLOPS__")]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def loans() -> pd.DataFrame:
    """1,200 generated loan rows (two weekly batches)."""
    from components.simulation.simulate import generate_batches

    return pd.concat([b.frame for b in generate_batches(2, 600, seed=7)], ignore_index=True)


def write_config(path: Path, home: Path, source: Path, suite_dir: Path, name: str = "loans", **extra: str) -> Path:
    """A project for the generated loan data, everything under tmp dirs: `path` (mlops.yaml) holds
    the project's settings, `models/<name>.yaml` beside it the model's (with `extra` sections)."""
    project = [
        f"home: {home}",
        "seed: 7",
        "validation:",
        f"  suite_dir: {suite_dir}",
        "search:",
        "  trials: 4",
        "evaluation:",
        "  plots: false",
        "prefect:",
        "  server: ephemeral",
    ]
    model = [
        "data:",
        f"  source: {source}",
        "  target: default",
        "  id_column: loan_id",
        "  time_column: application_time",
        "promotion:",
        "  metric: roc_auc",
        "  min_score: 0.6",
    ]
    model += [f"{k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(project) + "\n")
    models = path.parent / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / f"{name}.yaml").write_text("\n".join(model) + "\n")
    return path


def load_model(path: Path, name: str = "loans", environ: dict[str, str] | None = None) -> PipelineConfig:
    """One model's settings from a project written by `write_config` (no environment unless given)."""
    return load_project(path, environ={} if environ is None else environ).model_config(name)


@pytest.fixture(scope="session")
def prefect_api():
    """A real, temporary Prefect API for the whole session (one server start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def trained(prefect_api, tmp_path_factory: pytest.TempPathFactory):
    """A workspace whose registry holds a champion for the generated `loans` dataset."""
    from components.simulation.simulate import write_batches
    from flows.training import training_flow

    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    write_batches(data, 2, 600, seed=7)
    config_path = write_config(root / "mlops.yaml", root / "ws", data, root / "expectations")
    config = load_model(config_path).with_overrides(
        evaluation={"plots": True, "slices": ("home_ownership", "region"), "slice_min_rows": 20}
    )
    result = training_flow(config)
    assert result.promoted, result.reason
    return config_path, config, result


@pytest.fixture
def receiver():
    """A real local webhook receiver (tests/receiver.py), stopped after the test."""
    from tests.receiver import Receiver

    running = Receiver()
    yield running
    running.close()
