"""Baseline for the training benchmark: the same component functions, one process,
no Prefect, no MLflow. Run as a script so process start-up counts on both sides.

It does what a run does up to the decision (screening, curation, label review, search,
threshold, training, evaluation with dummy baseline, slices and plots). Only the registry work
stays on the mlops side: logging and registering, scoring the champion on the same rows with
its bootstrap interval, and the serving check."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sklearn.dummy import DummyClassifier

from components import plots, search
from components.config import dataset_name, load_config, resolve_source
from components.contract import Validator, load_suite, profile_from_config, save_suite, suite_path
from components.curate import deduplicate, outlier_report
from components.datacard import data_card
from components.environment import disable_telemetry
from components.evaluate import compute_metrics, evaluate_model, slice_metrics
from components.extract import combine, read_batches
from components.label_review import review_labels
from components.prepare import infer_feature_spec, split_data
from components.quarantine import remember_accepted, screen_with, trusted_batches
from components.train import build_model, model_factory, train_model, with_class_weight
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
    model_config = with_class_weight(config.model, split.y_train)
    metric = config.search.metric or config.promotion.metric
    seed = config.seed
    factory = model_factory(spec, model_config, seed)

    if config.search.method != "none":
        result = search.run_search(
            factory,
            model_config.estimator,
            split.X_train,
            split.y_train,
            config.search,
            metric=metric,
            seed=seed,
            fixed_params=dict(model_config.params),
        )
        model_config = model_config.model_copy(update={"params": {**model_config.params, **result.best_params}})
    threshold = None
    if split.y_train.nunique() == 2:
        oof = search.out_of_fold_proba(
            build_model(spec, model_config, seed), split.X_train, split.y_train, folds=config.search.cv_folds, seed=seed
        )
        positive = sorted(split.y_train.unique())[1]
        threshold = search.tune_threshold(split.y_train, oof[:, 1], pos_label=positive).threshold
    model = train_model(split.X_train, split.y_train, spec, model_config, seed, threshold=threshold)
    proba = model.predict_proba(split.X_test)
    classes = list(model.classes_)
    metrics = compute_metrics(split.y_test, proba, classes, threshold)
    evaluate_model(model, split.X_train, split.y_train, threshold)
    evaluate_model(DummyClassifier(strategy="prior").fit(split.X_train, split.y_train), split.X_test, split.y_test)
    slice_metrics(
        split.y_test,
        proba,
        classes,
        frame.loc[split.X_test.index],
        config.evaluation.slices,
        metric,
        min_rows=config.evaluation.slice_min_rows,
        threshold=threshold,
    )
    if config.evaluation.plots:
        report = plots.evaluation_plots(
            model,
            build_model(spec, model_config, seed),
            split,
            proba,
            classes,
            threshold=threshold,
            scoring=plots.sklearn_scoring(metric, len(classes)),
            cv_folds=config.search.cv_folds,
            seed=seed,
            learning_curve_max_rows=config.evaluation.learning_curve_max_rows,
            importance_max_rows=config.evaluation.importance_max_rows,
        )
        with tempfile.TemporaryDirectory() as folder:
            plots.save_figures(report.figures, Path(folder))
    print(f"plain pipeline: roc_auc={metrics['roc_auc']:.4f} in {time.perf_counter() - started:.1f}s after imports")


if __name__ == "__main__":
    main()
