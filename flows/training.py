"""The continuous-training flow: extract -> validate -> curate -> prepare -> review labels -> select model
-> train -> evaluate -> gated promotion."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from components.core.config import ModelConfig, PipelineConfig, SearchConfig, dataset_name, resolve_source
from components.core.faults import fault_point
from components.core.logs import PREFECT_RUN_LOGGERS, exception_of, quiet
from components.core.secrets import redact
from components.core.workspace import Workspace
from components.data import contract
from components.data.contract import DataRejected
from components.data.curate import deduplicate, iqr_fences, outlier_report
from components.data.datacard import data_card
from components.data.extract import Batch, ExtractionError, combine, read_batches
from components.data.label_review import LabelReviewError, review_labels
from components.data.quarantine import (
    quarantine,
    quarantine_rows,
    remember_accepted,
    screen_with,
    trusted_batches,
    write_validation_report,
)
from components.inference.scoring import decision_threshold, measure_serving
from components.modeling import gate, search, selection
from components.modeling.evaluate import slice_metrics
from components.modeling.prepare import FeatureSpec, Split, infer_feature_spec, split_data
from components.modeling.promotion import Decision, PromotionPolicy, decide_promotion
from components.modeling.tasks import Task, TaskInference, infer_task, task_named
from components.modeling.train import (
    FinalModel,
    ThresholdChoice,
    build_model,
    fit_final_model,
    model_params,
    review_candidates,
)
from components.monitoring import monitor
from components.tracking import decisions, registry

GATE_ARTIFACT = "gate_model"  # the candidate as the gate judged it, beside a refitted served model


@dataclass(frozen=True)
class TrainingResult:
    """What a training run did; `as_json` is the CLI's machine-readable last line."""

    run_id: str
    model_name: str
    model_version: str | None
    promoted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False
    would_promote: bool = False
    failed_checks: list[str] = field(default_factory=list)
    task: str | None = None
    metric: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # the contract's judgement and the rows set aside

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Validated:
    """What the contract let through, how it judged it, and the rows it set aside (and where)."""

    frame: pd.DataFrame = field(repr=False)
    judgement: str
    why: str
    rows_set_aside: int = 0
    set_aside_in: tuple[str, ...] = ()
    drifted: dict[str, str] = field(default_factory=dict)  # batch -> why the contract judged it drift

    def summary(self) -> dict[str, Any]:
        return {
            "judgement": self.judgement,
            "why": self.why,
            "rows_set_aside": self.rows_set_aside,
            "set_aside_in": list(self.set_aside_in),
            "drifted_batches": self.drifted,
        }


@dataclass(frozen=True)
class Prepared:
    spec: FeatureSpec
    split: Split
    task: Task
    clip: dict[str, tuple[float, float]] | None = None


@dataclass(frozen=True)
class Curated:
    frame: pd.DataFrame
    spec: FeatureSpec
    fingerprint: str
    outlier_mask: np.ndarray


def _rejection_line(record: logging.LogRecord) -> str | None:
    exc = exception_of(record)
    if isinstance(exc, DataRejected) or "DataRejected" in record.getMessage():
        where = f"; report: {exc.report_path}" if isinstance(exc, DataRejected) and exc.report_path else ""
        return f"data rejected by the contract (failed expectations above){where}"
    return None


