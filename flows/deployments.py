"""The deployments `mlops deploy` registers, planned per model: schedules, triggers, the landing folder.

Each configured model gets `training-job/<model>`, `monitoring-job/<model>` and (when its input and
output are set) `scoring-job/<model>`, the flows of `flows.deploy`; `describe` and `print_plan` say what
starts their runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Schedule
from prefect.types.entrypoint import EntrypointType
from rich.console import Console
from rich.table import Table

from components.core.config import (
    ConfigError,
    DeployConfig,
    PipelineConfig,
    dataset_name,
    resolve_source,
)
from components.core.workspace import Workspace
from components.data.extract import is_database_url
from components.data.landing import LandingError, LandingZone
from components.monitoring.monitor import RETRAIN_EVENT, model_event_resource
from flows.deploy import (
    LANDED_EVENT,
    DeployError,
    base_dir,
    expand_path,
    monitoring_job_flow,
    scoring_job_flow,
    training_job_flow,
)


@dataclass(frozen=True)
class Landing:
    """The landing folder the deploy process watches, and where its files go."""

    folder: Path
    destination: Path
    state_path: Path
    poll_seconds: float

    def zone(self) -> LandingZone:
        return LandingZone(self.folder, self.destination, self.state_path, settle_seconds=self.poll_seconds)


@dataclass(frozen=True)
class Planned:
    """One deployment with a readable account of what starts its runs."""

    deployment: RunnerDeployment
    schedule: str | None
    triggers: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.deployment.flow_name}/{self.deployment.name}"


@dataclass(frozen=True)
class DeployPlan:
    model_name: str
    config_file: Path | None
    deployments: list[Planned]
    landing: Landing | None
    notes: list[str] = field(default_factory=list)


def _cron(expression: str, timezone: str, what: str) -> Schedule:
    try:
        return Cron(expression, timezone=timezone, parameters={"trigger": "schedule"})
    except ValueError as exc:
        raise DeployError(f"deploy.{what}.cron: {exc}") from exc


def _deployment(
    job: Any,
    model: str,
    parameters: dict[str, Any],
    description: str,
    schedules: list[Schedule],
    triggers: list[DeploymentEventTrigger] | None = None,
    on_collision: ConcurrencyLimitStrategy = ConcurrencyLimitStrategy.ENQUEUE,
) -> RunnerDeployment:
    return job.to_deployment(
        name=model,
        schedules=schedules,
        parameters=parameters,
        triggers=triggers or [],
        description=description,
        tags=["mlops", model],
        # One run of a job per model at a time: two trainings would race for the champion alias.
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=on_collision),
        # Runs import the flow by module (the project is installed), whatever the working directory.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def folder_like(source: str) -> bool:
    """A source that names a folder which does not exist yet: no database URL, glob or file suffix."""
    path = Path(source).expanduser()
    return not (is_database_url(source) or any(ch in source for ch in "*?[") or path.suffix or path.exists())


def plan_landing(
    config: PipelineConfig, config_file: Path | None, workspace: Workspace, model: str, notes: list[str] | None = None
) -> Landing | None:
    """The landing watcher's folders, checked; off (with a note) when the training source is not a
    folder that landed files can join."""
    folder = config.deploy.landing.folder
    if not folder:
        return None
    try:
        source = resolve_source(config, workspace.root)
    except ConfigError as exc:
        raise DeployError(str(exc)) from exc
    destination = Path(source).expanduser()
    # A folder, or a path that will be one (created when serving starts): not a file, glob or database.
    if not (destination.is_dir() or folder_like(source)):
        if notes is not None:
            notes.append(
                f"landing folder off: data.source ({source}) is not a folder that landed files can join; point "
                "it at a folder (e.g. '{home}/data/<name>') to train on files dropped into the landing folder"
            )
        return None
    landing = Landing(
        folder=expand_path(folder.replace("{model}", model), workspace.root, base_dir(config_file)),
        destination=destination,
        state_path=workspace.root / "deploy" / f"landing-{model}.json",
        poll_seconds=config.deploy.landing.poll_seconds,
    )
    try:
        landing.zone().check()
    except LandingError as exc:
        raise DeployError(str(exc)) from exc
    return landing


def _training_triggers(model: str, deploy: DeployConfig, landing: Landing | None) -> list[DeploymentEventTrigger]:
    """The events that start a training run: sustained drift (when asked for) and landed files."""
    resource: dict[str, str | list[str]] = {"prefect.resource.id": model_event_resource(model)}
    triggers: list[DeploymentEventTrigger] = []
    if deploy.drift_trigger:
        triggers.append(
            DeploymentEventTrigger(
                name=f"{model}: retrain on drift",
                description=f"The monitor found sustained drift or decay of {model}'s champion.",
                expect={RETRAIN_EVENT},
                match=resource,
                parameters={"trigger": RETRAIN_EVENT},
            )
        )
    if landing is not None:
        triggers.append(
            DeploymentEventTrigger(
                name=f"{model}: train on landed data",
                description=f"New files were moved from {landing.folder} into {landing.destination}.",
                expect={LANDED_EVENT},
                match=resource,
                parameters={"trigger": LANDED_EVENT, "files": "{{ event.payload.files }}"},
            )
        )
    return triggers


def _planned_training(
    model: str, base: dict[str, Any], deploy: DeployConfig, triggers: list[DeploymentEventTrigger]
) -> Planned:
    tz = deploy.timezone
    training_schedules = [_cron(deploy.training.cron, tz, "training")] if deploy.training.cron else []
    return Planned(
        _deployment(
            training_job_flow,
            model,
            base,
            f"Train {model} and promote through the gate.",
            training_schedules,
            triggers,
        ),
        f"{deploy.training.cron} ({tz})" if deploy.training.cron else None,
        tuple(event for t in triggers for event in sorted(t.expect)),
    )


def _planned_monitoring(model: str, base: dict[str, Any], deploy: DeployConfig) -> Planned | None:
    """The monitoring job, or None when it has no schedule."""
    if not deploy.monitoring.cron:
        return None
    return Planned(
        _deployment(
            monitoring_job_flow,
            model,
            base,
            f"Judge {model}'s prediction log against its champion; ask for retraining on sustained drift.",
            [_cron(deploy.monitoring.cron, deploy.timezone, "monitoring")],
            # An overlapping check adds nothing: skip it rather than queue it.
            on_collision=ConcurrencyLimitStrategy.CANCEL_NEW,
        ),
        f"{deploy.monitoring.cron} ({deploy.timezone})",
        (),
    )


def _planned_scoring(model: str, base: dict[str, Any], deploy: DeployConfig) -> Planned | None:
    """The scoring job, or None when it has no schedule; DeployError when it has one but no files."""
    scoring = deploy.scoring
    if scoring.cron and scoring.input and scoring.output:
        return Planned(
            _deployment(
                scoring_job_flow,
                model,
                base,
                f"Score {scoring.input} with {model}'s champion into {scoring.output}.",
                [_cron(scoring.cron, deploy.timezone, "scoring")],
            ),
            f"{scoring.cron} ({deploy.timezone})",
            (),
        )
    if scoring.cron:
        raise DeployError("deploy.scoring.cron is set: deploy.scoring.input and deploy.scoring.output are needed too")
    return None


def plan_deployments(
    config: PipelineConfig, config_file: Path | None, workspace: Workspace, configured: bool = False
) -> DeployPlan:
    """One model's deployments, from its `deploy` section; nothing is sent to the API.

    `configured`: the model has its own file, which its runs load (with the project file) by name."""
    deploy = config.deploy
    try:
        model = dataset_name(config)
    except ConfigError as exc:
        raise DeployError(str(exc)) from exc
    try:
        ZoneInfo(deploy.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DeployError(f"deploy.timezone: unknown time zone {deploy.timezone!r}") from exc
    config_file = config_file.resolve() if config_file else None
    base = {"config_file": str(config_file) if config_file else None, "model": model if configured else None}
    notes: list[str] = []
    landing = plan_landing(config, config_file, workspace, model, notes)
    planned = [_planned_training(model, base, deploy, _training_triggers(model, deploy, landing))]
    monitoring = _planned_monitoring(model, base, deploy)
    if monitoring is not None:
        planned.append(monitoring)
    else:
        notes.append("monitoring: no schedule (deploy.monitoring.cron is null), not deployed")
    scoring = _planned_scoring(model, base, deploy)
    if scoring is not None:
        planned.append(scoring)
    return DeployPlan(model, config_file, planned, landing, notes)


def served_configs(plans: Sequence[DeployPlan]) -> str:
    """`MLOPS_SERVED_CONFIGS` for the plans' runs: the config files they may be given, as JSON."""
    return json.dumps(sorted({str(plan.config_file) for plan in plans if plan.config_file}))


