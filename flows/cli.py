"""`mlops`: the front door for every job.

Heavy libraries (prefect, mlflow, great_expectations, bentoml) are imported inside the
commands that need them, after the environment (telemetry, workspace, Prefect API) is set.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from components.core.config import ConfigError, PipelineConfig, resolve_source
from components.core.environment import workspace_environment
from components.core.project import Project, load_project
from components.core.secrets import install_log_redaction, redact
from components.core.workspace import Workspace

EXIT_OK = 0
EXIT_ERROR = 1
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


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can cause and fix: reported as one message, without a traceback."""
    from components.data.contract import ContractError
    from components.data.extract import ExtractionError
    from components.inference.scoring import InputError
    from components.modeling.prepare import PreparationError
    from components.modeling.tasks import TargetError
    from components.modeling.train import TrainingError
    from components.tracking.registry import RegistryError

    return (
        ConfigError,
        ContractError,
        ExtractionError,
        PreparationError,
        RegistryError,
        InputError,
        TrainingError,
        TargetError,
    )


def _report_unexpected(exc: BaseException) -> NoReturn:
    if os.environ.get("MLOPS_DEBUG"):
        print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
    else:
        err.print("[dim](set MLOPS_DEBUG=1 for the traceback)[/]")
    _fail(f"{type(exc).__name__}: {exc}")


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
    config = project.adhoc_config(
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
    return config, proposal


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


@app.command()
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
    except _user_errors() as exc:
        _fail(str(exc))
    workspace = _workspace(config)
    try:
        resolve_source(config, workspace.root)  # a bad source or a missing target fails before Prefect starts
    except ConfigError as exc:
        _fail(str(exc))
    if new_model is not None:
        from components.data.contract import suite_path

        _announce_new_model(new_model, suite_path(config.validation.suite_dir, new_model.name))
    _prefect_api(config, workspace)
    from components.data.contract import DataRejected
    from flows.prefect_server import flow_run_settings
    from flows.training import training_flow

    try:
        with flow_run_settings(config.prefect.heartbeat_seconds):
            result = training_flow(config, dry_run=dry_run)
    except DataRejected as exc:
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
        raise typer.Exit(EXIT_REJECTED) from None
    except _user_errors() as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: report, exit 1
        _report_unexpected(exc)
    if result.dry_run:
        verdict = "[green]would be promoted[/]" if result.would_promote else "[yellow]would be held back[/]"
        err.print(
            f"{result.model_name} (dry run, nothing registered): {verdict}: {result.reason}\n"
            f"MLflow run {result.run_id}",
            highlight=False,
        )
    else:
        verdict = "[green]promoted to champion[/]" if result.promoted else "[yellow]held back[/]"
        err.print(
            f"{result.model_name} v{result.model_version} ({result.task}): {verdict}: {result.reason}\n"
            f"MLflow run {result.run_id}",
            highlight=False,
        )
    _print_data_note(result.data)
    if as_json:
        print(json.dumps({**json.loads(result.as_json()), "new_model": new_model is not None}, sort_keys=True))


@app.command()
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
    from components.core.project import check_name
    from components.data import contract
    from components.data.extract import dataset_name_for, is_database_url
    from components.modeling.tasks import task_named

    project = _project(config_path)
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
        settings = project.adhoc_config(
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
        profiled = contract.profile_from_config(frame, model_name, settings, task=proposal.task.task)
    except (*_user_errors(), ValueError) as exc:  # type: ignore[misc]
        _fail(str(exc))
    metric = task_named(proposal.task.task).default_metric
    text = render_model_file(proposal, metric, _shown(suite, project.root))
    if is_database_url(data) and query:
        text = text.replace("data:\n", f"data:\n  query: {json.dumps(query)}\n", 1)
    from components.core.files import write_text_atomic

    model_file.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(model_file, text)
    contract.save_suite(profiled, suite)
    table = Table(title=f"new model {model_name!r} ({proposal.rows:,} rows)", show_header=False)
    table.add_row("task", f"{proposal.task.task} ({proposal.task.reason})")
    table.add_row("target", f"{target}: {proposal.task.summary}")
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
    err.print(table)
    err.print(f"review both files and commit them; then: mlops run --name {model_name}", highlight=False)


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


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


class StreamChoice(StrEnum):
    loans = "loans"
    trips = "trips"


@app.command()
def simulate(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: <workspace>/data/loan_default or .../taxi_trips)."),
    ] = None,
    stream: Annotated[
        StreamChoice,
        typer.Option(help="loans: loan defaults (binary classification); trips: taxi trip minutes (regression)."),
    ] = StreamChoice.loans,
    batches: Annotated[int, typer.Option(min=1, help="Number of weekly batches.")] = 4,
    rows: Annotated[int, typer.Option(min=1, help="Rows per batch.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    scenario_from: Annotated[int, typer.Option(min=0, help="First batch the scenario applies to.")] = 0,
    covariate_drift: Annotated[float, typer.Option(min=0, max=1, help="Shift of the inputs (0-1).")] = 0.0,
    concept_drift: Annotated[
        float, typer.Option(min=0, max=1, help="Change of the mechanism: P(default|x), or the pace per km (0-1).")
    ] = 0.0,
    schema_change: Annotated[bool, typer.Option(help="Rename a column and add a new one.")] = False,
    unit_change: Annotated[
        bool, typer.Option(help="A unit bug: annual_income in thousands, or distance_km in metres.")
    ] = False,
    label_noise: Annotated[float, typer.Option(min=0, max=1, help="Fraction of labels made wrong.")] = 0.0,
    duplicates: Annotated[float, typer.Option(min=0, max=1, help="Fraction of rows duplicated.")] = 0.0,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Do nothing when the folder already holds batches.")
    ] = False,
    config_path: ConfigOption = None,
) -> None:
    """Write seeded batches of a generated stream as Parquet, optionally with a scenario."""
    from components.simulation.simulate import Scenario, write_batches

    if out_dir is None:
        folder = "loan_default" if stream is StreamChoice.loans else "taxi_trips"
        out_dir = Workspace.at(_load(config_path).home).data / folder
    if skip_existing and any(out_dir.glob("batch_*.parquet")):
        err.print(f"{out_dir} already holds batches; left as they are", highlight=False)
        return
    scenario = Scenario(
        covariate_drift=covariate_drift,
        concept_drift=concept_drift,
        schema_change=schema_change,
        unit_change=unit_change,
        label_noise=label_noise,
        duplicate_rate=duplicates,
    )
    paths = write_batches(out_dir, batches, rows, seed, scenario, scenario_from=scenario_from, stream=stream.value)
    err.print(f"wrote {len(paths)} batches x {rows} rows to {out_dir}", highlight=False)


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
            }
        )
    return rows