def quiet_rejections() -> None:
    """A rejection is an expected outcome, not a crash: Prefect's task and flow loggers report it
    in one line instead of a traceback that repeats every failed expectation."""
    quiet("rejections", PREFECT_RUN_LOGGERS, _rejection_line)


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only failures that may pass on a second try (I/O, a database that did not answer)."""
    try:
        state.result()
    except ExtractionError as exc:
        return exc.transient
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - anything else fails the same way again
        return False
    return False


# Frames stay in memory between tasks of one flow run: NO_CACHE avoids hashing them.
@task(
    name="extract",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def extract_task(source: str, query: str | None) -> list[Batch]:
    batches = read_batches(source, query)
    rows = sum(len(b.frame) for b in batches if b.frame is not None)
    unreadable = [b.name for b in batches if b.frame is None]
    get_run_logger().info(
        "extracted %d rows in %d batch(es) from %s%s",
        rows,
        len(batches),
        source,
        f"; unreadable: {unreadable}" if unreadable else "",
    )
    return batches


@task(name="infer_task", cache_policy=NO_CACHE)
def infer_task_task(batches: list[Batch], config: PipelineConfig, run_id: str) -> TaskInference:
    """The task the target describes (or the declared one, checked); a target that fits none stops the run."""
    target = str(config.data.target)
    values = [b.frame[target] for b in batches if b.frame is not None and target in b.frame.columns]
    if not values:
        columns = next((list(b.frame.columns) for b in batches if b.frame is not None), [])
        raise contract.ContractError(f"target column {target!r} is not in the data; its columns are {columns}")
    inference = infer_task(pd.concat(values, ignore_index=True).rename(target), config.task)
    registry.set_tags(run_id, {"task": inference.task, "task.reason": inference.reason})
    get_run_logger().info(
        "task: %s (%s); target %r: %s%s",
        inference.task,
        inference.reason,
        target,
        inference.summary,
        f"; {inference.unlabeled_rows} unlabeled row(s) are left out" if inference.unlabeled_rows else "",
    )
    return inference


def _suite_for(batches: list[Batch], config: PipelineConfig, dataset: str, task: str) -> dict[str, Any]:
    logger = get_run_logger()
    path = contract.suite_path(config.validation.suite_dir, dataset)
    if not path.exists():
        if not config.validation.create_missing_suite:
            raise contract.ContractError(
                f"no suite for dataset {dataset!r} at {path}; create one with `mlops expectations init`"
            )
        readable = [b for b in batches if b.frame is not None]
        if not readable:
            raise contract.ContractError(f"no suite for {dataset!r} and no readable batch to profile one from")
        suite = contract.profile_from_config(combine(readable), dataset, config, task=task)
        contract.save_suite(suite, path)
        logger.warning("no suite for %r yet: profiled this data into %s; review it and commit it", dataset, path)
    return contract.load_suite(path)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(
    batches: list[Batch],
    config: PipelineConfig,
    dataset: str,
    workspace: Workspace,
    run_id: str,
    source: str,
    task: str,
) -> Validated:
    """Screen the batches against the suite: rows breaking row rules are set aside to quarantine;
    rejected batches go to quarantine and stop the run."""
    logger = get_run_logger()
    suite = _suite_for(batches, config, dataset, task)
    ledger = workspace.accepted_batches(dataset)
    screening = screen_with(
        contract.Validator(workspace.gx_dir),
        batches,
        suite,
        run_name=run_id,
        trusted=trusted_batches(ledger, batches, suite),
        max_bad_row_share=config.validation.max_bad_row_share,
        target=config.data.target,
    )
    report = screening.report
    registry.log_dict(run_id, report.as_dict(), "validation/report.json")
    registry.log_dict(run_id, suite, f"validation/{dataset}.json")
    for page in screening.docs_pages:
        registry.log_artifact(run_id, page, "validation/data_docs")
    report_path = write_validation_report(workspace.reports, dataset, run_id, screening.as_dict(source))
    if not screening.success:
        folders = [
            quarantine(
                workspace.quarantine,
                dataset,
                rejection,
                source=source,
                mode=config.validation.quarantine,
                context={"mlflow_run_id": run_id},
            )
            for rejection in screening.rejected
        ]
        for rejection, folder in zip(screening.rejected, folders, strict=True):
            logger.error("quarantined %s in %s:\n%s", rejection.batch.name, folder, rejection.report.summary())
        registry.set_tags(run_id, {"quarantine": ", ".join(str(f) for f in folders)})
        raise DataRejected(screening.rejected[0].report, report_path, quarantined=tuple(folders))
    remember_accepted(ledger, screening.accepted, suite)
    logger.info(report.summary())
    registry.log_metrics(run_id, {"rows_set_aside": screening.rows_set_aside})
    aside_in: list[str] = []
    # A file's rows are quarantined once: the set-aside ledger works like the accepted one.
    rows_ledger = workspace.rows_set_aside(dataset)
    seen = trusted_batches(rows_ledger, [a.batch for a in screening.set_aside], suite)
    fresh = [a for a in screening.set_aside if a.batch.name not in seen]
    for aside in fresh:
        folder = quarantine_rows(workspace.quarantine, dataset, aside, source=source, context={"mlflow_run_id": run_id})
        aside_in.append(str(folder))
        logger.warning(
            "%d row(s) of %s set aside in %s: %s",
            len(aside.rows),
            aside.batch.name,
            folder,
            "; ".join(f"{rule} ({count})" for rule, count in aside.reasons().items()),
        )
    remember_accepted(rows_ledger, [a.batch for a in fresh], suite)
    if again := screening.rows_set_aside - sum(len(a.rows) for a in fresh):
        logger.info(
            "%d row(s) of earlier batches left out again (in quarantine since the run that first saw them)", again
        )
    if screening.set_aside:
        registry.set_tags(run_id, {"rows_set_aside_in": str(workspace.quarantine / dataset)})
    assert screening.frame is not None
    for name, why in screening.drifted.items():
        logger.info("%s: %s", name, why)
    registry.set_tags(run_id, {"validation.judgement": screening.judgement})
    return Validated(
        screening.frame,
        screening.judgement,
        screening.why,
        screening.rows_set_aside,
        tuple(aside_in),
        dict(screening.drifted),
    )


@task(name="curate", cache_policy=NO_CACHE)
def curate_task(frame: pd.DataFrame, config: PipelineConfig, source: str, task: Task, run_id: str) -> Curated:
    """Duplicates out (counted), outliers reported, the data card logged."""
    logger = get_run_logger()
    data = config.data
    rows_before = len(frame)
    dedup = None
    if config.curation.deduplicate:
        frame, dedup = deduplicate(frame, data.id_column, max_share=config.validation.duplicate_tolerance)
        logger.info(
            "curation: %d exact duplicate rows and %d repeated ids removed (%d -> %d rows)%s",
            dedup.exact_duplicates,
            dedup.duplicate_ids,
            dedup.rows_in,
            dedup.rows_out,
            f"; {dedup.kept_repeats} rows repeat another whole row and were kept: more than "
            f"{config.validation.duplicate_tolerance:.0%} of the rows do, so the columns repeat by nature"
            if dedup.kept_repeats
            else "",
        )
    assert data.target is not None
    spec = infer_feature_spec(frame, data.target, data.id_column, data.time_column, data.drop_columns)
    cur = config.curation
    # A regression target's outliers are reported too: a price of 1e9 is as suspect as an input.
    checked = (*spec.numeric, spec.target) if not task.classification else spec.numeric
    outliers, mask = outlier_report(
        frame,
        checked,
        iqr_factor=cur.iqr_factor,
        contamination=cur.isolation_contamination,
        seed=config.seed,
        max_rows=cur.max_rows,
    )
    registry.log_dict(run_id, outliers, "curation/outliers.json")
    flagged = {c: f["below"] + f["above"] for c, f in outliers["features"].items() if f["below"] + f["above"]}
    logger.info(
        "outliers (policy %s): IsolationForest flags %d rows; beyond IQR fences: %s",
        cur.outlier_policy,
        outliers["isolation_forest"]["flagged"],
        flagged or "none",
    )
    curation = {
        "deduplication": dedup.as_dict() if dedup else None,
        "outlier_policy": cur.outlier_policy,
        "isolation_forest_flagged": outliers["isolation_forest"]["flagged"],
    }
    card = data_card(
        frame,
        source=source,
        rows_before_curation=rows_before,
        time_column=data.time_column,
        assumptions=config.assumptions,
        curation=curation,
    )
    registry.log_dict(run_id, card, "data_card.json")
    registry.set_tags(run_id, {"data.fingerprint": card["fingerprint"]})
    registry.log_metrics(
        run_id,
        {
            "data_rows_before_curation": rows_before,
            "data_rows": len(frame),
            "outliers_isolation_forest": outliers["isolation_forest"]["flagged"],
            **({"duplicates_removed": dedup.rows_in - dedup.rows_out} if dedup else {}),
        },
    )
    return Curated(frame=frame, spec=spec, fingerprint=card["fingerprint"], outlier_mask=mask)


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(curated: Curated, config: PipelineConfig, task: Task, run_id: str) -> Prepared:
    """The held-out split (seeded, or the newest rows by time) and the outlier policy's clip or drop."""
    logger = get_run_logger()
    spec = curated.spec
    split = split_data(
        curated.frame,
        spec,
        config.split.test_size,
        config.seed,
        task=task,
        strategy=config.split.strategy,
        time_column=config.data.time_column,
        min_test_rows=config.promotion.min_test_rows,
    )
    if split.unlabeled_rows:
        logger.info("%d row(s) without a value of %r are unlabeled: left out", split.unlabeled_rows, spec.target)
    if split.rare_classes:
        logger.warning(
            "class(es) with too few rows to learn from were left out: %s",
            ", ".join(f"{k!r} ({v} rows)" for k, v in split.rare_classes.items()),
        )
        registry.set_tags(run_id, {"rare_classes_left_out": json.dumps(split.rare_classes)[:5000]})
    registry.log_metrics(
        run_id,
        {
            "unlabeled_rows": split.unlabeled_rows,
            "rare_class_rows_left_out": sum(split.rare_classes.values()),
        },
    )
    if spec.notes:
        logger.info("not used as features: %s", "; ".join(f"{k} ({v})" for k, v in spec.notes.items()))
        registry.log_dict(run_id, spec.notes, "features/left_out.json")
    cur = config.curation
    clip = None
    if cur.outlier_policy == "cap":
        clip = iqr_fences(split.X_train, spec.numeric, cur.iqr_factor)
    elif cur.outlier_policy == "drop":
        flagged = pd.Series(curated.outlier_mask, index=curated.frame.index)
        drop = split.X_train.index[flagged.reindex(split.X_train.index, fill_value=False).to_numpy()]
        split = split.without_training_rows(drop)
        registry.log_metrics(run_id, {"outlier_rows_dropped_from_training": len(drop)})
        logger.info("dropped %d outlier rows from the training split (test rows are kept)", len(drop))
    logger.info(
        "features: %d numeric, %d categorical; split %d train / %d test rows (%s)",
        len(spec.numeric),
        len(spec.categorical),
        len(split.X_train),
        len(split.X_test),
        "the newest rows held out" if split.by_time else "seeded",
    )
    return Prepared(spec, split, task, clip)


