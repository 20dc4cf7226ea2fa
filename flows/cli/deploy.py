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


NoServeOption = Annotated[
    bool,
    typer.Option(
        "--no-serve",
        help="Register the deployments and their triggers, print them and exit; their runs wait "
        "until `mlops deploy` serves them (or, with --work-pool, a worker runs them).",
    ),
]
WorkPoolOption = Annotated[
    str | None,
    typer.Option(
        "--work-pool",
        help="Register the deployments on this Prefect work pool (a process pool is created when "
        "missing) for `prefect worker start --pool NAME` to run, instead of running them here; needs "
        "PREFECT_API_URL. Keeps running only to watch landing folders (none, or --no-serve: exits).",
    ),
]


def deploy(
    config_path: ConfigOption = None,
    name: Annotated[
        list[str] | None, typer.Option("--name", "-n", help="Deploy only this model (repeatable; default: all).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be deployed; contact no server.")
    ] = False,
    no_serve: NoServeOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the deployments as one line of JSON.")] = False,
    work_pool: WorkPoolOption = None,
) -> None:
    """Serve every configured model's pipeline as Prefect deployments until Ctrl-C.

    For each model in models/: training and monitoring on its cron schedules (deploy.training.cron,
    deploy.monitoring.cron), batch scoring when its deploy.scoring is set, training when the monitor
    emits mlops.retrain.requested for it and when files land in its deploy.landing.folder. Runs load the
    model's settings when they start; schedules and triggers are read here (restart to change them).
    Without PREFECT_API_URL the deployments go to the workspace's local Prefect server (started if
    needed), whose UI shows them. With --work-pool they go on that pool, and workers anywhere run them.
    """
    project = _project(config_path)
    configs = _model_configs(project, name)
    config = _load(config_path)
    workspace = _workspace(config)
    if work_pool and not dry_run and not os.environ.get("PREFECT_API_URL"):
        _fail("--work-pool needs a Prefect server the workers reach too: set PREFECT_API_URL (http://HOST:4200/api)")
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
    show = _shower(plans, None if dry_run else get_current_settings().ui_url, as_json, work_pool)
    try:
        if work_pool and not dry_run:
            _on_pool(plans, work_pool, no_serve, show, config.prefect.heartbeat_seconds)
            return
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


def _on_pool(
    plans: list[DeployPlan],
    pool: str,
    no_serve: bool,
    show: Callable[[dict[str, Any] | None], None],
    heartbeat_seconds: int | None,
) -> None:
    """Register on the work pool, then watch the landing folders (if any) until Ctrl-C."""
    from flows import deploy_pool, deploy_serve

    deploy_serve.check_api()
    try:
        ids, pool_type, created = deploy_pool.register_on_pool(plans, pool, heartbeat_seconds)
    except deploy_pool.WorkPoolError as exc:
        _fail(str(exc))
    show(ids)
    err.print(
        f"{'created' if created else 'registered on'} work pool {pool!r} ({pool_type}): runs wait for a worker, "
        f"`prefect worker start --pool {pool}`"
    )
    if no_serve:
        return
    if any(plan.landing for plan in plans):
        err.print("watching the landing folders until Ctrl-C (the runs they trigger go to the pool)")
    if deploy_serve.watch_landing(plans):
        err.print("stopped watching the landing folders; the deployments stay on the pool")


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


def _shower(
    plans: list[DeployPlan], ui_url: str | None, as_json: bool, work_pool: str | None = None
) -> Callable[[dict[str, Any] | None], None]:
    """What prints the deployments (with their ids once registered): a table each, or one line of JSON."""
    from flows import deployments

    def show(ids: dict[str, Any] | None) -> None:
        infos = [deployments.describe(plan, ids, ui_url, work_pool) for plan in plans]
        if as_json:
            print(json.dumps({"models": infos}, sort_keys=True), flush=True)
        else:
            for info in infos:
                deployments.print_plan(out, info)

    return show
