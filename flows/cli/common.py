"""What every command shares: the Typer apps, options, exit statuses, loading the project and a
model's settings, error reporting."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from components.core.config import ConfigError, PipelineConfig
from components.core.environment import workspace_environment
from components.core.errors import EXIT_ERROR, UserError
from components.core.project import Project, load_project
from components.core.secrets import install_log_redaction, redact
from components.core.workspace import Workspace

T = TypeVar("T")

EXIT_OK = 0
EXIT_REJECTED = 3
EXIT_RETRAIN = 4

app = typer.Typer(
    name="mlops",
    help="Continuous training for tabular models (binary, multiclass, regression): init, train, validate, "
    "promote, serve, score, monitor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
expectations_app = typer.Typer(
    help="The data contract: profile, validate and review Great Expectations suites (no training).",
    no_args_is_help=True,
)
server_app = typer.Typer(help="The local Prefect server the flows report to (embedded default).", no_args_is_help=True)
app.add_typer(server_app, name="server")


@app.callback()
def _every_command() -> None:
    """Before any command: passwords in URLs never reach a log line."""
    install_log_redaction()


app.add_typer(expectations_app, name="expectations")

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Project config YAML (default: MLOPS_CONFIG or the nearest mlops.yaml upwards)."
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option("--name", "-n", help="The model (default: the only one configured in models/)."),
]


class TaskChoice(StrEnum):
    binary = "binary"
    multiclass = "multiclass"
    regression = "regression"


TaskOption = Annotated[
    TaskChoice | None, typer.Option("--task", help="The task (default: inferred from the target column).")
]


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[bold red]error:[/] {redact(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _project(config_path: Path | None) -> Project:
    try:
        return load_project(config_path)
    except ConfigError as exc:
        _fail(str(exc))


def _load(config_path: Path | None) -> PipelineConfig:
    """The project's own settings (workspace, servers), for commands that act on no one model."""
    try:
        return _project(config_path).base()
    except ConfigError as exc:
        _fail(str(exc))


def _model(config_path: Path | None, name: str | None, what: str) -> tuple[str, PipelineConfig]:
    """(name, settings) of the model a command acts on: named, or the only one configured."""
    project = _project(config_path)
    try:
        model_name = project.resolve_name(name, what)
        return model_name, project.config_for(model_name)
    except ConfigError as exc:
        _fail(str(exc))


def _workspace(config: PipelineConfig) -> Workspace:
    workspace = Workspace.at(config.home).ensure()
    workspace_environment(workspace)
    return workspace


def _prefect_api(config: PipelineConfig, workspace: Workspace) -> None:
    from flows.prefect_server import PrefectServerError, configure_prefect_api

    try:
        configure_prefect_api(workspace.prefect_home, config.prefect.server, config.prefect.idle_minutes)
    except PrefectServerError as exc:
        _fail(str(exc))


def _report_unexpected(exc: BaseException) -> NoReturn:
    if os.environ.get("MLOPS_DEBUG"):
        print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
    else:
        err.print("[dim](set MLOPS_DEBUG=1 for the traceback)[/]")
    _fail(f"{type(exc).__name__}: {exc}")


