"""`mlops expectations init/validate/diff`: the data contract, without training."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from components.core.config import ConfigError, PipelineConfig, resolve_source
from components.core.workspace import Workspace
from flows.cli.common import (
    EXIT_REJECTED,
    ConfigOption,
    ModelOption,
    _fail,
    _project,
    _workspace,
    err,
)

if TYPE_CHECKING:
    from components.data.quarantine import Screening

DataOption = Annotated[
    str | None, typer.Option("--data", help="CSV/Parquet file, folder or glob (default: the model's source).")
]


def _contract_target(
    config_path: Path | None,
    data: str | None,
    name: str | None,
    target: str | None = None,
    id_column: str | None = None,
) -> tuple[PipelineConfig, str, str]:
    """(settings, source, model name) for the expectations commands: a model's own data by default,
    or another file of it; a file of no known model is a new one (its columns from the options)."""
    from components.data.extract import dataset_name_for

    project = _project(config_path)
    try:
        if data is None or name is not None or project.has_model(dataset_name_for(data)):
            model_name = project.resolve_name(name or (dataset_name_for(data) if data else None), "this command")
            if project.has_model(model_name) or model_name in project.contracted_models():
                config = project.config_for(model_name)
                if target and target != config.data.target:
                    _fail(f"model {model_name!r} predicts {config.data.target!r}, not {target!r}")
                return config, data or resolve_source(config, Workspace.at(config.home).root), model_name
            if data is None:
                _fail(f"no model {model_name!r}: create it with `mlops init`, or pass --data with its file")
        else:
            model_name = dataset_name_for(data)
        config = project.adhoc_config({"source": data, "target": target, "id_column": id_column, "name": model_name})
        return config, str(data), model_name
    except ConfigError as exc:
        _fail(str(exc))


def _read(source: str, query: str | None) -> list[Any]:
    from components.data.extract import ExtractionError, read_batches

    try:
        return read_batches(source, query)
    except ExtractionError as exc:
        _fail(str(exc))


def expectations_init(
    config_path: ConfigOption = None,
    data: DataOption = None,
    name: ModelOption = None,
    target: Annotated[str | None, typer.Option("--target", help="Label column (a new model's).")] = None,
    id_column: Annotated[str | None, typer.Option("--id-column", help="Row id column (a new model's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing suite.")] = False,
) -> None:
    """Profile a model's reference data into its suite in the suite folder, for people to review and commit."""
    from components.data import contract
    from components.data.extract import ExtractionError, combine

    config, source, dataset = _contract_target(config_path, data, name, target, id_column)
    path = contract.suite_path(config.validation.suite_dir, dataset)
    if path.exists() and not force:
        _fail(f"{path} exists; review changes with `mlops expectations diff`, or pass --force to overwrite it")
    batches = _read(source, config.data.query)
    bad = [b for b in batches if b.frame is None]
    if bad:
        _fail(f"cannot profile unreadable data: {bad[0].error}")
    try:
        suite = contract.profile_from_config(combine(batches), dataset, config)
    except (ExtractionError, contract.ContractError) as exc:
        _fail(str(exc))
    contract.save_suite(suite, path)
    kinds: dict[str, int] = {}
    for expectation in suite["expectations"]:
        kinds[expectation["type"]] = kinds.get(expectation["type"], 0) + 1
    err.print(f"wrote {path}: {len(suite['expectations'])} expectations from {suite['meta']['reference_rows']} rows")
    for kind, count in sorted(kinds.items()):
        err.print(f"  {count:3d} x {kind}", highlight=False)
    err.print(
        "every expectation is marked inferred, with its evidence where it matters: review it, edit bounds on "
        "purpose (an edited or added expectation without the mark counts as declared), and commit it."
    )