@task(name="review_labels", cache_policy=NO_CACHE)
def review_labels_task(prepared: Prepared, curated: Curated, config: PipelineConfig, run_id: str) -> Prepared:
    """Out-of-fold label review on the training split; optionally exclude flagged rows."""
    logger = get_run_logger()
    split, spec, review_cfg, task = prepared.split, prepared.spec, config.label_review, prepared.task
    ids = curated.frame[spec.id_column].loc[split.X_train.index] if spec.id_column else None
    try:
        candidates = {
            name: build_model(spec, member, config.seed, prepared.clip, task)
            for name, member in review_candidates(config, task).items()
        }
        review = review_labels(
            candidates,
            split.X_train,
            split.y_train,
            ids=ids,
            folds=review_cfg.folds,
            seed=config.seed,
            max_rows=review_cfg.max_rows,
            regression=not task.classification,
            target_precision=review_cfg.target_precision,
            error_rate=review_cfg.error_rate,
        )
    except LabelReviewError as exc:  # advisory step: say so on the run, train anyway
        logger.warning("label review skipped: %s", exc)
        registry.set_tags(run_id, {"label_review": f"skipped: {exc}"[:5000]})
        return prepared
    summary = review.summary()
    registry.log_text(run_id, review.issues.drop(columns="row").to_csv(index=False), "label_issues.csv")
    registry.log_dict(run_id, summary, "label_issues_summary.json")
    metrics = {"label_issues": len(review.issues), "label_issues_share": summary["flagged_share"]}
    metrics.update({_metric_key(f"label_issues_class_{k}"): v for k, v in review.per_class.items()})
    if review.estimated_precision is not None:
        metrics["label_review_estimated_precision"] = review.estimated_precision
        metrics["label_review_estimated_recall"] = review.estimated_recall or 0.0
    registry.set_tags(run_id, {"label_review.reviewer": review.reviewer})
    logger.info(
        "label review (%s reviews; average precision on replaced labels %s): %d of %d training rows look "
        "mislabeled (%s)%s; see label_issues.csv",
        review.reviewer,
        ", ".join(f"{k} {v:.2f}" for k, v in review.detection.items()),
        len(review.issues),
        review.reviewed_rows,
        ", ".join(f"{k}: {v}" for k, v in review.per_class.items()) or "none",
        f", estimated precision {review.estimated_precision:.2f} and recall {review.estimated_recall:.2f}"
        if review.estimated_precision is not None
        else "",
    )
    if review.note:
        logger.info("label review: %s", review.note)
    if review_cfg.action == "exclude" and len(review.issues):
        drop = review.flagged_index
        split = split.without_training_rows(drop)
        metrics["label_issues_excluded"] = len(drop)
        logger.info("excluded %d flagged rows from training", len(drop))
    registry.log_metrics(run_id, metrics)
    return replace(prepared, split=split)


