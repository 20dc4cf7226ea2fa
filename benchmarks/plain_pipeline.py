"""Baseline for the training benchmark: the same component functions, one process,
no Prefect, no MLflow. Run as a script so process start-up counts on both sides."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from components.config import dataset_name, load_config, resolve_source
from components.contract import Validator, load_suite, profile_from_config, save_suite, suite_path
from components.curate import deduplicate, outlier_report
from components.datacard import data_card
from components.environment import disable_telemetry
from components.evaluate import evaluate_model
from components.extract import combine, read_batches
from components.label_review import review_labels
from components.prepare import infer_feature_spec, split_data
from components.quarantine import remember_accepted, screen_with, trusted_batches
from components.train import build_model, train_model
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
    batches = read_batches(resolve_source(config, workspace.root), data.query)
    dataset = dataset_name(config)
    path = suite_path(config.validation.suite_dir, dataset)
    if not path.exists():
        save_suite(profile_from_config(combine(batches), dataset, config), path)
    suite = load_suite(path)
    ledger = workspace.accepted_batches(dataset)
    screening = screen_with(
        Validator(workspace.gx_dir), batches, suite, trusted=trusted_batches(ledger, batches, suite)
    )
    assert screening.success and screening.frame is not None, screening.report.summary()
    remember_accepted(ledger, screening.accepted, suite)
    frame = screening.frame
    assert data.target is not None
    rows_before = len(frame)
    frame, dedup = deduplicate(frame, data.id_column)
    spec = infer_feature_spec(frame, data.target, data.id_column, data.time_column, data.drop_columns)
    cur = config.curation
    outlier_report(
        frame,
        spec.numeric,
        iqr_factor=cur.iqr_factor,
        contamination=cur.isolation_contamination,
        seed=config.seed,
        max_rows=cur.max_rows,
    )
    data_card(
        frame,
        source=str(data.source),
        rows_before_curation=rows_before,
        time_column=data.time_column,
        assumptions=config.assumptions,
        curation=dedup.as_dict(),
    )
    split = split_data(frame, spec, config.split.test_size, config.seed)
    review = config.label_review
    review_labels(
        build_model(spec, config.model, config.seed),
        split.X_train,
        split.y_train,
        folds=review.folds,
        seed=config.seed,
        max_rows=review.max_rows,
    )
    model = train_model(split.X_train, split.y_train, spec, config.model, config.seed)
    metrics = evaluate_model(model, split.X_test, split.y_test)
    evaluate_model(model, split.X_train, split.y_train)
    print(f"plain pipeline: roc_auc={metrics['roc_auc']:.4f} in {time.perf_counter() - started:.1f}s after imports")


if __name__ == "__main__":
    main()
