"""The model steps of training: prepare the split, review labels, select, train, refit, evaluate.

Each step takes the named results before it and the settings it uses, records what it did
through a `RunLog`, and returns a named result (`components.pipeline.results`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import (
    CurationConfig,
    EvaluationConfig,
    LabelReviewConfig,
    ModelConfig,
    SearchConfig,
    SplitConfig,
)
from components.data.curate import iqr_fences
from components.data.label_review import LabelReviewError, review_labels
from components.inference.scoring import decision_threshold
from components.modeling import gate, search, selection
from components.modeling.evaluate import slice_metrics
from components.modeling.prepare import split_data
from components.modeling.tasks import Task
from components.modeling.train import FinalModel, ThresholdChoice, build_model, fit_final_model, model_params
from components.modeling.train import review_candidates as reviewers_for
from components.pipeline.data import LOG, Log
from components.pipeline.results import Curated, Evaluation, Prepared, Selected
from components.tracking.runlog import RunLog

# Runs the planned search with its trials spread elsewhere: given the plan and a function that
# selects with an `evaluate_batch`, returns the selection (the flow's Dask runner is one).
Spread = Callable[[selection.SelectionPlan, Callable[..., selection.Selection]], selection.Selection]


def metric_key(name: str) -> str:
    """An MLflow metric name: slice values may hold characters MLflow refuses (=, ?, ...)."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def prepare(
    curated: Curated,
    *,
    split: SplitConfig,
    curation: CurationConfig,
    time_column: str | None,
    min_test_rows: int,
    seed: int,
    task: Task,
    run: RunLog,
    log: Log | None = None,
) -> Prepared:
    """The held-out split (seeded, or the newest rows by time) and the outlier policy's clip or drop."""
    log, spec = log or LOG, curated.spec
    rows = split_data(
        curated.frame,
        spec,
        split.test_size,
        seed,
        task=task,
        strategy=split.strategy,
        time_column=time_column,
        min_test_rows=min_test_rows,
    )
    _log_left_out(rows.unlabeled_rows, rows.rare_classes, spec.target, spec.notes, run, log)
    clip = None
    if curation.outlier_policy == "cap":
        clip = iqr_fences(rows.X_train, spec.numeric, curation.iqr_factor)
    elif curation.outlier_policy == "drop":
        flagged = pd.Series(curated.outlier_mask, index=curated.frame.index)
        drop = rows.X_train.index[flagged.reindex(rows.X_train.index, fill_value=False).to_numpy()]
        rows = rows.without_training_rows(drop)
        run.log_metrics({"outlier_rows_dropped_from_training": len(drop)})
        log.info("dropped %d outlier rows from the training split (test rows are kept)", len(drop))
    log.info(
        "features: %d numeric, %d categorical; split %d train / %d test rows (%s)",
        len(spec.numeric),
        len(spec.categorical),
        len(rows.X_train),
        len(rows.X_test),
        "the newest rows held out" if rows.by_time else "seeded",
    )
    return Prepared(spec, rows, task, clip)


def _log_left_out(
    unlabeled: int, rare: dict[str, int], target: str, notes: dict[str, str], run: RunLog, log: Log
) -> None:
    """Say which rows and columns the model will not learn from, and why."""
    if unlabeled:
        log.info("%d row(s) without a value of %r are unlabeled: left out", unlabeled, target)
    if rare:
        log.warning(
            "class(es) with too few rows to learn from were left out: %s",
            ", ".join(f"{k!r} ({v} rows)" for k, v in rare.items()),
        )
        run.set_tags({"rare_classes_left_out": json.dumps(rare)[:5000]})
    run.log_metrics({"unlabeled_rows": unlabeled, "rare_class_rows_left_out": sum(rare.values())})
    if notes:
        log.info("not used as features: %s", "; ".join(f"{k} ({v})" for k, v in notes.items()))
        run.log_dict(notes, "features/left_out.json")