@dataclass(frozen=True)
class Selected:
    """The model configuration training will fit (one family, or an ensemble of several), and how it was chosen."""

    members: tuple[ModelConfig, ...]  # one family's config, or an ensemble's members
    validation_score: float | None  # cross-validated, on the training split
    train_score: float | None  # on the training folds
    train_gap: float | None  # how much better the training folds score than the held-out ones (overfitting)


@task(name="trial", cache_policy=NO_CACHE)
def trial_task(
    factory: Callable[[dict[str, Any]], Any],
    params: dict[str, Any],
    X: pd.DataFrame,
    y: pd.Series,
    metric: str,
    folds: int,
    seed: int,
    number: int,
    task: Task,
    by_time: bool,
    repeats: int,
) -> search.TrialResult:
    return search.cross_validate_params(
        factory,
        params,
        X,
        y,
        metric=metric,
        folds=folds,
        seed=seed,
        number=number,
        task=task,
        by_time=by_time,
        repeats=repeats,
    )


def _dask_runner(config: SearchConfig) -> Any:
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    # One thread per worker and per BLAS/OpenMP pool: the workers are the parallelism.
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": config.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "env": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        }
    )


@task(name="select_model", cache_policy=NO_CACHE)
def select_model_task(
    prepared: Prepared, config: PipelineConfig, metric: str, run_id: str, experiment_id: str
) -> Selected:
    """Hyperparameter search across the configured model families, by cross-validation on the
    training split (folds forward in time under a time split): `selection.select_model`, its
    trials recorded as child runs and, with workers or a scheduler, spread over Dask."""
    logger = get_run_logger()
    split, task = prepared.split, prepared.task
    plan = selection.plan_selection(prepared.spec, split, config, task, prepared.clip)
    for note in plan.notes:
        logger.info("%s", note)
    client = registry.connect(Workspace.at(config.home))

    def log_trial(result: search.TrialResult) -> None:
        registry.log_child_run(
            client,
            experiment_id,
            run_id,
            f"{'trial' if result.stage == 'search' else 'final'}-{result.number}",
            {**result.params, "trial": result.number, "stage": result.stage},
            {
                f"cv_{metric}": result.score,
                f"cv_{metric}_std": result.score_std,
                f"train_{metric}": result.train_score,
                "fit_seconds": result.fit_seconds,
            },
            failed=result.error is not None,
        )

    def select(evaluate_batch: Callable[..., list[search.TrialResult]] | None = None) -> selection.Selection:
        return selection.select_model(
            plan,
            split.X_train,
            split.y_train,
            metric=metric,
            seed=config.seed,
            task=task,
            on_trial=log_trial,
            evaluate_batch=evaluate_batch,
        )

    if plan.parallel:
        (X, y), repeats = selection.trial_inputs(plan, split.X_train, split.y_train, config.seed, task)

        @flow(name="search_trials", task_runner=_dask_runner(plan.search))
        def search_trials_flow() -> selection.Selection:
            def on_dask(batch: list[tuple[int, dict[str, Any]]]) -> list[search.TrialResult]:
                futures = [
                    trial_task.submit(
                        plan.factory, params, X, y, metric, plan.folds, config.seed, number, task, plan.by_time, repeats
                    )
                    for number, params in batch
                ]
                return [future.result() for future in futures]

            return select(on_dask)

        chosen = search_trials_flow()
    else:
        chosen = select()
    registry.log_dict(run_id, chosen.result.as_dict(), "search/trials.json")
    registry.set_tags(run_id, {"model.family": chosen.family})
    logger.info("%s", chosen.summary(plan, metric))
    registry.log_metrics(
        run_id,
        {
            f"validation_{metric}": chosen.validation_score,
            f"train_cv_{metric}": chosen.train_score,
            "train_gap": chosen.train_gap,
        },
    )
    return Selected(chosen.members, chosen.validation_score, chosen.train_score, chosen.train_gap)