@app.command()
def status(
    config_path: ConfigOption = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="One model (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hide_endpoints: Annotated[
        bool,
        typer.Option(
            "--hide-endpoints",
            help="Leave the tracking and Prefect URLs out when they point at servers (for CI artifacts).",
        ),
    ] = False,
) -> None:
    """Show the workspace, the configured models, each registered model's current champion and
    what the project keeps running in the background (the local Prefect server, with its memory)."""
    from components.tracking import registry

    project = _project(config_path)
    config = _load(config_path)
    workspace = _workspace(config)
    configured = project.model_names()
    names = [name] if name else sorted(set(configured) | set(registry.list_models(registry.connect(workspace))))
    champions = _champions(workspace, names)
    for row in champions:
        row["configured"] = row["name"] in configured
    tracking = registry.tracking_uri(workspace)
    prefect_api = os.environ.get("PREFECT_API_URL")
    if hide_endpoints:
        tracking = tracking if tracking.startswith(("sqlite:", "file:")) else "(hidden: a server)"
        prefect_api = None if prefect_api is None else "(hidden: a server)"
    background = background_lines(workspace.root)
    info = {
        "workspace": str(workspace.root),
        "tracking_uri": redact(tracking),
        "prefect_api_url": None if prefect_api is None else redact(prefect_api),
        "models_dir": str(project.models_dir),
        "models": champions,
        "background": background,
    }
    if as_json:
        print(json.dumps(info, sort_keys=True))
        return
    out.print(f"workspace:    {info['workspace']}\ntracking URI: {info['tracking_uri']}", highlight=False)
    for line in background:
        out.print(f"running:      {line} (`mlops server stop` stops it)", highlight=False)
    if not champions:
        out.print("no models yet: create one with `mlops init --data FILE --target COLUMN`, then `mlops run`")
        return
    table = Table("model", "task", "champion", "promoted (UTC)", "test metrics")
    table.columns[0].no_wrap = table.columns[-1].no_wrap = True
    for row in champions:
        gate = _gate_metric(project, row["name"], row.get("task")) if row["configured"] else None
        table.add_row(
            row["name"] if row["configured"] else f"{row['name']} (ad hoc)",
            row.get("task") or "-",
            row["version"] or "-",
            (row.get("promoted_at") or "-")[:16].replace("T", " "),
            "\n".join(_headline(row.get("metrics") or {}, row.get("task"), gate)),
        )
    out.print(table)
    out.print(
        f"settings: {_shown(project.models_dir, project.root)}/<model>.yaml (ad hoc: project defaults only)\n"
        "every metric: mlops status --json",
        style="dim",
        highlight=False,
    )