def review(
    prepared: Prepared,
    curated: Curated,
    *,
    label_review: LabelReviewConfig,
    model: ModelConfig,
    seed: int,
    run: RunLog,
    log: Log | None = None,
) -> Prepared:
    """Out-of-fold label review on the training split; optionally exclude flagged rows."""
    log = log or LOG
    split, spec, task = prepared.split, prepared.spec, prepared.task
    ids = curated.frame[spec.id_column].loc[split.X_train.index] if spec.id_column else None
    try:
        candidates = {
            name: build_model(spec, member, seed, prepared.clip, task)
            for name, member in reviewers_for(label_review, model, task).items()
        }
        found = review_labels(
            candidates,
            split.X_train,
            split.y_train,
            ids=ids,
            folds=label_review.folds,
            seed=seed,
            max_rows=label_review.max_rows,
            regression=not task.classification,
            target_precision=label_review.target_precision,
            error_rate=label_review.error_rate,
        )
    except LabelReviewError as exc:  # advisory step: say so on the run, train anyway
        log.warning("label review skipped: %s", exc)
        run.set_tags({"label_review": f"skipped: {exc}"[:5000]})
        return prepared
    metrics = _record_review(found, run, log)
    if label_review.action == "exclude" and len(found.issues):
        split = split.without_training_rows(found.flagged_index)
        metrics["label_issues_excluded"] = len(found.flagged_index)
        log.info("excluded %d flagged rows from training", len(found.flagged_index))
    run.log_metrics(metrics)
    return replace(prepared, split=split)


def _record_review(found: Any, run: RunLog, log: Log) -> dict[str, float]:
    """Log the flagged rows and the review's summary; returns its metrics."""
    summary = found.summary()
    run.log_text(found.issues.drop(columns="row").to_csv(index=False), "label_issues.csv")
    run.log_dict(summary, "label_issues_summary.json")
    metrics = {"label_issues": len(found.issues), "label_issues_share": summary["flagged_share"]}
    metrics.update({metric_key(f"label_issues_class_{k}"): v for k, v in found.per_class.items()})
    if found.estimated_precision is not None:
        metrics["label_review_estimated_precision"] = found.estimated_precision
        metrics["label_review_estimated_recall"] = found.estimated_recall or 0.0
    run.set_tags({"label_review.reviewer": found.reviewer})
    log.info(
        "label review (%s reviews; average precision on replaced labels %s): %d of %d training rows look "
        "mislabeled (%s)%s; see label_issues.csv",
        found.reviewer,
        ", ".join(f"{k} {v:.2f}" for k, v in found.detection.items()),
        len(found.issues),
        found.reviewed_rows,
        ", ".join(f"{k}: {v}" for k, v in found.per_class.items()) or "none",
        f", estimated precision {found.estimated_precision:.2f} and recall {found.estimated_recall:.2f}"
        if found.estimated_precision is not None
        else "",
    )
    if found.note:
        log.info("label review: %s", found.note)
    return metrics


def select(
    prepared: Prepared,
    *,
    model: ModelConfig,
    search_config: SearchConfig,
    seed: int,
    metric: str,
    run: RunLog,
    on_trial: Callable[[search.TrialResult], None] | None = None,
    spread: Spread | None = None,
    log: Log | None = None,
) -> Selected:
    """Hyperparameter search across the configured model families, by cross-validation on the
    training split (folds forward in time under a time split). With `search.workers` or a Dask
    scheduler, `spread` runs the trials elsewhere; without one they run in this process."""
    log = log or LOG
    split, task = prepared.split, prepared.task
    plan = selection.plan_selection(prepared.spec, split, model, search_config, seed, task, prepared.clip)
    for note in plan.notes:
        log.info("%s", note)

    def choose(evaluate_batch: Callable[..., list[search.TrialResult]] | None = None) -> selection.Selection:
        return selection.select_model(
            plan,
            split.X_train,
            split.y_train,
            metric=metric,
            seed=seed,
            task=task,
            on_trial=on_trial,
            evaluate_batch=evaluate_batch,
        )

    if plan.parallel and spread is None:
        log.warning("search trials run in this process: spreading them over workers takes the Prefect flow")
    chosen = spread(plan, choose) if plan.parallel and spread is not None else choose()
    run.log_dict(chosen.result.as_dict(), "search/trials.json")
    run.set_tags({"model.family": chosen.family})
    log.info("%s", chosen.summary(plan, metric))
    run.log_metrics(
        {
            f"validation_{metric}": chosen.validation_score,
            f"train_cv_{metric}": chosen.train_score,
            "train_gap": chosen.train_gap,
        }
    )
    return Selected(chosen.members, chosen.validation_score, chosen.train_score, chosen.train_gap)


