"""The training pipeline without Prefect: `components.pipeline.run_training` from a plain process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.simulation.simulate import write_batches
from components.tracking.runlog import MemoryRun
from tests.conftest import load_model, write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_batches(data, 2, 600, seed=7)
    return write_config(tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "expectations")


def test_python_c_trains_registers_and_promotes_without_prefect(project: Path) -> None:
    """What the docs promise: one `python -c` runs the whole chain, registry included, and never imports Prefect."""
    code = (
        "import sys; from components.core.project import load_project; from components.pipeline import run_training; "
        f"result = run_training(load_project({str(project)!r}).model_config('loans')); "
        "assert 'prefect' not in sys.modules, 'prefect was imported'; print(result.as_json())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["promoted"] and result["model_version"] == "1" and result["run_id"]
    assert result["task"] == "binary" and result["metrics"]["roc_auc"] > 0.6

    from components.core.workspace import Workspace
    from components.tracking import registry

    champion = registry.get_champion(registry.connect(Workspace.at(project.parent / "ws")), "loans")
    assert champion is not None and champion.version == "1"


def test_a_memory_run_records_every_step_and_registers_nothing(project: Path) -> None:
    from components.pipeline import run_training

    record = MemoryRun()
    result = run_training(load_model(project), record=record)
    assert result.run_id is None and result.model_version is None and not result.promoted
    assert result.metrics["roc_auc"] > 0.6 and result.data["judgement"] == "clean"
    for artifact in ("validation/report.json", "curation/outliers.json", "data_card.json", "search/trials.json"):
        assert artifact in record.artifacts
    assert record.metrics["data_rows"] == 1200 and "test_roc_auc" in record.metrics
    assert record.tags["task"] == "binary" and record.tags["model.family"]
    assert not (project.parent / "ws" / "mlflow").exists()  # nothing tracked