HEADLINE = {
    "binary": ("roc_auc", "average_precision", "f1"),
    "multiclass": ("balanced_accuracy", "accuracy", "log_loss"),
    "regression": ("rmse", "r2", "interval_coverage"),
}


def _gate_metric(project: Any, name: str, task: str | None) -> str | None:
    """The metric a configured model is gated on (its own, or its task's default)."""
    from components.modeling.tasks import task_named

    try:
        configured = project.config_for(name).promotion.metric
        return task_named(task).metric_for(configured) if task else configured
    except (ValueError, OSError):  # a broken model file must not hide the others' status
        return None


def _headline(metrics: dict[str, float], task: str | None, gate: str | None) -> list[str]:
    """The gate metric first, then the ones the task's users look at."""
    names = [gate] if gate else []
    names += [m for m in HEADLINE.get(task or "", ()) if m not in names]
    shown = [f"{m}={metrics[m]:.4f}" for m in names if m in metrics]
    return shown or [f"{k}={v:.4f}" for k, v in list(metrics.items())[:3]]


@app.command()
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
    if as_json:
        print(json.dumps({"name": done.name, "champion": done.restored, "previous_champion": done.demoted}))
        return
    err.print(
        f"{model_name}: champion is v{done.restored} again (v{done.demoted} is now previous-champion); "
        f"reason recorded: {done.reason}",
        highlight=False,
    )


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    config_path: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from config: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config: 3000).")] = None,
    name: ModelOption = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated", help="Serve on a non-loopback address without MLOPS_API_KEY (not advised)."
        ),
    ] = False,
) -> None:
    """Serve a model's champion over HTTP with BentoML: POST /predict, GET /metadata, /healthz, /readyz.

    The service follows the `champion` alias (serving.reload_seconds) and logs every prediction
    under the workspace. Set MLOPS_API_KEY to require `Authorization: Bearer <key>`; on an address
    other than loopback it is required unless --allow-unauthenticated. Several models are served
    side by side by one `mlops serve --name N --port P` each.
    """
    from components.core.config import find_config_file

    model_name, config = _model(config_path, name, "`mlops serve`")
    bind = host or config.serving.host
    if not _loopback(bind) and not os.environ.get("MLOPS_API_KEY") and not allow_unauthenticated:
        _fail(
            f"refusing to serve on {bind} without MLOPS_API_KEY: anyone who reaches it could read the model's "
            "answers and fill its prediction log. Set MLOPS_API_KEY, or pass --allow-unauthenticated"
        )
    workspace = _workspace(config)
    champions = _champions(workspace, [model_name])
    if not champions or champions[0]["version"] is None:
        _fail(f"registered model {model_name!r} has no champion yet; run `mlops run` first")
    from serving.service import PROJECT_ROOT, service_target

    env = dict(os.environ)
    env["MLOPS_MODEL_NAME"] = model_name
    # Tree ensembles' thread pools turn single-row requests into tens of ms with 1 s stalls.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(variable, "1")
    env["MLOPS_HOME"] = str(workspace.root)
    workspace_environment(workspace, env)
    config_file = config_path or find_config_file()
    if config_file:
        env["MLOPS_CONFIG"] = str(Path(config_file).resolve())
    bentoml = Path(sys.executable).parent / "bentoml"
    args = [
        str(bentoml),
        "serve",
        service_target(),
        "--host",
        bind,
        "--port",
        str(port or config.serving.port),
        "--working-dir",
        str(PROJECT_ROOT),
    ]
    auth = "bearer token required" if env.get("MLOPS_API_KEY") else "no auth (set MLOPS_API_KEY to require a token)"
    err.print(f"serving {model_name} v{champions[0]['version']} on http://{bind}:{args[6]} ({auth})", highlight=False)
    os.execve(str(bentoml), args, env)