def _tune_threshold(y: pd.Series, positive: np.ndarray) -> ThresholdChoice:
    return search.tune_threshold(y, positive, pos_label=sorted(y.unique())[1])


def _fit(X: pd.DataFrame, y: pd.Series, prepared: Prepared, selected: Selected, cv_folds: int, seed: int) -> FinalModel:
    return fit_final_model(
        X,
        y,
        prepared.spec,
        selected.members,
        seed,
        task=prepared.task,
        folds=cv_folds,
        clip=prepared.clip,
        tune_threshold=_tune_threshold,
    )


def train(
    prepared: Prepared, selected: Selected, *, cv_folds: int, seed: int, run: RunLog, log: Log | None = None
) -> FinalModel:
    """The chosen configuration on the whole training split, with its threshold, calibration or interval."""
    log = log or LOG
    final = _fit(prepared.split.X_train, prepared.split.y_train, prepared, selected, cv_folds, seed)
    metrics: dict[str, float] = {}
    if (choice := final.threshold) is not None:
        metrics |= {
            "decision_threshold": choice.threshold,
            "validation_f1_at_threshold": choice.f1,
            "validation_precision_at_threshold": choice.precision,
            "validation_recall_at_threshold": choice.recall,
        }
        log.info(
            "decision threshold %.3f (out-of-fold F1 %.4f, precision %.4f, recall %.4f)",
            choice.threshold,
            choice.f1,
            choice.precision,
            choice.recall,
        )
    if final.calibration:
        run.set_tags({"calibration": final.calibration})
        log.info("probabilities recalibrated (%s) on out-of-fold predictions", final.calibration)
    if (interval := final.interval) is not None:
        metrics["interval_half_width"] = interval.half_width
        log.info(
            "prediction interval: ± %.6g for %.0f%% coverage (split-conformal on %d out-of-fold residuals)",
            interval.half_width,
            100 * interval.coverage,
            interval.calibration_rows,
        )
    run.log_metrics(metrics)
    run.log_params(model_params(final.model))
    return final


def refit_wanted(refit: str, training_rows: int, small_rows: int) -> bool:
    """Whether the candidate is registered refitted on every labeled row (`split.refit`)."""
    return refit == "always" or (refit == "auto" and training_rows < small_rows)


def refit(
    prepared: Prepared,
    curated: Curated,
    selected: Selected,
    *,
    outlier_policy: str,
    cv_folds: int,
    seed: int,
    run: RunLog,
    log: Log | None = None,
) -> FinalModel:
    """The chosen configuration refitted on training and held-out rows together, for serving.

    Run after evaluation: the held-out rows have given their verdict on the model fitted without
    them, and are data the served model should learn from. Outlier rows the drop policy removed
    from training are removed from the held-out rows too.
    """
    X, y = prepared.split.all_rows()
    if outlier_policy == "drop":
        flagged = pd.Series(curated.outlier_mask, index=curated.frame.index).reindex(X.index, fill_value=False)
        keep = ~flagged.to_numpy() | X.index.isin(prepared.split.X_train.index)
        X, y = X[keep], y[keep]
    refitted = _fit(X, y, prepared, selected, cv_folds, seed)
    run.log_metrics({"refit_rows": len(X)})
    trained_on = len(prepared.split.X_train)
    (log or LOG).info(
        "refitted on %d rows (training %d + held-out %d) for serving; the gate judged the model fitted on %d",
        len(X),
        trained_on,
        len(X) - trained_on,
        trained_on,
    )
    return refitted


