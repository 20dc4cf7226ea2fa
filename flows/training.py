"""The continuous-training flow: extract -> validate -> prepare -> train -> evaluate -> promote."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from components import contract, registry
from components.config import PipelineConfig, dataset_name, resolve_source
from components.contract import DataRejected
from components.curate import deduplicate, iqr_fences, outlier_report
from components.datacard import data_card
from components.evaluate import compute_metrics, evaluate_model
from components.extract import Batch, ExtractionError, combine, read_batches
from components.label_review import LabelReviewError, review_labels
from components.prepare import FeatureSpec, Split, infer_feature_spec, split_data
from components.promotion import Decision, PromotionPolicy, decide_promotion
from components.quarantine import quarantine, remember_accepted, screen_with, trusted_batches
from components.train import build_model, model_params, train_model
from components.workspace import Workspace


@dataclass(frozen=True)
class TrainingResult:
    """What a training run did; `as_json` is the CLI's machine-readable last line."""

    run_id: str
    model_name: str
    model_version: str | None
    promoted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Prepared:
    spec: FeatureSpec
    split: Split
    clip: dict[str, tuple[float, float]] | None = None


@dataclass(frozen=True)
class Curated:
    frame: pd.DataFrame
    spec: FeatureSpec
    fingerprint: str
    outlier_mask: np.ndarray


class _RejectionLogFilter(logging.Filter):
    """A rejection is an expected outcome, not a crash: Prefect's task and flow loggers report it
    in one line instead of a traceback that repeats every failed expectation."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DataRejected) or "DataRejected" in record.getMessage():
            where = f"; report: {exc.report_path}" if isinstance(exc, DataRejected) and exc.report_path else ""
            record.msg, record.args = f"data rejected by the contract (failed expectations above){where}", ()
            record.exc_info, record.exc_text = None, None
        return True


def quiet_rejections() -> None:
    """Install the filter on Prefect's run loggers once per process."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RejectionLogFilter) for f in logger.filters):
            logger.addFilter(_RejectionLogFilter())


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


def _suite_for(batches: list[Batch], config: PipelineConfig, dataset: str) -> dict[str, Any]:
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
        suite = contract.profile_from_config(combine(readable), dataset, config)
        contract.save_suite(suite, path)
        logger.warning("no suite for %r yet: profiled this data into %s; review it and commit it", dataset, path)
    return contract.load_suite(path)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(
    batches: list[Batch], config: PipelineConfig, dataset: str, workspace: Workspace, run_id: str, source: str
) -> pd.DataFrame:
    """Screen the batches against the suite; rejected ones go to quarantine and stop the run."""
    logger = get_run_logger()
    suite = _suite_for(batches, config, dataset)
    ledger = workspace.accepted_batches(dataset)
    screening = screen_with(
        contract.Validator(workspace.gx_dir),
        batches,
        suite,
        run_name=run_id,
        trusted=trusted_batches(ledger, batches, suite),
    )
    report = screening.report
    registry.log_dict(run_id, report.as_dict(), "validation/report.json")
    registry.log_dict(run_id, suite, f"validation/{dataset}.json")
    for page in screening.docs_pages:
        registry.log_artifact(run_id, page, "validation/data_docs")
    report_path = workspace.reports / f"validation_{dataset}_{run_id}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report.as_dict(), indent=2, default=str))
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
    assert screening.frame is not None
    return screening.frame


