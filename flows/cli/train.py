"""`mlops run`, `mlops init` and `mlops rollback`: training a model, starting one from a file, and
undoing a promotion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from components.core.config import ConfigError, PipelineConfig, resolve_source
from components.core.errors import UserError
from flows.cli.common import (
    EXIT_REJECTED,
    ConfigOption,
    ModelOption,
    TaskOption,
    _announce_new_model,
    _fail,
    _load,
    _model,
    _prefect_api,
    _print_data_note,
    _project,
    _proposed_config,
    _read_frame,
    _run_flow,
    _run_settings,
    _shown,
    _workspace,
    err,
)

if TYPE_CHECKING:
    from components.core.project import Project
    from flows.training import TrainingResult


def run(
    config_path: ConfigOption = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="CSV/Parquet file, folder or glob, or a SQLAlchemy URL: a configured model's new data, or a new "
            "model's.",
        ),
    ] = None,
    target: Annotated[str | None, typer.Option("--target", help="Label column (a new model's).")] = None,
    id_column: Annotated[
        str | None, typer.Option("--id-column", help="Row id column, never a feature (default: detected).")
    ] = None,
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="Event-time column, never a feature (default: detected).")
    ] = None,
    query: Annotated[str | None, typer.Option("--query", help="SQL query when --data is a database URL.")] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="The model (default: the only one configured; with --data: the file's name)"),
    ] = None,
    task: TaskOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one line of JSON with the outcome at the end.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Evaluate and decide, log it all to MLflow, register nothing.")
    ] = False,
) -> None:
    """Run the training flow: extract, validate, curate, select a model, train, evaluate, gated promotion.

    Without --data, trains the configured model (--name when several are). With --data, trains the
    model --name names (or the one the file's name gives) on that data, checked against its contract; a
    name no model has yet makes a new model from the file on the project's defaults (--target needed),
    and says so. Exit status: 0 when the flow completed (promoted or held back), 3 when the data was
    rejected by validation, 1 on any other error.
    """
    project = _project(config_path)
    try:
        config, new_model = _run_settings(
            project, data, target, id_column, time_column, query, name, task.value if task else None
        )
    except UserError as exc:
        _fail(str(exc), exc.exit_status)
    _prepare_training(config, new_model)
    result = _train(config, new_model, dry_run, as_json)
    _print_trained(result)
    if as_json:
        print(json.dumps({**json.loads(result.as_json()), "new_model": new_model is not None}, sort_keys=True))


def _prepare_training(config: PipelineConfig, new_model: Any) -> None:
    """Everything that can fail before Prefect starts (the workspace, the data source), a new model
    announced, then the Prefect API."""
    workspace = _workspace(config)
    try:
        resolve_source(config, workspace.root)  # a bad source or a missing target fails before Prefect starts
    except ConfigError as exc:
        _fail(str(exc))
    if new_model is not None:
        from components.data.contract import suite_path

        _announce_new_model(new_model, suite_path(config.validation.suite_dir, new_model.name))
    _prefect_api(config, workspace)


def _train(config: PipelineConfig, new_model: Any, dry_run: bool, as_json: bool) -> TrainingResult:
    """The training flow's result; rejected data exits 3 (nothing registered), any other error 1."""
    from components.data.contract import DataRejected
    from flows.training import training_flow

    def rejected(exc: DataRejected) -> None:
        err.print(f"[bold red]rejected:[/] {exc}", highlight=False, soft_wrap=True)
        err.print("nothing was registered; the champion is unchanged.")
        if as_json:
            print(
                json.dumps(
                    {
                        "rejected": True,
                        "model_name": config.data.name,
                        "new_model": new_model is not None,
                        "report": str(exc.report_path) if exc.report_path else None,
                        "quarantined": [str(p) for p in exc.quarantined],
                    }
                )
            )
        raise typer.Exit(EXIT_REJECTED)

    try:
        return _run_flow(config, lambda: training_flow(config, dry_run=dry_run), passthrough=(DataRejected,))
    except DataRejected as exc:  # an expected outcome, not a user's error: the data is at fault
        rejected(exc)
        raise


def _print_trained(result: TrainingResult) -> None:
    """The gate's decision (or what it would be, in a dry run), the MLflow run, and notes on the data."""
    if result.dry_run:
        verdict = "[green]would be promoted[/]" if result.would_promote else "[yellow]would be held back[/]"
        err.print(
            f"{result.model_name} (dry run, nothing registered): {verdict}: {result.reason}\n"
            f"MLflow run {result.run_id}",
            highlight=False,
        )
    else:
        verdict = (
            "[green]promoted to champion[/]: "
            if result.promoted
            else ""  # the reason says "ready, waiting for approval" or "challenger"
            if result.awaiting_approval or result.challenger
            else "[yellow]held back[/]: "
        )
        err.print(
            f"{result.model_name} v{result.model_version} ({result.task}): {verdict}{result.reason}\n"
            f"MLflow run {result.run_id}",
            highlight=False,
        )
    _print_data_note(result.data)


def init(
    data: Annotated[str, typer.Option("--data", help="CSV/Parquet file, folder or glob of the model's data.")],
    target: Annotated[str, typer.Option("--target", help="The column to predict.")],
    config_path: ConfigOption = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="The model's name (default: from the file's name).")
    ] = None,
    task: TaskOption = None,
    id_column: Annotated[str | None, typer.Option("--id-column", help="Row id column (default: detected).")] = None,
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="Event-time column (default: detected).")
    ] = None,
    query: Annotated[str | None, typer.Option("--query", help="SQL query when --data is a database URL.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the model's settings and contract.")] = False,
) -> None:
    """Create a model from a data file: infer its task and columns, profile its contract, write its settings.

    Writes models/<name>.yaml and expectations/<name>.json and prints what it inferred, for review in
    git. Then `mlops run --name <name>` trains it.
    """
    from components.core.modelfile import propose_model, render_model_file
    from components.data import contract
    from components.data.extract import is_database_url
    from components.modeling.tasks import task_named

    project = _project(config_path)
    model_name, model_file, suite = _new_model_paths(project, config_path, name, data, force)
    frame = _read_frame(data, query)
    try:
        proposal = propose_model(
            frame,
            model_name,
            _relative_source(data, project.root),
            target,
            task=task.value if task else None,
            id_column=id_column,
            time_column=time_column,
        )
        settings = _proposed_config(project, proposal, data, query, target, model_name)
        profiled = contract.profile_from_config(frame, model_name, settings, task=proposal.task.task)
    except (UserError, ValueError) as exc:
        _fail(str(exc))
    metric = task_named(proposal.task.task).default_metric
    text = render_model_file(proposal, metric, _shown(suite, project.root))
    if is_database_url(data) and query:
        text = text.replace("data:\n", f"data:\n  query: {json.dumps(query)}\n", 1)
    from components.core.files import write_text_atomic

    model_file.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(model_file, text)
    contract.save_suite(profiled, suite)
    err.print(_new_model_table(project, proposal, metric, model_file, suite, profiled))
    err.print(f"review both files and commit them; then: mlops run --name {model_name}", highlight=False)