def _tune_threshold(y: pd.Series, positive: np.ndarray) -> ThresholdChoice:
    return search.tune_threshold(y, positive, pos_label=sorted(y.unique())[1])


@task(name="train", cache_policy=NO_CACHE)
def train_task(prepared: Prepared, selected: Selected, config: PipelineConfig, run_id: str) -> FinalModel:
    """The chosen configuration on the whole training split, with its threshold, calibration or interval."""
    logger = get_run_logger()
    split = prepared.split
    final = _fit(split.X_train, split.y_train, prepared, selected, config)
    metrics: dict[str, float] = {}
    if final.threshold is not None:
        choice = final.threshold
        metrics.update(
            {
                "decision_threshold": choice.threshold,
                "validation_f1_at_threshold": choice.f1,
                "validation_precision_at_threshold": choice.precision,
                "validation_recall_at_threshold": choice.recall,
            }
        )
        logger.info(
            "decision threshold %.3f (out-of-fold F1 %.4f, precision %.4f, recall %.4f)",
            choice.threshold,
            choice.f1,
            choice.precision,
            choice.recall,
        )
    if final.calibration:
        registry.set_tags(run_id, {"calibration": final.calibration})
        logger.info("probabilities recalibrated (%s) on out-of-fold predictions", final.calibration)
    if final.interval is not None:
        metrics["interval_half_width"] = final.interval.half_width
        logger.info(
            "prediction interval: ± %.6g for %.0f%% coverage (split-conformal on %d out-of-fold residuals)",
            final.interval.half_width,
            100 * final.interval.coverage,
            final.interval.calibration_rows,
        )
    registry.log_metrics(run_id, metrics)
    registry.log_params(run_id, model_params(final.model))
    return final