@app.command()
def build(
    config_path: ConfigOption = None,
    name: ModelOption = None,
    bentofile: Annotated[
        Path | None, typer.Option("--bentofile", help="Build options (default: bentofile.yaml of the project).")
    ] = None,
) -> None:
    """Pack the current champion into a Bento that serves without the tracking server.

    The model is copied into BentoML's store under the workspace; `bentoml containerize <tag>`
    (Docker) turns the printed Bento tag into an image.
    """
    from components.tracking import registry

    model_name, config = _model(config_path, name, "`mlops build`")
    workspace = _workspace(config)
    from serving.build import BuildError, build_bento, bundle_champion
    from serving.schema import SchemaError
    from serving.service import PROJECT_ROOT

    try:
        client = registry.connect(workspace)
        champion = registry.get_champion(client, model_name)
        if champion is None:
            _fail(f"registered model {model_name!r} has no champion yet; run `mlops run` first")
        model_tag = bundle_champion(client, model_name, champion.version, config.data.id_column)
        bento_tag = build_bento(
            PROJECT_ROOT,
            bentofile or PROJECT_ROOT / "bentofile.yaml",
            workspace.root / "bentoml" / "build",
            model_tag,
            model_name,
            champion.version,
        )
    except (*_user_errors(), BuildError, SchemaError) as exc:  # type: ignore[misc]
        _fail(str(exc))
    err.print(
        f"built Bento {bento_tag} with {model_name} v{champion.version} (model {model_tag})\n"
        f"  serve it:  BENTOML_HOME={os.environ['BENTOML_HOME']} bentoml serve {bento_tag}\n"
        f"  image:     BENTOML_HOME={os.environ['BENTOML_HOME']} bentoml containerize {bento_tag}",
        highlight=False,
        soft_wrap=True,
    )
    print(bento_tag)


class OnInvalid(StrEnum):
    fail = "fail"
    reject = "reject"


