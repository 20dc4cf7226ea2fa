"""`mlops deploy`: Prefect deployments for every configured model."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from components.core.config import ConfigError, PipelineConfig
from flows.cli.common import (
    ConfigOption,
    _fail,
    _load,
    _project,
    _report_unexpected,
    _workspace,
    err,
    out,
)

if TYPE_CHECKING:
    from components.core.project import Project
    from components.core.workspace import Workspace
    from flows.deployments import DeployPlan


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
    configs = _model_configs(project, name)
    config = _load(config_path)
    workspace = _workspace(config)
    if not dry_run:
        _local_server(config, workspace)
    from prefect.settings import get_current_settings

    from flows import deploy_serve, deployments

    try:
        plans = [
            deployments.plan_deployments(settings, project.config_file, workspace, configured=True)
            for settings in configs.values()
        ]
    except deployments.DeployError as exc:
        _fail(str(exc))
    show = _shower(plans, None if dry_run else get_current_settings().ui_url, as_json)
    try:
        if dry_run or no_serve:
            show(deploy_serve.register(plans) if no_serve else None)
            err.print("registered; runs wait until `mlops deploy` serves them" if no_serve else "dry run: nothing sent")
            return
        deploy_serve.serve(plans, show, heartbeat_seconds=config.prefect.heartbeat_seconds)
    except deployments.DeployError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: report, exit 1
        _report_unexpected(exc)
    err.print("stopped serving: the schedules are paused until the next `mlops deploy`")


def _model_configs(project: Project, name: list[str] | None) -> dict[str, PipelineConfig]:
    """The settings of each model named (default: every configured one)."""
    names = list(name or project.model_names())
    if not names:
        _fail(f"no model is configured in {project.models_dir}: create one with `mlops init`")
    try:
        return {model: project.model_config(model) for model in names}
    except ConfigError as exc:
        _fail(str(exc))


def _local_server(config: PipelineConfig, workspace: Workspace) -> None:
    """Deployments go to the workspace's local Prefect server (started if needed) unless PREFECT_API_URL is set."""
    from flows.prefect_server import PrefectServerError, configure_prefect_api

    if not os.environ.get("PREFECT_API_URL") and config.prefect.server == "ephemeral":
        err.print("deployments need a server that outlives this command: using the workspace's local server")
    try:
        configure_prefect_api(workspace.prefect_home, "local", config.prefect.idle_minutes)
    except PrefectServerError as exc:
        _fail(str(exc))


def _shower(plans: list[DeployPlan], ui_url: str | None, as_json: bool) -> Callable[[dict[str, Any] | None], None]:
    """What prints the deployments (with their ids once registered): a table each, or one line of JSON."""
    from flows import deployments

    def show(ids: dict[str, Any] | None) -> None:
        infos = [deployments.describe(plan, ids, ui_url) for plan in plans]
        if as_json:
            print(json.dumps({"models": infos}, sort_keys=True), flush=True)
        else:
            for info in infos:
                deployments.print_plan(out, info)

    return show
