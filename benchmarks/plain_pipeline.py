"""Baseline for the training benchmark: the training pipeline as one plain function, one process,
no Prefect, no MLflow. Run as a script so process start-up counts on both sides.

It calls `components.pipeline.run_training` with a `MemoryRun`: the same steps `mlops run` wraps in
Prefect tasks (screening, curation, label review, the search across families, threshold or interval,
training, evaluation with dummy baseline, slices and plots), recorded in memory instead of MLflow.
Only the registry work stays on the mlops side: logging and registering, the refit for serving,
scoring the champion on the same rows with its bootstrap interval, and the serving check."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from components.core.environment import disable_telemetry
from components.core.project import load_project
from components.core.workspace import Workspace
from components.pipeline import run_training
from components.tracking.runlog import MemoryRun


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True, help="the project file")
    parser.add_argument("--name", required=True, help="the model")
    args = parser.parse_args()
    disable_telemetry()
    started = time.perf_counter()
    config = load_project(args.config).model_config(args.name)
    Workspace.at(config.home).ensure()
    record = MemoryRun()
    result = run_training(config, record=record)
    metric = str(result.metric)
    print(
        f"plain pipeline: {metric}={result.metrics[metric]:.4f} in {time.perf_counter() - started:.1f}s after imports"
        f" ({len(record.metrics)} metrics, {len(record.artifacts)} artifacts recorded in memory)"
    )


if __name__ == "__main__":
    main()