@app.command()
def score(
    input_path: Annotated[Path, typer.Option("--input", "-i", help="CSV or Parquet file to score.")],
    output_path: Annotated[
        Path, typer.Option("--output", "-o", help="Parquet file to write (temporary name until complete).")
    ],
    config_path: ConfigOption = None,
    name: ModelOption = None,
    id_column: Annotated[
        str | None, typer.Option("--id-column", help="Id column carried into the output (default: the model's).")
    ] = None,
    on_invalid: Annotated[
        OnInvalid | None,
        typer.Option(
            "--on-invalid",
            help="Rows breaking the contract: fail the job, or reject them into the rejects file and score "
            "the rest (default: scoring.on_invalid, fail).",
        ),
    ] = None,
    rejects_path: Annotated[
        Path | None,
        typer.Option(
            "--rejects", help="Rejects file; implies --on-invalid reject (default: <output stem>.rejects.parquet)."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Score on a local Dask cluster of N processes.")
    ] = None,
    dask_address: Annotated[
        str | None, typer.Option("--dask-address", help="Score on this Dask scheduler, e.g. tcp://host:8786.")
    ] = None,
    chunk_rows: Annotated[
        int | None, typer.Option("--chunk-rows", min=1, help="Rows per chunk (default: scoring.chunk_rows).")
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bar on stderr (default: when it is a terminal)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one last line of JSON with the outcome.")] = False,
) -> None:
    """Score a CSV or Parquet file with the champion into Parquet, checked against the training contract.

    Exit status: 0 when the file was scored (in reject mode, with its invalid rows set aside), 3 when the
    data breaks the contract (unreadable, a model column missing or of the wrong type, or invalid rows
    with --on-invalid fail), 1 on any other error. A file at the output path is always a complete one.
    """
    from components.inference import batch

    model_name, config = _model(config_path, name, "`mlops score`")
    if rejects_path is not None and on_invalid is OnInvalid.fail:
        _fail("--rejects sets invalid rows aside: it cannot be combined with --on-invalid fail")
    mode = on_invalid.value if on_invalid else "reject" if rejects_path else None
    config = config.with_overrides(
        scoring={"on_invalid": mode, "workers": workers, "dask_address": dask_address, "chunk_rows": chunk_rows}
    )
    workspace = _workspace(config)
    rejects = (
        (rejects_path or batch.default_rejects_path(output_path)) if config.scoring.on_invalid == "reject" else None
    )
    try:
        batch.check_paths(input_path, output_path, rejects)  # before Prefect starts
    except batch.InputError as exc:
        _fail(str(exc))
    _prefect_api(config, workspace)

    from flows.prefect_server import flow_run_settings
    from flows.scoring import scoring_flow

    try:
        with flow_run_settings(config.prefect.heartbeat_seconds):
            result = scoring_flow(
                config,
                input_path,
                output_path,
                model_name=model_name,
                id_column=id_column,
                rejects_path=rejects,
                show_progress=err.is_terminal if progress is None else progress,
            )
    except batch.InvalidInput as exc:
        _fail(f"rejected: {exc}", EXIT_REJECTED)
    except _user_errors() as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: report, exit 1
        _report_unexpected(exc)
    err.print(
        f"scored {result.scored:,} of {result.rows:,} rows with {result.model_name} v{result.model_version} "
        f"in {result.seconds:.1f} s ({result.rows_per_second:,.0f} rows/s, {result.workers} worker(s)) "
        f"-> {result.output}",
        highlight=False,
        soft_wrap=True,
    )
    if result.rejects is not None:
        err.print(f"rejected {result.rejected:,} rows -> {result.rejects}", highlight=False, soft_wrap=True)
    if as_json:
        print(result.as_json())


class Retrain(StrEnum):
    inline = "inline"
    event = "event"
    off = "off"


@app.command()
def monitor(
    config_path: ConfigOption = None,
    name: ModelOption = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="New rows: CSV/Parquet file, folder or glob (default: the prediction log)."),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option("--labels", help="Labels that arrived for those rows: a file of id and target columns."),
    ] = None,
    retrain: Annotated[
        Retrain | None,
        typer.Option(
            "--retrain",
            help="On a sustained alarm: run training now (inline), emit mlops.retrain.requested for "
            "`mlops deploy` (event), or only report (off). Default: monitoring.retrain.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as one last line of JSON.")] = False,
) -> None:
    """Compare new data (or the service's prediction log) with the champion's training reference.

    Per-feature drift (KS / chi-square with PSI), score drift (Jensen-Shannon), null-rate and
    new-category shifts, and, with labels, decay of the evaluation metric. Retraining is due when
    drift or decay held in monitoring.min_windows of the last monitoring.windows windows. The
    report is written as HTML and JSON under the workspace and logged to MLflow.

    Exit status: 0 no retraining due (stable, a first alarm being watched, or too few rows), 4 drift
    or decay sustained: retraining triggered (or due, with --retrain off), 3 the data breaks the
    contract, 1 any other error.
    """
    from components.monitoring.monitor import MonitoringError

    _, config = _model(config_path, name, "`mlops monitor`")
    workspace = _workspace(config)
    _prefect_api(config, workspace)

    from flows.monitoring import monitoring_flow
    from flows.prefect_server import flow_run_settings

    handled: tuple[type[BaseException], ...] = (MonitoringError, *_user_errors())
    try:
        with flow_run_settings(config.prefect.heartbeat_seconds):
            result = monitoring_flow(config, data=data, labels=labels, retrain=retrain.value if retrain else None)
    except handled as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: report, exit 1
        _report_unexpected(exc)
    colour = {"stable": "green", "watching": "yellow", "retrain": "red", "rejected": "red"}.get(result.verdict, "dim")
    err.print(
        f"{result.model_name} v{result.model_version}, {result.window} ({result.rows:,} rows): "
        f"[bold {colour}]{result.verdict}[/]: {result.reason}",
        highlight=False,
        soft_wrap=True,
    )
    if result.contract and not result.contract.startswith("clean"):
        err.print(f"  contract: {result.contract}", highlight=False, soft_wrap=True)
    if result.rows_set_aside:
        err.print(f"  {result.rows_set_aside} row(s) broke row rules and were left out", highlight=False)
    for issue in result.quality:
        err.print(f"  data quality: {issue}", highlight=False, soft_wrap=True)
    if result.report_html:
        err.print(f"report: {result.report_html}", highlight=False, soft_wrap=True)
    if result.retraining == "ran" and result.training:
        t = result.training
        verdict = "promoted" if t.get("promoted") else "held back"
        err.print(f"retrained: v{t.get('model_version')} {verdict}: {t.get('reason')}", highlight=False, soft_wrap=True)
    elif result.retraining == "event":
        err.print("retraining requested: emitted mlops.retrain.requested", highlight=False)
    if as_json:
        print(result.as_json())
    if result.verdict == "rejected":
        raise typer.Exit(EXIT_REJECTED)
    if result.verdict == "retrain":
        raise typer.Exit(EXIT_RETRAIN)


