"""The data steps of training: extract, read the task off the target, validate, curate.

Each step takes the rows and the settings it uses, records what it did through a `RunLog`, and
returns a named result (`components.pipeline.results`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from components.core.config import CurationConfig, DataConfig, PipelineConfig, TaskName, ValidationConfig
from components.core.workspace import Workspace
from components.data import contract
from components.data.contract import DataRejected
from components.data.curate import DedupSummary, deduplicate, outlier_report
from components.data.datacard import data_card
from components.data.extract import Batch, combine, read_batches
from components.data.quarantine import (
    Screening,
    quarantine,
    quarantine_rows,
    remember_accepted,
    screen_with,
    trusted_batches,
    write_validation_report,
)
from components.modeling.prepare import infer_feature_spec
from components.modeling.tasks import Task, TaskInference, infer_task
from components.pipeline.results import Curated, Validated
from components.tracking.runlog import RunLog

Log = logging.Logger | logging.LoggerAdapter[Any]
LOG = logging.getLogger("mlops.pipeline")


def extract(source: str, query: str | None, log: Log | None = None) -> list[Batch]:
    """Every batch of the source; a batch that cannot be read is kept, unread, for validation to judge."""
    batches = read_batches(source, query)
    rows = sum(len(b.frame) for b in batches if b.frame is not None)
    unreadable = [b.name for b in batches if b.frame is None]
    (log or LOG).info(
        "extracted %d rows in %d batch(es) from %s%s",
        rows,
        len(batches),
        source,
        f"; unreadable: {unreadable}" if unreadable else "",
    )
    return batches


def infer_target_task(
    batches: list[Batch], target: str, declared: TaskName | None, run: RunLog, log: Log | None = None
) -> TaskInference:
    """The task the target describes (or the declared one, checked); a target that fits none stops the run."""
    values = [b.frame[target] for b in batches if b.frame is not None and target in b.frame.columns]
    if not values:
        columns = next((list(b.frame.columns) for b in batches if b.frame is not None), [])
        raise contract.ContractError(f"target column {target!r} is not in the data; its columns are {columns}")
    inference = infer_task(pd.concat(values, ignore_index=True).rename(target), declared)
    run.set_tags({"task": inference.task, "task.reason": inference.reason})
    (log or LOG).info(
        "task: %s (%s); target %r: %s%s",
        inference.task,
        inference.reason,
        target,
        inference.summary,
        f"; {inference.unlabeled_rows} unlabeled row(s) are left out" if inference.unlabeled_rows else "",
    )
    return inference


def suite_for(batches: list[Batch], config: PipelineConfig, dataset: str, task: str, log: Log) -> dict[str, Any]:
    """The dataset's contract; profiled from these batches when it has none yet (and that is allowed)."""
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
        log.warning("no suite for %r yet: profiled this data into %s; review it and commit it", dataset, path)
    return contract.load_suite(path)


def validate(
    batches: list[Batch],
    suite: dict[str, Any],
    dataset: str,
    *,
    validation: ValidationConfig,
    target: str | None,
    workspace: Workspace,
    source: str,
    run: RunLog,
    log: Log | None = None,
) -> Validated:
    """Screen the batches against the suite: rows breaking row rules are set aside to quarantine;
    rejected batches go to quarantine and stop the run (`DataRejected`)."""
    log = log or LOG
    ledger = workspace.accepted_batches(dataset)
    run_name = run.run_id or f"{dataset}-plain"
    screening = screen_with(
        contract.Validator(workspace.gx_dir),
        batches,
        suite,
        run_name=run_name,
        trusted=trusted_batches(ledger, batches, suite),
        max_bad_row_share=validation.max_bad_row_share,
        target=target,
    )
    run.log_dict(screening.report.as_dict(), "validation/report.json")
    run.log_dict(suite, f"validation/{dataset}.json")
    for page in screening.docs_pages:
        run.log_artifact(page, "validation/data_docs")
    report_path = write_validation_report(workspace.reports, dataset, run_name, screening.as_dict(source))
    if not screening.success:
        _reject(screening, dataset, validation, workspace, source, report_path, run, log)
    remember_accepted(ledger, screening.accepted, suite)
    log.info(screening.report.summary())
    run.log_metrics({"rows_set_aside": screening.rows_set_aside})
    aside_in = _set_rows_aside(screening, suite, dataset, workspace, source, run, log)
    assert screening.frame is not None
    for name, why in screening.drifted.items():
        log.info("%s: %s", name, why)
    run.set_tags({"validation.judgement": screening.judgement})
    return Validated(
        screening.frame,
        screening.judgement,
        screening.why,
        screening.rows_set_aside,
        tuple(aside_in),
        dict(screening.drifted),
    )


def _context(run: RunLog) -> dict[str, Any]:
    return {"mlflow_run_id": run.run_id} if run.run_id else {}