def _new_model_paths(
    project: Project, config_path: Path | None, name: str | None, data: str, force: bool
) -> tuple[str, Path, Path]:
    """(name, settings file, contract file) of the model `mlops init` creates; refuses to replace one
    that exists unless forced."""
    from components.core.project import check_name
    from components.data import contract
    from components.data.extract import dataset_name_for

    try:
        model_name = check_name(name or dataset_name_for(data))
    except ConfigError as exc:
        _fail(str(exc))
    model_file = project.model_file(model_name)
    base = _load(config_path)
    suite = contract.suite_path(base.validation.suite_dir, model_name)
    existing = [str(p) for p in (model_file, suite) if p.exists()]
    if existing and not force:
        _fail(f"model {model_name!r} exists ({', '.join(existing)}); pass --force to replace it, or another --name")
    return model_name, model_file, suite


def _new_model_table(
    project: Project, proposal: Any, metric: str, model_file: Path, suite: Path, profiled: dict[str, Any]
) -> Table:
    """What `mlops init` inferred and wrote, for review."""
    table = Table(title=f"new model {proposal.name!r} ({proposal.rows:,} rows)", show_header=False)
    table.add_row("task", f"{proposal.task.task} ({proposal.task.reason})")
    table.add_row("target", f"{proposal.target}: {proposal.task.summary}")
    if proposal.task.unlabeled_rows:
        table.add_row("unlabeled rows", f"{proposal.task.unlabeled_rows} (left out of training)")
    table.add_row("id column", f"{proposal.id_column.column or '-'} ({proposal.id_column.reason})")
    table.add_row("time column", f"{proposal.time_column.column or '-'} ({proposal.time_column.reason})")
    table.add_row("features", f"{len(proposal.numeric)} numeric, {len(proposal.categorical)} categorical")
    if proposal.left_out:
        table.add_row("left out", ", ".join(f"{k} ({v})" for k, v in proposal.left_out.items()))
    table.add_row("slices", ", ".join(proposal.slices) or "-")
    table.add_row("gate metric", metric)
    table.add_row("settings", _shown(model_file, project.root))
    table.add_row(
        "contract",
        f"{_shown(suite, project.root)} ({len(profiled['expectations'])} expectations inferred from "
        f"{profiled['meta']['reference_rows']:,} rows; each says its evidence)",
    )
    return table


def _relative_source(data: str, root: Path) -> str:
    """A file source as written in a model file: relative to the project root when inside it."""
    from components.data.extract import is_database_url

    if is_database_url(data):
        return data
    path = Path(data).expanduser().resolve()
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def rollback(
    reason: Annotated[str, typer.Option("--reason", help="Why: kept on both versions and the model.")],
    config_path: ConfigOption = None,
    name: ModelOption = None,
    expect: Annotated[
        str | None,
        typer.Option("--expect", help="Roll back only while the champion is still this version (e.g. 7)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Point `champion` back at `previous-champion` in one registry call, recording why.

    A running `mlops serve` picks the restored champion up when it reloads. Rolling back twice
    undoes the first rollback.
    """
    from components.core.alerts import Alerter
    from components.tracking import registry

    model_name, config = _model(config_path, name, "`mlops rollback`")
    workspace = _workspace(config)
    if not reason.strip():
        _fail("--reason must say why (it is recorded on the model versions)")
    client = registry.connect(workspace)
    try:
        done = registry.rollback(
            client, model_name, reason.strip(), expected=expect.lstrip("v") if expect else None, lock_dir=workspace.root
        )
    except registry.RegistryError as exc:
        _fail(str(exc))
    Alerter(config.alerts, model_name, workspace.alerts).send(
        "rollback",
        f"champion is v{done.restored} again (v{done.demoted} rolled back): {done.reason}",
        champion=done.restored,
        rolled_back=done.demoted,
    )
    if as_json:
        print(json.dumps({"name": done.name, "champion": done.restored, "previous_champion": done.demoted}))
        return
    err.print(
        f"{model_name}: champion is v{done.restored} again (v{done.demoted} is now previous-champion); "
        f"reason recorded: {done.reason}",
        highlight=False,
    )