def _fit(X: pd.DataFrame, y: pd.Series, prepared: Prepared, selected: Selected, config: PipelineConfig) -> FinalModel:
    return fit_final_model(
        X,
        y,
        prepared.spec,
        selected.members,
        config.seed,
        task=prepared.task,
        folds=config.search.cv_folds,
        clip=prepared.clip,
        tune_threshold=_tune_threshold,
    )


def refit_wanted(config: PipelineConfig, training_rows: int) -> bool:
    """Whether the candidate is registered refitted on every labeled row (`split.refit`)."""
    mode = config.split.refit
    return mode == "always" or (mode == "auto" and training_rows < config.search.small_rows)


@task(name="refit", cache_policy=NO_CACHE)
def refit_task(
    prepared: Prepared, curated: Curated, selected: Selected, config: PipelineConfig, run_id: str
) -> FinalModel:
    """The chosen configuration refitted on training and held-out rows together, for serving.

    Run after evaluation: the held-out rows have given their verdict on the model fitted without
    them, and are data the served model should learn from. Outlier rows the drop policy removed
    from training are removed from the held-out rows too.
    """
    logger = get_run_logger()
    X, y = prepared.split.all_rows()
    if config.curation.outlier_policy == "drop":
        flagged = pd.Series(curated.outlier_mask, index=curated.frame.index).reindex(X.index, fill_value=False)
        keep = ~flagged.to_numpy() | X.index.isin(prepared.split.X_train.index)
        X, y = X[keep], y[keep]
    refit = _fit(X, y, prepared, selected, config)
    registry.log_metrics(run_id, {"refit_rows": len(X)})
    logger.info(
        "refitted on %d rows (training %d + held-out %d) for serving; the gate judged the model fitted on %d",
        len(X),
        len(prepared.split.X_train),
        len(X) - len(prepared.split.X_train),
        len(prepared.split.X_train),
    )
    return refit


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    dummy: dict[str, float]
    slices: dict[str, float]
    train_gap: float | None
    output: np.ndarray = field(repr=False)  # the answers on the held-out rows, reused by the gate