def _reject(
    screening: Screening,
    dataset: str,
    validation: ValidationConfig,
    workspace: Workspace,
    source: str,
    report_path: Path,
    run: RunLog,
    log: Log,
) -> None:
    """Move every rejected batch to quarantine, say why, and stop the run."""
    folders = [
        quarantine(
            workspace.quarantine, dataset, rejection, source=source, mode=validation.quarantine, context=_context(run)
        )
        for rejection in screening.rejected
    ]
    for rejection, folder in zip(screening.rejected, folders, strict=True):
        log.error("quarantined %s in %s:\n%s", rejection.batch.name, folder, rejection.report.summary())
    run.set_tags({"quarantine": ", ".join(str(f) for f in folders)})
    raise DataRejected(screening.rejected[0].report, report_path, quarantined=tuple(folders))


def _set_rows_aside(
    screening: Screening,
    suite: dict[str, Any],
    dataset: str,
    workspace: Workspace,
    source: str,
    run: RunLog,
    log: Log,
) -> list[str]:
    """Quarantine the rows that broke row rules, once per file (the set-aside ledger works like the
    accepted one); returns the folders written."""
    aside_in: list[str] = []
    rows_ledger = workspace.rows_set_aside(dataset)
    seen = trusted_batches(rows_ledger, [a.batch for a in screening.set_aside], suite)
    fresh = [a for a in screening.set_aside if a.batch.name not in seen]
    for aside in fresh:
        folder = quarantine_rows(workspace.quarantine, dataset, aside, source=source, context=_context(run))
        aside_in.append(str(folder))
        log.warning(
            "%d row(s) of %s set aside in %s: %s",
            len(aside.rows),
            aside.batch.name,
            folder,
            "; ".join(f"{rule} ({count})" for rule, count in aside.reasons().items()),
        )
    remember_accepted(rows_ledger, [a.batch for a in fresh], suite)
    if again := screening.rows_set_aside - sum(len(a.rows) for a in fresh):
        log.info("%d row(s) of earlier batches left out again (in quarantine since the run that first saw them)", again)
    if screening.set_aside:
        run.set_tags({"rows_set_aside_in": str(workspace.quarantine / dataset)})
    return aside_in


def curate(
    frame: pd.DataFrame,
    *,
    data: DataConfig,
    curation: CurationConfig,
    duplicate_tolerance: float,
    assumptions: tuple[str, ...],
    seed: int,
    source: str,
    task: Task,
    run: RunLog,
    log: Log | None = None,
) -> Curated:
    """Duplicates out (counted), outliers reported, the data card logged."""
    log = log or LOG
    rows_before = len(frame)
    dedup = None
    if curation.deduplicate:
        frame, dedup = deduplicate(frame, data.id_column, max_share=duplicate_tolerance)
        _log_deduplication(dedup, duplicate_tolerance, log)
    assert data.target is not None
    spec = infer_feature_spec(frame, data.target, data.id_column, data.time_column, data.drop_columns)
    # A regression target's outliers are reported too: a price of 1e9 is as suspect as an input.
    checked = (*spec.numeric, spec.target) if not task.classification else spec.numeric
    outliers, mask = outlier_report(
        frame,
        checked,
        iqr_factor=curation.iqr_factor,
        contamination=curation.isolation_contamination,
        seed=seed,
        max_rows=curation.max_rows,
    )
    run.log_dict(outliers, "curation/outliers.json")
    flagged = {c: f["below"] + f["above"] for c, f in outliers["features"].items() if f["below"] + f["above"]}
    forest = outliers["isolation_forest"]["flagged"]
    log.info(
        "outliers (policy %s): IsolationForest flags %d rows; beyond IQR fences: %s",
        curation.outlier_policy,
        forest,
        flagged or "none",
    )
    curated = {
        "deduplication": dedup.as_dict() if dedup else None,
        "outlier_policy": curation.outlier_policy,
        "isolation_forest_flagged": forest,
    }
    card = data_card(
        frame,
        source=source,
        rows_before_curation=rows_before,
        time_column=data.time_column,
        assumptions=assumptions,
        curation=curated,
    )
    _record_card(card, rows_before, len(frame), forest, dedup, run)
    return Curated(frame=frame, spec=spec, fingerprint=card["fingerprint"], outlier_mask=mask)


def _record_card(
    card: dict[str, Any], rows_before: int, rows: int, forest: int, dedup: DedupSummary | None, run: RunLog
) -> None:
    run.log_dict(card, "data_card.json")
    run.set_tags({"data.fingerprint": card["fingerprint"]})
    removed = {"duplicates_removed": dedup.rows_in - dedup.rows_out} if dedup else {}
    run.log_metrics(
        {"data_rows_before_curation": rows_before, "data_rows": rows, "outliers_isolation_forest": forest} | removed
    )


def _log_deduplication(dedup: DedupSummary, tolerance: float, log: Log) -> None:
    log.info(
        "curation: %d exact duplicate rows and %d repeated ids removed (%d -> %d rows)%s",
        dedup.exact_duplicates,
        dedup.duplicate_ids,
        dedup.rows_in,
        dedup.rows_out,
        f"; {dedup.kept_repeats} rows repeat another whole row and were kept: more than "
        f"{tolerance:.0%} of the rows do, so the columns repeat by nature"
        if dedup.kept_repeats
        else "",
    )
