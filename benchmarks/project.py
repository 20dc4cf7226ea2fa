"""A throwaway project for a benchmark: `mlops.yaml` with the project's settings and one model file."""

from __future__ import annotations

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
