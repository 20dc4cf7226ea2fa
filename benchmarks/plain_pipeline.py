"""Baseline for the training benchmark: the same component functions, one process,
no Prefect, no MLflow. Run as a script so process start-up counts on both sides."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from components.config import dataset_name, load_config, resolve_source
from components.contract import Validator, load_suite, profile_suite, save_suite, suite_path
from components.datacard import describe_frame
from components.environment import disable_telemetry
from components.evaluate import evaluate_model
from components.extract import extract_table
from components.prepare import infer_feature_spec, split_data
from components.train import train_model
from components.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    disable_telemetry()
    started = time.perf_counter()
    config = load_config(args.config)
    workspace = Workspace.at(config.home).ensure()
    data = config.data
    frame = extract_table(resolve_source(config, workspace.root), data.query)
    describe_frame(frame, data.time_column)
    path = suite_path(config.validation.suite_dir, dataset_name(config))
    if not path.exists():
        save_suite(profile_suite(frame, dataset_name(config), target=data.target, id_column=data.id_column), path)
    report = Validator(workspace.gx_dir).validate(frame, load_suite(path))
    assert report.success, report.summary()
    assert data.target is not None
    spec = infer_feature_spec(frame, data.target, data.id_column, data.time_column, data.drop_columns)
    split = split_data(frame, spec, config.split.test_size, config.seed)
    model = train_model(split.X_train, split.y_train, spec, config.model, config.seed)
    metrics = evaluate_model(model, split.X_test, split.y_test)
    evaluate_model(model, split.X_train, split.y_train)
    print(f"plain pipeline: roc_auc={metrics['roc_auc']:.4f} in {time.perf_counter() - started:.1f}s after imports")


if __name__ == "__main__":
    main()