def _metric_key(name: str) -> str:
    """An MLflow metric name: slice values may hold characters MLflow refuses (=, ?, ...)."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(
    final: FinalModel,
    prepared: Prepared,
    selected: Selected,
    curated: Curated,
    config: PipelineConfig,
    metric: str,
    run_id: str,
) -> Evaluation:
    """Held-out metrics beside the task's dummy baseline, slices, interval coverage, the
    over/underfitting gap and the plots."""
    logger = get_run_logger()
    split, evaluation, task, model = prepared.split, config.evaluation, prepared.task, final.model
    threshold = decision_threshold(model)
    classes = gate.classes_of(model)
    output = task.output(model, split.X_test)
    metrics = task.compute_metrics(split.y_test, output, classes, threshold)
    if final.interval is not None:
        inside = np.abs(split.y_test.to_numpy(dtype="float64") - output) <= final.interval.half_width
        metrics["interval_coverage"] = float(inside.mean())
        metrics["interval_width"] = 2 * final.interval.half_width
    train_metrics = task.compute_metrics(split.y_train, task.output(model, split.X_train), classes, threshold)
    dummy = task.dummy().fit(split.X_train, split.y_train)
    dummy_metrics = task.compute_metrics(split.y_test, task.output(dummy, split.X_test), gate.classes_of(dummy))
    slices = slice_metrics(
        curated.frame.loc[split.X_test.index],
        evaluation.slices,
        task.scorer(metric, split.y_test, output, classes, threshold),
        min_rows=evaluation.slice_min_rows,
    )
    gap = selected.train_gap
    registry.log_metrics(
        run_id,
        {
            **{f"test_{k}": v for k, v in metrics.items()},
            "test_rows": float(len(split.y_test)),
            **{f"train_{k}": v for k, v in train_metrics.items()},
            **{f"dummy_{k}": v for k, v in dummy_metrics.items()},
            **{_metric_key(f"slice_{metric}/{k}"): v for k, v in slices.items()},
        },
    )
    if slices:
        registry.log_dict(run_id, slices, "evaluation/slices.json")
    if evaluation.plots:
        try:
            _log_plots(final, output, classes, prepared, selected, config, run_id, metric, threshold)
        except ValueError as exc:  # the plots explain the model; they never decide about it
            logger.warning("evaluation plots skipped: %s", exc)
            registry.set_tags(run_id, {"plots": f"skipped: {exc}"[:5000]})
    logger.info(
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
    config: PipelineConfig,
    run_id: str,
    metric: str,
    threshold: float | None,
) -> None:
    from components.modeling import plots

    split, task = prepared.split, prepared.task
    report = plots.evaluation_plots(
        final.model,
        build_model(prepared.spec, selected.members, config.seed, prepared.clip, task),
        split,
        output,
        classes,
        threshold=threshold,
        scoring=task.sklearn_scoring(metric),
        cv_folds=config.search.cv_folds,
        seed=config.seed,
        learning_curve_max_rows=config.evaluation.learning_curve_max_rows,
        importance_max_rows=config.evaluation.importance_max_rows,
        half_width=final.interval.half_width if final.interval else None,
    )
    for name, figure in report.figures.items():
        registry.log_figure(run_id, figure, f"plots/{name}.png")
    registry.log_dict(run_id, report.learning_curve.as_dict(), "evaluation/learning_curve.json")
    registry.log_text(run_id, report.importance.to_csv(index=False), "evaluation/permutation_importance.csv")


def _example_rows(X: pd.DataFrame, rows: int = 5) -> list[dict[str, Any]]:
    head = X.head(rows).astype(object)
    return head.where(head.notna(), None).to_dict(orient="records")  # type: ignore[return-value]


def _log_reference(run_id: str, model: Any, X_train: pd.DataFrame, config: PipelineConfig, task: Task) -> None:
    """A sample of the training rows with the model's scores: what monitoring compares new data with."""
    import tempfile
    from pathlib import Path

    sample = (
        X_train
        if len(X_train) <= config.monitoring.reference_rows
        else X_train.sample(n=config.monitoring.reference_rows, random_state=config.seed)
    )
    reference = monitor.build_reference(
        sample, task.scores(task.output(model, sample)), config.monitoring.reference_rows, config.seed
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(monitor.REFERENCE_ARTIFACT).name
        reference.to_parquet(path, index=False)
        registry.log_artifact(run_id, path, str(Path(monitor.REFERENCE_ARTIFACT).parent))


# No retries: logging and registering are not idempotent, a retry would add a second version.
@task(name="promote", cache_policy=NO_CACHE)
def promote_task(
    final: FinalModel,
    prepared: Prepared,
    curated: Curated,
    evaluation: Evaluation,
    config: PipelineConfig,
    model_name: str,
    metric: str,
    run_id: str,
    dry_run: bool = False,
    refit: FinalModel | None = None,
) -> tuple[str | None, Decision]:
    """Register the candidate (unless a dry run), measure it against the champion on the same rows,
    check it loads and answers through the serving path, decide, and apply the decision.

    With `refit`, the registered model is the candidate refitted on every labeled row; the
    candidate as judged (fitted without the held-out rows) is logged beside it for later gates."""
    logger = get_run_logger()
    workspace = Workspace.at(config.home)
    client = registry.connect(workspace)
    split, task = prepared.split, prepared.task
    model_uri, info = _log_candidate(final, refit, prepared, config, metric, run_id)
    version = None
    if not dry_run:
        version = registry.register_model(
            model_uri, model_name, tags={"data_fingerprint": curated.fingerprint, "run_id": run_id, "task": task.name}
        )
        fault_point("registered")
    champion = registry.get_champion(client, model_name)
    scores = gate.score_champion(
        champion,
        final.model,
        evaluation.output,
        task,
        split.X_test,
        split.y_test,
        curated.frame.loc[split.X_test.index],
        metric=metric,
        slices=config.evaluation.slices,
        slice_min_rows=config.evaluation.slice_min_rows,
        promotion=config.promotion,
        seed=config.seed,
    )
    serving = measure_serving(f"models:/{model_name}/{version}" if version else model_uri, _example_rows(split.X_test))
    evidence = gate.gather_evidence(
        len(split.y_test),
        evaluation.metrics,
        scores,
        champion.version if champion else None,
        dummy=evaluation.dummy,
        train_gap=evaluation.train_gap,
        candidate_slices=evaluation.slices,
        serving=serving,
    )
    policy = PromotionPolicy.from_config(
        config.promotion, metric=metric, min_score=task.floor_for(metric, config.promotion.min_score)
    )
    decision = decide_promotion(evidence, policy)
    if scores.note:
        decision = replace(decision, reason=scores.note + decision.reason)
    candidate = {
        "run_id": run_id,
        "version": version,
        "model_uri": model_uri,
        "dry_run": dry_run,
        "refit_rows": info.get("refit_rows"),
        "gate_model_uri": info.get("gate_model_uri"),
    }
    policy_settings = config.promotion.model_dump(mode="json")
    decisions.record_decision(run_id, decision, evidence, policy, policy_settings, candidate, champion)
    if version is None:
        logger.info("dry run: would %s: %s", "promote" if decision.promote else "hold", decision.reason)
        return None, decision
    applied = decisions.apply_decision(
        client,
        model_name,
        version,
        decision,
        run_id=run_id,
        expected_champion=champion.version if champion else None,
        lock_dir=workspace.root,
    )
    if applied.raced:
        logger.warning("%s", applied.decision.reason)
    elif applied.decision.promote:
        outgoing = f" (v{applied.outgoing} is now previous-champion)" if applied.outgoing else ""
        logger.info("promoted %s v%s to champion%s: %s", model_name, version, outgoing, decision.reason)
    else:
        logger.info("kept the champion; %s v%s not promoted: %s", model_name, version, decision.reason)
    return version, applied.decision


def _log_candidate(
    final: FinalModel, refit: FinalModel | None, prepared: Prepared, config: PipelineConfig, metric: str, run_id: str
) -> tuple[str, dict[str, Any]]:
    """Log the model to serve (and, when it was refitted on every row, the one the gate judges) with
    the notes every loader reads, and the monitoring reference; returns its URI and the notes."""
    split, task, served = prepared.split, prepared.task, refit or final
    info: dict[str, Any] = {"task": task.name, "metric": metric}
    if served.interval is not None:
        info["interval"] = asdict(served.interval)
    if served.calibration:
        info["calibration"] = served.calibration
    X_served = split.X_train
    if refit is not None:
        # The gate judges models fitted without the held-out rows: this run's candidate now, and
        # this model (as the champion) in later runs, where the refitted one has seen those rows.
        info["gate_model_uri"] = registry.log_model(run_id, final.model, split.X_train, {**info}, name=GATE_ARTIFACT)
        X_served = split.all_rows()[0]
        info["refit_rows"] = len(X_served)
    model_uri = registry.log_model(run_id, served.model, X_served, info)
    fault_point("logged")
    _log_reference(run_id, served.model, X_served, config, task)
    return model_uri, info


@flow(name="training_flow")
def training_flow(config: PipelineConfig, dry_run: bool = False) -> TrainingResult:
    """Train a candidate on the configured data and promote it if the gate lets it through.

    A dry run evaluates and decides, logging everything to MLflow, but registers nothing.
    """
    quiet_rejections()
    workspace = Workspace.at(config.home)
    source = resolve_source(config, workspace.root)
    dataset = dataset_name(config)
    client = registry.connect(workspace)
    experiment_id = registry.ensure_experiment(client, dataset, workspace)
    run_id = registry.start_run(
        client,
        experiment_id,
        tags={
            "dataset": dataset,
            "prefect.flow_run_id": str(flow_run.id),
            "mlops.dry_run": str(dry_run).lower(),
            **({"mlflow.source.git.commit": commit} if (commit := registry.git_commit()) else {}),
        },
        params={"data.source": redact(source), **registry.flatten_config(config)},
    )
    try:
        batches = extract_task(source, config.data.query)
        fault_point("extracted")
        inference = infer_task_task(batches, config, run_id)
        task = task_named(inference.task)
        metric = task.metric_for(config.promotion.metric)
        search_metric = config.search.metric or metric
        task.check_metric(search_metric, "search.metric")
        validated = validate_task(batches, config, dataset, workspace, run_id, source, task.name)
        fault_point("validated")
        curated = curate_task(validated.frame, config, source, task, run_id)
        prepared = prepare_task(curated, config, task, run_id)
        if config.label_review.enabled:
            prepared = review_labels_task(prepared, curated, config, run_id)
        selected = select_model_task(prepared, config, search_metric, run_id, experiment_id)
        final = train_task(prepared, selected, config, run_id)
        fault_point("trained")
        evaluation = evaluate_task(final, prepared, selected, curated, config, metric, run_id)
        refit = (
            refit_task(prepared, curated, selected, config, run_id)
            if refit_wanted(config, len(prepared.split.X_train))
            else None
        )
        version, decision = promote_task(
            final, prepared, curated, evaluation, config, dataset, metric, run_id, dry_run, refit=refit
        )
    except DataRejected:
        registry.end_run(client, run_id, "FAILED", {"outcome": "rejected"})
        raise
    except BaseException:
        registry.end_run(client, run_id, "FAILED", {"outcome": "error"})
        raise
    outcome = "dry_run" if dry_run else "promoted" if decision.promote else "held_back"
    registry.end_run(client, run_id, "FINISHED", {"outcome": outcome})
    return TrainingResult(
        run_id=run_id,
        model_name=dataset,
        model_version=version,
        promoted=decision.promote and not dry_run,
        reason=decision.reason,
        metrics=evaluation.metrics,
        dry_run=dry_run,
        would_promote=decision.promote,
        failed_checks=[c.name for c in decision.failed],
        task=task.name,
        metric=metric,
        data=validated.summary(),
    )
