"""Baseline for the training benchmark: the same component functions, one process,
no Prefect, no MLflow. Run as a script so process start-up counts on both sides.

It does what a run does up to the decision (screening, curation, label review, the search across
families, threshold or interval, training, evaluation with dummy baseline, slices and plots). Only the registry work
stays on the mlops side: logging and registering, scoring the champion on the same rows with
its bootstrap interval, and the serving check."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from components.core.config import dataset_name, resolve_source
from components.core.environment import disable_telemetry
from components.core.project import load_project
from components.core.workspace import Workspace
from components.data.contract import Validator, load_suite, profile_from_config, save_suite, suite_path
from components.data.curate import deduplicate, outlier_report
from components.data.datacard import data_card
from components.data.extract import combine, read_batches
from components.data.label_review import review_labels
from components.data.quarantine import remember_accepted, screen_with, trusted_batches
from components.modeling import plots, search
from components.modeling.evaluate import slice_metrics
from components.modeling.prepare import infer_feature_spec, split_data
from components.modeling.selection import plan_selection, select_model
from components.modeling.tasks import infer_task, task_named
from components.modeling.train import (
    build_model,
    fit_final_model,
    review_candidates,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True, help="the project file")
    parser.add_argument("--name", required=True, help="the model")
    args = parser.parse_args()
    disable_telemetry()
    started = time.perf_counter()
    config = load_project(args.config).model_config(args.name)
    workspace = Workspace.at(config.home).ensure()
    data = config.data
    batches = read_batches(resolve_source(config, workspace.root), data.query)
    dataset = dataset_name(config)
    assert data.target is not None
    task = task_named(infer_task(combine(batches)[data.target], config.task).task)
    path = suite_path(config.validation.suite_dir, dataset)
    if not path.exists():
        save_suite(profile_from_config(combine(batches), dataset, config, task=task.name), path)
    suite = load_suite(path)
    ledger = workspace.accepted_batches(dataset)
    screening = screen_with(
        Validator(workspace.gx_dir), batches, suite, trusted=trusted_batches(ledger, batches, suite)
    )
    assert screening.success and screening.frame is not None, screening.report.summary()
    remember_accepted(ledger, screening.accepted, suite)
    frame = screening.frame
    rows_before = len(frame)
    frame, dedup = deduplicate(frame, data.id_column, max_share=config.validation.duplicate_tolerance)
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
    seed = config.seed
    split = split_data(
        frame,
        spec,
        config.split.test_size,
        seed,
        task=task,
        strategy=config.split.strategy,
        time_column=data.time_column,
    )
    review = config.label_review
    review_labels(
        {name: build_model(spec, member, seed, task=task) for name, member in review_candidates(config, task).items()},
        split.X_train,
        split.y_train,
        folds=review.folds,
        seed=seed,
        max_rows=review.max_rows,
        regression=not task.classification,
        target_precision=review.target_precision,
        error_rate=review.error_rate,
    )
    metric = task.metric_for(config.promotion.metric)
    plan = plan_selection(spec, split, config, task)
    chosen = select_model(
        plan, split.X_train, split.y_train, metric=config.search.metric or metric, seed=seed, task=task
    ).members
    final = fit_final_model(
        split.X_train,
        split.y_train,
        spec,
        chosen,
        seed,
        task=task,
        folds=config.search.cv_folds,
        tune_threshold=lambda y, p: search.tune_threshold(y, p, pos_label=sorted(y.unique())[1]),
    )
    model = final.model
    classes = list(getattr(model, "classes_", []))
    threshold = final.threshold.threshold if final.threshold else None
    output = task.output(model, split.X_test)
    metrics = task.compute_metrics(split.y_test, output, classes, threshold)
    task.compute_metrics(split.y_train, task.output(model, split.X_train), classes, threshold)
    dummy = task.dummy().fit(split.X_train, split.y_train)
    task.compute_metrics(split.y_test, task.output(dummy, split.X_test), classes)
    slice_metrics(
        frame.loc[split.X_test.index],
        config.evaluation.slices,
        task.scorer(metric, split.y_test, output, classes, threshold),
        min_rows=config.evaluation.slice_min_rows,
    )
    if config.evaluation.plots:
        report = plots.evaluation_plots(
            model,
            build_model(spec, chosen, seed, task=task),
            split,
            output,
            classes,
            threshold=threshold,
            scoring=task.sklearn_scoring(metric),
            cv_folds=config.search.cv_folds,
            seed=seed,
            learning_curve_max_rows=config.evaluation.learning_curve_max_rows,
            importance_max_rows=config.evaluation.importance_max_rows,
            half_width=final.interval.half_width if final.interval else None,
        )
        with tempfile.TemporaryDirectory() as folder:
            plots.save_figures(report.figures, Path(folder))
    print(f"plain pipeline: {metric}={metrics[metric]:.4f} in {time.perf_counter() - started:.1f}s after imports")


if __name__ == "__main__":
    main()
