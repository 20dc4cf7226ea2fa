"""A throwaway project for a benchmark: `mlops.yaml` with the project's settings and one model file."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def write_project(folder: Path, project: dict[str, Any], name: str, model: dict[str, Any]) -> Path:
    """`folder/mlops.yaml` from `project` and `folder/models/<name>.yaml` from `model`; returns the former."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "models" / f"{name}.yaml").write_text(yaml.safe_dump(model, sort_keys=False))
    path = folder / "mlops.yaml"
    path.write_text(yaml.safe_dump(project, sort_keys=False))
    return path


def loan_model(source: Path, **sections: Any) -> dict[str, Any]:
    """The generated loan data's model settings, with more sections for it."""
    return {
        "data": {"source": str(source), "target": "default", "id_column": "loan_id", "time_column": "application_time"},
        "promotion": {"metric": "roc_auc", "min_score": 0.6},
        **sections,
    }


def timed_command(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds of a command run to completion; a failure stops the benchmark with its output."""
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-5000:])
        raise SystemExit(f"benchmark command failed ({result.returncode}): {' '.join(cmd)}")
    return elapsed