def describe(
    plan: DeployPlan, ids: dict[str, uuid.UUID] | None = None, ui_url: str | None = None, work_pool: str | None = None
) -> dict[str, Any]:
    """What is (or would be) served, as JSON-ready data; `work_pool`: where workers pick the runs up
    (None: the `mlops deploy` process runs them)."""
    rows = []
    for item in plan.deployments:
        deployment_id = (ids or {}).get(item.name)
        rows.append(
            {
                "name": item.name,
                "id": str(deployment_id) if deployment_id else None,
                "schedule": item.schedule,
                "triggers": list(item.triggers),
                "parameters": item.deployment.parameters,
                "url": f"{ui_url}/deployments/deployment/{deployment_id}" if ui_url and deployment_id else None,
            }
        )
    landing = plan.landing
    return {
        "model_name": plan.model_name,
        "config_file": str(plan.config_file) if plan.config_file else None,
        "deployments": rows,
        "landing": {
            "folder": str(landing.folder),
            "destination": str(landing.destination),
            "poll_seconds": landing.poll_seconds,
            "state": str(landing.state_path),
        }
        if landing
        else None,
        "notes": plan.notes,
        "ui_url": ui_url,
        "work_pool": work_pool,
    }


def print_plan(console: Console, info: dict[str, Any]) -> None:
    """`describe`'s data for people: a table of deployments, their links, the landing watcher."""
    table = Table(title=f"Prefect deployments of {info['model_name']}")
    for header in ("deployment", "schedule", "triggered by (event)"):
        table.add_column(header, no_wrap=True)
    for row in info["deployments"]:
        table.add_row(row["name"], row["schedule"] or "-", "\n".join(row["triggers"]) or "-")
    console.print(table)
    lines = [f"  {row['name']}: {row['url']}" for row in info["deployments"] if row["url"]]
    if info.get("work_pool"):
        lines.append(f"runs on work pool {info['work_pool']}: `prefect worker start --pool {info['work_pool']}`")
    if landing := info["landing"]:
        lines.append(
            f"landing watcher (in this process): {landing['folder']} -> {landing['destination']}, "
            f"every {landing['poll_seconds']:g} s; emits {LANDED_EVENT}"
        )
    lines += [f"note: {note}" for note in info["notes"]]
    if info["ui_url"]:
        lines.append(f"UI: {info['ui_url']}/deployments")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