@app.command("simulate-ct")
def simulate_ct(
    config_path: ConfigOption = None,
    batches: Annotated[
        int, typer.Option("--batches", "-k", min=3, help="Batches replayed after the first champion.")
    ] = 12,
    rows: Annotated[int, typer.Option("--rows", min=500, help="Rows per batch.")] = 4000,
    drift_at: Annotated[
        int | None, typer.Option("--drift-at", help="Covariate drift from this batch on (default K/3; -1: none).")
    ] = None,
    concept_at: Annotated[
        int | None, typer.Option("--concept-at", help="Concept drift from this batch on (default 2K/3; -1: none).")
    ] = None,
    corrupt_at: Annotated[
        int | None,
        typer.Option("--corrupt-at", help="A corrupted batch (income in thousands) here (default K/2; -1: none)."),
    ] = None,
    window: Annotated[int, typer.Option("--window", min=1, help="Training window: the last N accepted batches.")] = 2,
    trials: Annotated[int, typer.Option("--trials", min=1, help="Search trials per training run.")] = 5,
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="classification: the loan stream, judged on accuracy; regression: the taxi-trip stream, on R².",
        ),
    ] = "classification",
    home: Annotated[
        Path | None,
        typer.Option("--home", help="The simulation's own workspace (default: <workspace>/simulate-ct/<time>)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the timeline and goals as one line of JSON.")] = False,
) -> None:
    """Replay K generated batches through monitor -> (retrain -> gate -> promote) and print the timeline.

    Scenarios: covariate drift from --drift-at, concept drift from --concept-at, a corrupted batch at
    --corrupt-at. Runs in a workspace of its own (a separate registry), never touching your champion.
    Goals: the corrupted batch is rejected; each shift is detected within one batch; after it, served
    accuracy (R² for regression) is within 2 points of a model trained on the batch's own distribution;
    no retraining on stable batches. Exit status: 0 all goals met, 4 a goal missed, 1 an error.
    """
    from components.simulation.ctsim import STREAMS
    from flows import simulate_ct as sim

    if task not in STREAMS:
        _fail(f"--task must be one of {', '.join(STREAMS)}, not {task!r}")
    stream = STREAMS[task]

    def default(value: int | None, fallback: int) -> int | None:
        return fallback if value is None else (None if value < 0 else value)

    config = _load(config_path)
    workspace = _workspace(config)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    sim_home = (home or workspace.root / "simulate-ct" / stamp).expanduser().resolve()
    _prefect_api(config, workspace)
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(variable, None)  # the simulation's registry is its own workspace's, never a shared server
    table = Table(
        title=f"continuous training of {stream.name} ({task}), {batches} batches of {rows:,} rows ({sim_home})"
    )
    for column in (
        "batch",
        "scenario",
        "validation",
        "drift verdict",
        "retrained",
        "promoted",
        "served",
        f"served {stream.figure}",
        f"best {stream.figure}",
        "gap (pts)",
    ):
        table.add_column(
            column,
            justify="right" if column in ("batch", "gap (pts)") or "served " in column or "best " in column else "left",
        )

    def show(row: Any) -> None:
        gap = "" if row.gap is None else f"{100 * row.gap:+.1f}"
        acc = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        err.print(
            f"batch {row.batch:>2} {row.kind:<15} {row.validation:<8} {row.drift:<9} "
            f"{'retrained' if row.retrained else '':<9} {('v' + row.promoted) if row.promoted else '':<4} "
            f"served v{row.served_version} {stream.figure} {acc(row.served_score)} best {acc(row.best_score)} {gap}",
            highlight=False,
            soft_wrap=True,
        )
        table.add_row(
            str(row.batch),
            row.kind,
            row.validation,
            row.drift,
            "yes" if row.retrained else "",
            f"v{row.promoted}" if row.promoted else "",
            f"v{row.served_version}",
            acc(row.served_score),
            acc(row.best_score),
            gap,
        )

    from flows.prefect_server import flow_run_settings

    handled: tuple[type[BaseException], ...] = (ValueError, FileExistsError, *_user_errors())
    try:
        with flow_run_settings(config.prefect.heartbeat_seconds):
            timeline, goals = sim.simulate_ct(
                config,
                sim_home,
                batches=batches,
                rows=rows,
                drift_at=default(drift_at, batches // 3),
                concept_at=default(concept_at, 2 * batches // 3),
                corrupt_at=default(corrupt_at, batches // 2),
                window=window,
                trials=trials,
                stream=stream,
                on_row=show,
                log=lambda message: err.print(message, highlight=False),
            )
    except handled as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: report, exit 1
        _report_unexpected(exc)
    (out if out.is_terminal else Console(width=140)).print(table)  # a log file gets the table unsquashed
    for goal in goals:
        mark = "[green]PASS[/]" if goal.met else "[bold red]FAIL[/]"
        out.print(f"  {mark}  {goal.name}: {goal.detail}", highlight=False, soft_wrap=True)
    out.print(f"reports, registry and data: {sim_home}", highlight=False, soft_wrap=True)
    if as_json:
        from dataclasses import asdict

        print(
            json.dumps({"home": str(sim_home), "timeline": sim.as_dicts(timeline), "goals": [asdict(g) for g in goals]})
        )
    if not all(goal.met for goal in goals):
        raise typer.Exit(EXIT_RETRAIN)


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


@expectations_app.command("init")
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


@expectations_app.command("validate")
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
    from components.data.quarantine import quarantine, screen_with

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
    report_path = workspace.reports / f"validation_{dataset}_{stamp}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "source": redact(source),
        "accepted": [b.name for b in screening.accepted],
        "rejected": [{"batch": r.batch.name, **r.report.as_dict()} for r in screening.rejected],
        "report": screening.report.as_dict(),
        "rows_set_aside": {a.batch.name: {"rows": len(a.rows), "reasons": a.reasons()} for a in screening.set_aside},
    }
    from components.core.files import write_text_atomic

    write_text_atomic(report_path, json.dumps(payload, indent=2, default=str))
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
    if not screening.success:
        raise typer.Exit(EXIT_REJECTED)


@expectations_app.command("diff")
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


@app.command()
def deploy(
    config_path: ConfigOption = None,
    name: Annotated[
        list[str] | None, typer.Option("--name", "-n", help="Deploy only this model (repeatable; default: all).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be deployed; contact no server.")
    ] = False,
    no_serve: Annotated[
        bool,
        typer.Option(
            "--no-serve",
            help="Register the deployments and their triggers, print them and exit; their runs wait "
            "until `mlops deploy` serves them.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the deployments as one line of JSON.")] = False,
) -> None:
    """Serve every configured model's pipeline as Prefect deployments until Ctrl-C.

    For each model in models/: training and monitoring on its cron schedules (deploy.training.cron,
    deploy.monitoring.cron), batch scoring when its deploy.scoring is set, training when the monitor
    emits mlops.retrain.requested for it and when files land in its deploy.landing.folder. Runs load the
    model's settings when they start; schedules and triggers are read here (restart to change them).
    Without PREFECT_API_URL the deployments go to the workspace's local Prefect server (started if
    needed), whose UI shows them.
    """
    project = _project(config_path)
    names = list(name or project.model_names())
    if not names:
        _fail(f"no model is configured in {project.models_dir}: create one with `mlops init`")
    try:
        configs = {model: project.model_config(model) for model in names}
    except ConfigError as exc:
        _fail(str(exc))
    config = _load(config_path)
    workspace = _workspace(config)
    if not dry_run:
        from flows.prefect_server import PrefectServerError, configure_prefect_api

        if not os.environ.get("PREFECT_API_URL") and config.prefect.server == "ephemeral":
            err.print("deployments need a server that outlives this command: using the workspace's local server")
        try:
            configure_prefect_api(workspace.prefect_home, "local", config.prefect.idle_minutes)
        except PrefectServerError as exc:
            _fail(str(exc))
    from prefect.settings import get_current_settings

    from flows import deploy as deployments

    try:
        plans = [
            deployments.plan_deployments(settings, project.config_file, workspace, configured=True)
            for settings in configs.values()
        ]
    except deployments.DeployError as exc:
        _fail(str(exc))
    ui_url = None if dry_run else get_current_settings().ui_url

    def show(ids: dict[str, Any] | None) -> None:
        infos = [deployments.describe(plan, ids, ui_url) for plan in plans]
        if as_json:
            print(json.dumps({"models": infos}, sort_keys=True), flush=True)
        else:
            for info in infos:
                deployments.print_plan(out, info)

    try:
        if dry_run or no_serve:
            show(deployments.register(plans) if no_serve else None)
            err.print("registered; runs wait until `mlops deploy` serves them" if no_serve else "dry run: nothing sent")
            return
        deployments.serve(plans, show, heartbeat_seconds=config.prefect.heartbeat_seconds)
    except deployments.DeployError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: report, exit 1
        _report_unexpected(exc)
    err.print("stopped serving: the schedules are paused until the next `mlops deploy`")


@server_app.command("start")
def server_start(config_path: ConfigOption = None) -> None:
    """Start the workspace's Prefect server (UI included) if it is not running."""
    from flows.prefect_server import PrefectServerError, auth_file, ensure_server

    config = _load(config_path)
    workspace = _workspace(config)
    try:
        info = ensure_server(workspace.prefect_home, idle_minutes=config.prefect.idle_minutes)
    except PrefectServerError as exc:
        _fail(str(exc))
    out.print(f"Prefect server running (pid {info.pid}): UI {info.ui_url}, API {info.api_url}", highlight=False)
    out.print(f"the UI asks for the key in {auth_file(workspace.prefect_home)}", highlight=False)


AllServersOption = Annotated[
    bool, typer.Option("--all", help="Every local Prefect server of this user, in any workspace.")
]


@server_app.command("stop")
def server_stop(config_path: ConfigOption = None, every: AllServersOption = False) -> None:
    """Stop the workspace's local Prefect server (with --all: every one this user runs)."""
    from flows.prefect_server import stop_all, stop_server

    if every:
        stopped = stop_all()
        for server in stopped:
            out.print(f"stopped the Prefect server of {server.home.parent} (pid {server.pid})", highlight=False)
        if not stopped:
            out.print("no local Prefect server was running")
        return
    workspace = Workspace.at(_load(config_path).home)
    info = stop_server(workspace.prefect_home)
    out.print(f"stopped the Prefect server (pid {info.pid})" if info else "no Prefect server was running")


def _describe_server(server: Any) -> str:
    memory = f"{server.rss_bytes / 2**20:,.0f} MiB" if server.rss_bytes is not None else "memory unknown"
    since = datetime.fromtimestamp(server.started, UTC).isoformat(timespec="seconds") if server.started else "unknown"
    port = f"UI http://127.0.0.1:{server.port}" if server.port else "port unknown"
    return f"Prefect server of {server.home.parent} (pid {server.pid}, {memory}, since {since}): {port}"


def background_lines(home: Path | None) -> list[str]:
    """What this project keeps running: the local Prefect server of `home`'s workspace (every one
    of this user's when `home` is None), each with its memory."""
    from flows.prefect_server import list_servers

    servers = list_servers()
    if home is not None:
        own = Workspace.at(home).prefect_home.resolve()
        servers = [s for s in servers if s.home.resolve() == own]
    return [_describe_server(s) for s in servers]


@server_app.command("status")
def server_status(config_path: ConfigOption = None, every: AllServersOption = False) -> None:
    """Show the workspace's local Prefect server with its memory (with --all: every one of this user)."""
    config = _load(config_path)
    if os.environ.get("PREFECT_API_URL"):
        out.print(f"PREFECT_API_URL is set: flows report to {redact(os.environ['PREFECT_API_URL'])}")
    lines = background_lines(None if every else config.home)
    for line in lines:
        out.print(line, highlight=False)
    if not lines:
        out.print("no local Prefect server is running" + ("" if every else " for this workspace"))
    elif config.prefect.idle_minutes:
        out.print(f"each exits after {config.prefect.idle_minutes:g} minutes without a request", highlight=False)


_exit_status = EXIT_ERROR


def _skip_interpreter_teardown() -> None:
    """Registered first, so it runs after every other exit handler (Prefect's log and event
    flushes, MLflow's run end, ...): flush what is left and leave without the interpreter's
    teardown, which frees thousands of modules and the data frames one by one (1.5-3 s here)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(_exit_status)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or EXIT_OK
    print(exc.code, file=sys.stderr)
    return EXIT_ERROR


def main() -> None:
    """The `mlops` script. MLOPS_FULL_TEARDOWN=1 (or running under coverage) exits normally."""
    global _exit_status
    if not os.environ.get("MLOPS_FULL_TEARDOWN") and "coverage" not in sys.modules:
        atexit.register(_skip_interpreter_teardown)
    try:
        app()
        _exit_status = EXIT_OK
    except SystemExit as exc:
        _exit_status = _exit_code(exc)
        raise
    except KeyboardInterrupt:
        _exit_status = 130
        raise


if __name__ == "__main__":
    main()