def evaluate(
    final: FinalModel,
    prepared: Prepared,
    selected: Selected,
    curated: Curated,
    *,
    evaluation: EvaluationConfig,
    cv_folds: int,
    seed: int,
    metric: str,
    run: RunLog,
    log: Log | None = None,
) -> Evaluation:
    """Held-out metrics beside the task's dummy baseline, slices, interval coverage, the
    over/underfitting gap and the plots."""
    log = log or LOG
    split, task, model = prepared.split, prepared.task, final.model
    threshold, classes = decision_threshold(model), gate.classes_of(model)
    output = task.output(model, split.X_test)
    metrics = task.compute_metrics(split.y_test, output, classes, threshold)
    if final.interval is not None:
        inside = np.abs(split.y_test.to_numpy(dtype="float64") - output) <= final.interval.half_width
        metrics |= {"interval_coverage": float(inside.mean()), "interval_width": 2 * final.interval.half_width}
    train_metrics = task.compute_metrics(split.y_train, task.output(model, split.X_train), classes, threshold)
    dummy = task.dummy().fit(split.X_train, split.y_train)
    dummy_metrics = task.compute_metrics(split.y_test, task.output(dummy, split.X_test), gate.classes_of(dummy))
    slices = slice_metrics(
        curated.frame.loc[split.X_test.index],
        evaluation.slices,
        task.scorer(metric, split.y_test, output, classes, threshold),
        min_rows=evaluation.slice_min_rows,
    )
    run.log_metrics(
        {f"test_{k}": v for k, v in metrics.items()}
        | {"test_rows": float(len(split.y_test))}
        | {f"train_{k}": v for k, v in train_metrics.items()}
        | {f"dummy_{k}": v for k, v in dummy_metrics.items()}
        | {metric_key(f"slice_{metric}/{k}"): v for k, v in slices.items()}
    )
    if slices:
        run.log_dict(slices, "evaluation/slices.json")
    if evaluation.plots:
        try:
            _log_plots(final, output, classes, prepared, selected, evaluation, cv_folds, seed, metric, threshold, run)
        except ValueError as exc:  # the plots explain the model; they never decide about it
            log.warning("evaluation plots skipped: %s", exc)
            run.set_tags({"plots": f"skipped: {exc}"[:5000]})
    gap = selected.train_gap
    log.info(
        "held-out metrics: %s; dummy %s %.4f; train - validation gap %s",
        ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())),
        metric,
        dummy_metrics.get(metric, float("nan")),
        "n/a" if gap is None else f"{gap:+.4f}",
    )
    return Evaluation(metrics, dummy_metrics, slices, gap, output)


def _log_plots(
    final: FinalModel,
    output: np.ndarray,
    classes: list[Any],
    prepared: Prepared,
    selected: Selected,
    evaluation: EvaluationConfig,
    cv_folds: int,
    seed: int,
    metric: str,
    threshold: float | None,
    run: RunLog,
) -> None:
    from components.modeling import plots

    split, task = prepared.split, prepared.task
    report = plots.evaluation_plots(
        final.model,
        build_model(prepared.spec, selected.members, seed, prepared.clip, task),
        split,
        output,
        classes,
        threshold=threshold,
        scoring=task.sklearn_scoring(metric),
        cv_folds=cv_folds,
        seed=seed,
        learning_curve_max_rows=evaluation.learning_curve_max_rows,
        importance_max_rows=evaluation.importance_max_rows,
        half_width=final.interval.half_width if final.interval else None,
    )
    for name, figure in report.figures.items():
        run.log_figure(figure, f"plots/{name}.png")
    run.log_dict(report.learning_curve.as_dict(), "evaluation/learning_curve.json")
    run.log_text(report.importance.to_csv(index=False), "evaluation/permutation_importance.csv")