def _run_flow(
    config: PipelineConfig,
    run: Callable[[], T],
    on_user_error: Callable[[UserError], None] | None = None,
    user_errors: tuple[type[BaseException], ...] = (UserError,),
    passthrough: tuple[type[BaseException], ...] = (),
) -> T:
    """Run a flow under the run settings (heartbeats) and map its outcome to the CLI's: a user's
    error exits with its status (`UserError.exit_status`) and message, after `on_user_error` has had
    its say (it may exit another way); `passthrough` errors are the caller's to handle; anything else
    exits 1, its traceback behind MLOPS_DEBUG=1."""
    from components.tracking.registry import check_store
    from flows.prefect_server import flow_run_settings

    try:
        check_store(Workspace.at(config.home))
        with flow_run_settings(config.prefect.heartbeat_seconds):
            return run()
    except passthrough:
        raise
    except user_errors as exc:
        if on_user_error is not None and isinstance(exc, UserError):
            on_user_error(exc)
        _fail(str(exc), exc.exit_status if isinstance(exc, UserError) else EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: report, exit 1
        _report_unexpected(exc)


def _read_frame(source: str, query: str | None) -> Any:
    """The readable batches of a source as one frame (unreadable files are left to validation)."""
    from components.data.extract import Batch, ExtractionError, combine, read_batches

    try:
        batches: list[Batch] = read_batches(source, query)
        readable = [b for b in batches if b.frame is not None]
        if not readable:
            _fail(f"no readable data in {source}: {batches[0].error if batches else 'no files'}")
        return combine(readable)
    except ExtractionError as exc:
        _fail(str(exc))


def _run_settings(
    project: Project,
    data: str | None,
    target: str | None,
    id_column: str | None,
    time_column: str | None,
    query: str | None,
    name: str | None,
    task: str | None,
) -> tuple[PipelineConfig, Any]:
    """The settings `mlops run` trains with, and, when it creates a new model, what it inferred.

    Without --data: a configured model as configured. With --data: the model named (or the one the
    file's name gives) on that data, validated against its own contract; a new model when none has
    that name, on project defaults, unless the file's columns are an existing model's.
    """
    from components.core.modelfile import propose_model
    from components.core.project import check_name, models_with_columns
    from components.data.extract import dataset_name_for

    if data is None:
        model_name = project.resolve_name(name, "`mlops run` without --data")
        if not project.has_model(model_name):
            raise ConfigError(
                f"model {model_name!r} has no {project.model_file(model_name)}: pass --data (its rows are "
                f"validated against its contract), or create its settings with `mlops init`"
            )
        config = project.model_config(model_name)
        _same_roles(model_name, config, target, id_column, time_column, task)
        return config.with_overrides(data={"query": query}), None
    model_name = check_name(name or dataset_name_for(data))
    known = project.has_model(model_name) or model_name in project.contracted_models()
    if known:
        config = project.config_for(model_name)
        _same_roles(model_name, config, target, id_column, time_column, task)
        return config.with_overrides(data={"source": data, "query": query}), None
    if not target:
        raise ConfigError(
            f"{data} would be a new model {model_name!r}: name its label column with --target "
            "(or pass --name to train an existing model on it)"
        )
    frame = _read_frame(data, query)
    if name is None:
        twins = models_with_columns(project, list(frame.columns), target)
        if twins:
            raise ConfigError(
                f"{data} has the columns of model {twins[0]!r} (its contract "
                f"{project.base().validation.suite_dir / (twins[0] + '.json')}): to train {twins[0]!r} on it, pass "
                f"--name {twins[0]}; to make a new model of it anyway, pass --name with a new name"
            )
    proposal = propose_model(frame, model_name, data, target, task=task, id_column=id_column, time_column=time_column)
    return _proposed_config(project, proposal, data, query, target, model_name), proposal


def _proposed_config(
    project: Project, proposal: Any, data: str, query: str | None, target: str, model_name: str
) -> PipelineConfig:
    """The settings of a new model from its data and what `propose_model` inferred about it."""
    return project.adhoc_config(
        {
            "source": data,
            "query": query,
            "target": target,
            "id_column": proposal.id_column.column,
            "time_column": proposal.time_column.column,
            "name": model_name,
        },
        task=proposal.task.task,
    )


def _same_roles(
    model_name: str,
    config: PipelineConfig,
    target: str | None,
    id_column: str | None,
    time_column: str | None,
    task: str | None,
) -> None:
    """A model's columns are its own: options that contradict its settings are an error, not an override."""
    given = {"--target": (target, config.data.target), "--id-column": (id_column, config.data.id_column)}
    given |= {"--time-column": (time_column, config.data.time_column), "--task": (task, config.task)}
    clashes = [
        f"{flag} {value!r} (it has {have!r})" for flag, (value, have) in given.items() if value not in (None, have)
    ]
    if clashes:
        raise ConfigError(
            f"model {model_name!r} is set up differently: {'; '.join(clashes)}; edit its settings, "
            "or pass --name with a new name for a new model"
        )


def _announce_new_model(proposal: Any, suite: Path) -> None:
    from rich.panel import Panel

    left_out = ", ".join(f"{k} ({v})" for k, v in proposal.left_out.items())
    lines = [
        f"task: [bold]{proposal.task.task}[/] ({proposal.task.reason}); target {proposal.target!r}: "
        f"{proposal.task.summary}",
        f"id column: {proposal.id_column.column or '-'} ({proposal.id_column.reason}); "
        f"time column: {proposal.time_column.column or '-'} ({proposal.time_column.reason})",
        f"features: {len(proposal.numeric)} numeric, {len(proposal.categorical)} categorical"
        + (f"; left out: {left_out}" if left_out else ""),
        "",
        f"It trains on the project's defaults. Its data contract will be profiled from this data into {suite} "
        "(review it). To keep its settings for later runs, write them with",
        f"  mlops init --data {proposal.source} --target {proposal.target} --name {proposal.name}",
    ]
    err.print(
        Panel(
            "\n".join(lines),
            title=f"[bold yellow]new model {proposal.name!r}[/]",
            border_style="yellow",
        ),
        highlight=False,
    )


def _reachable_store(workspace: Workspace) -> None:
    """Exit naming the tracking store when it cannot be used (before MLflow's minutes of retries)."""
    from components.tracking import registry

    try:
        registry.check_store(workspace)
    except registry.TrackingUnreachable as exc:
        _fail(str(exc), exc.exit_status)


def _champions(workspace: Workspace, names: list[str]) -> list[dict[str, Any]]:
    from components.tracking import registry

    client = registry.connect(workspace)
    registered = set(registry.list_models(client))
    rows: list[dict[str, Any]] = []
    for model_name in names:
        champion = registry.get_champion(client, model_name) if model_name in registered else None
        if champion is None:
            rows.append({"name": model_name, "version": None, "registered": model_name in registered})
            continue
        run = client.get_run(champion.run_id) if champion.run_id else None
        metrics = run.data.metrics if run else {}
        trial = registry.get_challenger(client, model_name)
        rows.append(
            {
                "name": model_name,
                "registered": True,
                "version": champion.version,
                "task": champion.tags.get("task") or (run.data.tags.get("task") if run else None),
                "promoted_at": champion.promoted_at,
                "run_id": champion.run_id,
                "metrics": {
                    k[len("test_") :]: v
                    for k, v in sorted(metrics.items())
                    if k.startswith("test_") and k != "test_rows"
                },
                "test_rows": int(metrics["test_rows"]) if "test_rows" in metrics else None,
                "challenger": None
                if trial is None
                else {
                    "version": trial.version,
                    "rollout": trial.rollout,
                    "since": trial.since,
                    "recheck_of": trial.recheck_of,
                },
            }
        )
    return rows


def _print_data_note(data: dict[str, Any]) -> None:
    """The contract's judgement of the data (when not plain clean) and the rows it set aside."""
    drifted = data.get("drifted_batches") or {}
    for name, why in drifted.items():
        err.print(f"[yellow]{name} {why}[/]", highlight=False, soft_wrap=True)
    if data.get("judgement") == "drift" and not drifted:
        err.print(f"[yellow]data {data['why']}[/]", highlight=False, soft_wrap=True)
    if data.get("rows_set_aside"):
        where = ", ".join(data.get("set_aside_in") or []) or "in quarantine since an earlier run"
        err.print(
            f"[yellow]{data['rows_set_aside']} row(s) broke row rules and were set aside:[/] {where}",
            highlight=False,
            soft_wrap=True,
        )


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)