@task(name="curate", cache_policy=NO_CACHE)
def curate_task(frame: pd.DataFrame, config: PipelineConfig, source: str, run_id: str) -> Curated:
    """Duplicates out (counted), outliers reported, the data card logged."""
    logger = get_run_logger()
    data = config.data
    rows_before = len(frame)
    dedup = None
    if config.curation.deduplicate:
        frame, dedup = deduplicate(frame, data.id_column)
        logger.info(
            "curation: %d exact duplicate rows and %d repeated ids removed (%d -> %d rows)",
            dedup.exact_duplicates,
            dedup.duplicate_ids,
            dedup.rows_in,
            dedup.rows_out,
        )
    assert data.target is not None
    spec = infer_feature_spec(frame, data.target, data.id_column, data.time_column, data.drop_columns)
    cur = config.curation
    outliers, mask = outlier_report(
        frame,
        spec.numeric,
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
def prepare_task(curated: Curated, config: PipelineConfig, run_id: str) -> Prepared:
    spec = curated.spec
    split = split_data(curated.frame, spec, config.split.test_size, config.seed)
    cur = config.curation
    clip = None
    if cur.outlier_policy == "cap":
        clip = iqr_fences(split.X_train, spec.numeric, cur.iqr_factor)
    elif cur.outlier_policy == "drop":
        flagged = pd.Series(curated.outlier_mask, index=curated.frame.index)
        drop = split.X_train.index[flagged.reindex(split.X_train.index, fill_value=False).to_numpy()]
        split = split.without_training_rows(drop)
        registry.log_metrics(run_id, {"outlier_rows_dropped_from_training": len(drop)})
        get_run_logger().info("dropped %d outlier rows from the training split (test rows are kept)", len(drop))
    get_run_logger().info(
        "features: %d numeric, %d categorical; split %d train / %d test rows",
        len(spec.numeric),
        len(spec.categorical),
        len(split.X_train),
        len(split.X_test),
    )
    return Prepared(spec, split, clip)


@task(name="review_labels", cache_policy=NO_CACHE)
def review_labels_task(prepared: Prepared, curated: Curated, config: PipelineConfig, run_id: str) -> Prepared:
    """Out-of-fold confident learning on the training split; optionally exclude flagged rows."""
    logger = get_run_logger()
    split, spec, review_cfg = prepared.split, prepared.spec, config.label_review
    ids = curated.frame[spec.id_column].loc[split.X_train.index] if spec.id_column else None
    reviewer = config.model.model_copy(update={"estimator": review_cfg.estimator or config.model.estimator})
    if review_cfg.estimator and review_cfg.estimator != config.model.estimator:
        reviewer = reviewer.model_copy(update={"params": {}})  # the served model's params need not fit this family
    try:
        review = review_labels(
            build_model(spec, reviewer, config.seed, prepared.clip),
            split.X_train,
            split.y_train,
            ids=ids,
            folds=review_cfg.folds,
            seed=config.seed,
            max_rows=review_cfg.max_rows,
        )
    except LabelReviewError as exc:  # advisory step: say so on the run, train anyway
        logger.warning("label review skipped: %s", exc)
        registry.set_tags(run_id, {"label_review": f"skipped: {exc}"[:5000]})
        return prepared
    summary = review.summary()
    registry.log_text(run_id, review.issues.drop(columns="row").to_csv(index=False), "label_issues.csv")
    registry.log_dict(run_id, summary, "label_issues_summary.json")
    metrics = {"label_issues": len(review.issues), "label_issues_share": summary["flagged_share"]}
    metrics.update({f"label_issues_class_{k}": v for k, v in review.per_class.items()})
    logger.info(
        "label review: %d of %d training rows look mislabeled (%s); see label_issues.csv",
        len(review.issues),
        review.reviewed_rows,
        ", ".join(f"given {k}: {v}" for k, v in review.per_class.items()) or "none",
    )
    if review_cfg.action == "exclude" and len(review.issues):
        drop = review.flagged_index
        split = split.without_training_rows(drop)
        metrics["label_issues_excluded"] = len(drop)
        logger.info("excluded %d flagged rows from training", len(drop))
    registry.log_metrics(run_id, metrics)
    return replace(prepared, split=split)


@task(name="train", cache_policy=NO_CACHE)
def train_task(prepared: Prepared, config: PipelineConfig) -> Any:
    split = prepared.split
    return train_model(split.X_train, split.y_train, prepared.spec, config.model, config.seed, prepared.clip)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(model: Any, prepared: Prepared, run_id: str) -> dict[str, float]:
    split = prepared.split
    metrics = evaluate_model(model, split.X_test, split.y_test)
    train_metrics = evaluate_model(model, split.X_train, split.y_train)
    registry.log_metrics(
        run_id, {**{f"test_{k}": v for k, v in metrics.items()}, **{f"train_{k}": v for k, v in train_metrics.items()}}
    )
    get_run_logger().info("held-out metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


# No retries: logging and registering are not idempotent, a retry would add a second version.
@task(name="promote", cache_policy=NO_CACHE)
def promote_task(
    model: Any,
    prepared: Prepared,
    metrics: dict[str, float],
    config: PipelineConfig,
    model_name: str,
    run_id: str,
    fingerprint: str,
) -> tuple[str, Decision]:
    """Register the candidate, score the champion on the same rows, and apply the gate."""
    logger = get_run_logger()
    client = registry.connect(Workspace.at(config.home))
    split = prepared.split
    model_uri = registry.log_model(run_id, model, split.X_train)
    version = registry.register_model(model_uri, model_name, tags={"data_fingerprint": fingerprint, "run_id": run_id})
    metric = config.promotion.metric
    champion = registry.get_champion(client, model_name)
    champion_score: float | None = None
    note = ""
    if champion is not None:
        try:
            incumbent = registry.load_model(champion.uri)
            champion_metrics = compute_metrics(split.y_test, incumbent.predict_proba(split.X_test), incumbent.classes_)
            champion_score = champion_metrics.get(metric)
        except (ValueError, KeyError) as exc:
            note = f"champion v{champion.version} could not score the held-out rows ({exc}); "
    decision = decide_promotion(
        metrics.get(metric), champion_score, PromotionPolicy(metric=metric, min_score=config.promotion.min_score)
    )
    if champion_score is not None:
        registry.log_metrics(run_id, {f"champion_{metric}_same_rows": champion_score})
    if note:
        decision = replace(decision, reason=note + decision.reason)
    registry.log_dict(run_id, decision.as_dict(), "decision.json")
    registry.tag_version(
        client, model_name, version, {"decision": decision.reason, "promoted": str(decision.promote).lower()}
    )
    if decision.promote:
        registry.set_champion(client, model_name, version, {"promoted_at": pd.Timestamp.now(tz="UTC").isoformat()})
        logger.info("promoted %s v%s to champion: %s", model_name, version, decision.reason)
    else:
        logger.info("kept the champion; %s v%s not promoted: %s", model_name, version, decision.reason)
    return version, decision


@flow(name="training_flow")
def training_flow(config: PipelineConfig) -> TrainingResult:
    """Train a candidate on the configured data and promote it if it beats the champion."""
    quiet_rejections()
    workspace = Workspace.at(config.home)
    source = resolve_source(config, workspace.root)
    dataset = dataset_name(config)
    client = registry.connect(workspace)
    run_id = registry.start_run(
        client,
        registry.ensure_experiment(client, dataset, workspace),
        tags={
            "dataset": dataset,
            "prefect.flow_run_id": str(flow_run.id),
            **({"mlflow.source.git.commit": commit} if (commit := registry.git_commit()) else {}),
        },
        params={"data.source": source, **registry.flatten_config(config)},
    )
    try:
        batches = extract_task(source, config.data.query)
        frame = validate_task(batches, config, dataset, workspace, run_id, source)
        curated = curate_task(frame, config, source, run_id)
        prepared = prepare_task(curated, config, run_id)
        if config.label_review.enabled:
            prepared = review_labels_task(prepared, curated, config, run_id)
        model = train_task(prepared, config)
        registry.log_params(run_id, model_params(model))
        metrics = evaluate_task(model, prepared, run_id)
        version, decision = promote_task(model, prepared, metrics, config, dataset, run_id, curated.fingerprint)
    except DataRejected:
        registry.end_run(client, run_id, "FAILED", {"outcome": "rejected"})
        raise
    except BaseException:
        registry.end_run(client, run_id, "FAILED", {"outcome": "error"})
        raise
    registry.end_run(client, run_id, "FINISHED", {"outcome": "promoted" if decision.promote else "held_back"})
    return TrainingResult(
        run_id=run_id,
        model_name=dataset,
        model_version=version,
        promoted=decision.promote,
        reason=decision.reason,
        metrics=metrics,
    )
