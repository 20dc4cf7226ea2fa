"""`mlops status`: the workspace, every model and its champion, what runs in the background."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.table import Table

from components.core.secrets import redact
from flows.cli.common import (
    ConfigOption,
    _champions,
    _load,
    _project,
    _reachable_store,
    _shown,
    _workspace,
    out,
)
from flows.cli.server import background_lines


def status(
    config_path: ConfigOption = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="One model (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="What was serving at this time (ISO, UTC unless it says), from each model's history."
        ),
    ] = None,
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
    _reachable_store(workspace)
    names = [name] if name else sorted(set(configured) | set(registry.list_models(registry.connect(workspace))))
    if at is not None:
        _serving_at(workspace, names, at, as_json)
        return
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
    _print_status(project, info)


def _print_status(project: Any, info: dict[str, Any]) -> None:
    champions, background = info["models"], info["background"]
    out.print(f"workspace:    {info['workspace']}\ntracking URI: {info['tracking_uri']}", highlight=False)
    for line in background:
        out.print(f"running:      {line} (`mlops server stop` stops it)", highlight=False)
    if not champions:
        out.print("no models yet: create one with `mlops init --data FILE --target COLUMN`, then `mlops run`")
        return
    out.print(_champion_table(project, champions))
    out.print(
        f"settings: {_shown(project.models_dir, project.root)}/<model>.yaml (ad hoc: project defaults only)\n"
        "every metric: mlops status --json",
        style="dim",
        highlight=False,
    )


def _champion_table(project: Any, champions: list[dict[str, Any]]) -> Table:
    """One row per model: its task, champion, when it was promoted and its headline test metrics."""
    table = Table("model", "task", "champion", "promoted (UTC)", "test metrics")
    table.columns[0].no_wrap = table.columns[-1].no_wrap = True
    for row in champions:
        gate = _gate_metric(project, row["name"], row.get("task")) if row["configured"] else None
        table.add_row(
            row["name"] if row["configured"] else f"{row['name']} (ad hoc)",
            row.get("task") or "-",
            (row["version"] or "-") + _challenger_note(row.get("challenger")),
            (row.get("promoted_at") or "-")[:16].replace("T", " "),
            "\n".join(_headline(row.get("metrics") or {}, row.get("task"), gate)),
        )
    return table


def _challenger_note(trial: dict[str, Any] | None) -> str:
    if not trial:
        return ""
    since = (trial["since"] or "?")[:16]
    if trial.get("recheck_of"):  # the outgoing champion, shadowing a promotion made without labels
        return f"\nv{trial['version']} re-checks it on labels (shadow, since {since})"
    return f"\nchallenger v{trial['version']} ({trial['rollout']}, since {since})"


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


def _serving_at(workspace: Any, names: list[str], at: str, as_json: bool) -> None:
    """Each model's champion at a past time, from its history (`mlops history`)."""
    from components.tracking import registry
    from components.tracking.registry import history
    from flows.cli.release import _parse_time

    when = _parse_time(at)
    client = registry.connect(workspace)
    rows = []
    for model_name in names:
        move = history.serving_at(history.read(client, model_name), when)
        rows.append(
            {"name": model_name, "champion": move.champion if move else None, "since": move.at if move else None}
        )
    if as_json:
        print(json.dumps({"at": when.isoformat(), "models": rows}, sort_keys=True))
        return
    table = Table("model", "champion", "since (UTC)", title=f"serving at {when.isoformat()}")
    for row in rows:
        since = (row["since"] or "-")[:19].replace("T", " ")
        table.add_row(row["name"], f"v{row['champion']}" if row["champion"] else "-", since)
    out.print(table)