def expectations_validate(
    config_path: ConfigOption = None,
    data: DataOption = None,
    name: ModelOption = None,
    move_to_quarantine: Annotated[
        bool, typer.Option("--quarantine", help="Move (data.validation.quarantine) rejected files to quarantine.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Validate data against its suite without training. Exit 3 when the contract rejects it."""
    from components.data import contract
    from components.data.quarantine import quarantine, screen_with, write_validation_report

    config, source, dataset = _contract_target(config_path, data, name)
    workspace = _workspace(config)
    try:
        suite = contract.load_suite(contract.suite_path(config.validation.suite_dir, dataset))
    except contract.ContractError as exc:
        _fail(f"{exc}; create it with `mlops expectations init`")
    batches = _read(source, config.data.query)
    screening = screen_with(
        contract.Validator(workspace.gx_dir),
        batches,
        suite,
        max_bad_row_share=config.validation.max_bad_row_share,
        target=config.data.target,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    payload = screening.as_dict(source)
    report_path = write_validation_report(workspace.reports, dataset, stamp, payload)
    folders = []
    if move_to_quarantine:
        folders = [
            quarantine(workspace.quarantine, dataset, r, source=source, mode=config.validation.quarantine)
            for r in screening.rejected
        ]
    from components.tracking.registry import log_validation_run

    run_id = log_validation_run(workspace, dataset, payload, suite, screening.docs_pages, screening.success)
    if as_json:
        print(
            json.dumps(
                {
                    **payload,
                    "report_path": str(report_path),
                    "quarantined": [str(f) for f in folders],
                    "mlflow_run_id": run_id,
                }
            )
        )
    _print_screening(screening, folders, report_path, run_id)
    if not screening.success:
        raise typer.Exit(EXIT_REJECTED)


def _print_screening(screening: Screening, folders: list[Path], report_path: Path, run_id: str) -> None:
    """Accepted (with the rows a run would set aside) or rejected (and where to), then where the reports are."""
    if screening.success:
        err.print(f"[green]accepted ({screening.report.why}):[/] {screening.report.summary()}", highlight=False)
        for aside in screening.set_aside:
            reasons = "; ".join(f"{rule} ({count})" for rule, count in aside.reasons().items())
            err.print(
                f"[yellow]{len(aside.rows)} row(s) of {aside.batch.name} break row rules[/] (a run sets them aside): "
                f"{reasons}",
                highlight=False,
                soft_wrap=True,
            )
    else:
        for rejection in screening.rejected:
            err.print(f"[bold red]rejected {rejection.batch.name}:[/] {rejection.report.summary()}", highlight=False)
        for folder in folders:
            err.print(f"quarantined: {folder}", highlight=False)
    if screening.report.docs_url:
        err.print(f"Data Docs: {screening.report.docs_url}", highlight=False, soft_wrap=True)
    err.print(f"report: {report_path}\nMLflow run {run_id}", highlight=False, soft_wrap=True)


def expectations_diff(
    config_path: ConfigOption = None,
    data: DataOption = None,
    name: ModelOption = None,
    accept: Annotated[
        bool, typer.Option("--accept", help="Replace the suite with the fresh profile (review the git diff).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the changes as JSON on stdout.")] = False,
) -> None:
    """Show what changed between the suite and fresh data: columns, types, categories, ranges, nulls."""
    from components.data import contract
    from components.data.extract import ExtractionError, combine

    config, source, dataset = _contract_target(config_path, data, name)
    path = contract.suite_path(config.validation.suite_dir, dataset)
    try:
        current = contract.load_suite(path)
    except contract.ContractError as exc:
        _fail(f"{exc}; create it with `mlops expectations init`")
    meta = current.get("meta") or {}
    config = config.with_overrides(data={"target": meta.get("target"), "id_column": meta.get("id_column")})
    batches = _read(source, config.data.query)
    try:
        fresh = contract.profile_from_config(combine([b for b in batches if b.frame is not None]), dataset, config)
    except (ExtractionError, contract.ContractError) as exc:
        _fail(str(exc))
    changes = contract.diff_suites(current, fresh)
    if as_json:
        print(json.dumps([c.__dict__ for c in changes]))
    if not changes:
        err.print(f"{path}: the fresh data fits the suite; nothing to accept", highlight=False)
        return
    table = Table(title=f"{path} vs {source}", show_lines=False)
    for header in ("change", "expectation", "column", "detail"):
        table.add_column(header, overflow="fold")
    for change in changes:
        table.add_row(change.kind, change.expectation.removeprefix("expect_"), change.column or "", change.detail)
    err.print(table)
    if accept:
        contract.save_suite(fresh, path)
        err.print(f"accepted: rewrote {path}; review and commit the change", highlight=False)
