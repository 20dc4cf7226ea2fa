"""`mlops deploy`: Prefect deployments of the pipeline, served from one long-running process.

- `training-job/<model>`: on `deploy.training.cron`; on `mlops.retrain.requested` for the model
  (emitted by the monitor on sustained drift) when `deploy.drift_trigger`; on `mlops.data.landed`
  (emitted by the landing watcher below) when `deploy.landing.folder` is set.
- `monitoring-job/<model>`: on `deploy.monitoring.cron`, the monitoring flow on the service's
  prediction log, asking for retraining by event.
- `scoring-job/<model>`: on `deploy.scoring.cron`, when `deploy.scoring.input` and `.output` are set.

Every configured model (`models/<name>.yaml`) gets its own three, named after it, with its own
schedules and triggers (the events' resource is `mlops.model.<name>`). Every deployment takes the
project file's path and the model's name as parameters and loads the model's settings when a run
starts, so an edit to its file applies to the next run without redeploying; schedules and triggers
are read when `mlops deploy` starts. Runs execute in child processes of the serving process, which
inherit its environment (MLOPS_HOME, MLOPS__* overrides, PREFECT_API_URL, ...).

Prefect has no file watcher: a thread of the serving process polls the landing folder
(`components.data.landing` holds the logic and the state), moves complete files into the training
source and announces them with one `mlops.data.landed` event per poll, whose id is derived from
the files, so a repeated announcement after a crash is recognised by the server's triggers.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.logging import get_logger
from prefect.runtime import flow_run
from prefect.schedules import Cron, Schedule
from prefect.tasks import exponential_backoff
from prefect.types.entrypoint import EntrypointType
from rich.console import Console
from rich.table import Table

from components.core.config import (
    ConfigError,
    DeployConfig,
    PipelineConfig,
    dataset_name,
    find_config_file,
    load_config,
    resolve_source,
)
from components.core.environment import workspace_environment
from components.core.errors import UserError
from components.core.project import load_project
from components.core.secrets import install_log_redaction
from components.core.workspace import Workspace
from components.data.extract import is_database_url
from components.data.landing import Landed, LandingError, LandingZone
from components.monitoring.monitor import RETRAIN_EVENT, model_event_resource

LANDED_EVENT = "mlops.data.landed"
TRAINING, MONITORING, SCORING = "training-job", "monitoring-job", "scoring-job"
MAX_BACKOFF_S = 600.0


class DeployError(UserError, ValueError):
    """The `deploy` section cannot be served as configured."""


# ---------------------------------------------------------------- the deployments' flows


def _retry_io(task: Any, task_run: Any, state: Any) -> bool:
    """Retry reading the config only when the file system failed, not when the file is wrong."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - a bad config fails the same way again
        return False
    return False


# Set by `mlops deploy` for the flow runs it starts: the config files they may be given.
SERVED_CONFIGS = "MLOPS_SERVED_CONFIGS"


def check_job_config(config_file: str | None, environ: Mapping[str, str]) -> Path:
    """The config file a deployment run was given, if it is one `mlops deploy` serves: a run
    created through the API with another file (one of the caller's choosing) is refused."""
    path = Path(config_file) if config_file else find_config_file()
    if path is None:
        raise DeployError("no config file given and no mlops.yaml found from the working folder upwards")
    served = environ.get(SERVED_CONFIGS)
    if served is not None and str(path.resolve()) not in json.loads(served):
        raise DeployError(
            f"refusing config file {config_file!r}: this deployment serves only {', '.join(json.loads(served))}"
        )
    return path


@task(
    name="load_config",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=_retry_io,
    cache_policy=NO_CACHE,
)
def load_job_config(config_file: str | None, model: str | None = None) -> PipelineConfig:
    """A model's settings as its files say now (MLOPS_* variables applied), with the workspace ready;
    without a model, the config file alone. Log lines of the run are redacted from here on."""
    install_log_redaction()
    path = check_job_config(config_file, os.environ)
    config = load_project(path).model_config(model) if model else load_config(path)
    workspace_environment(Workspace.at(config.home).ensure())
    return config


@flow(name=TRAINING)
def training_job_flow(
    config_file: str | None = None,
    model: str | None = None,
    trigger: str = "manual",
    files: list[str] | None = None,
) -> dict[str, Any]:
    """A deployment's training run: the training flow on the model's settings as they are when the run starts."""
    from flows.training import training_flow

    config = load_job_config(config_file, model)
    landed = f" ({len(files)} landed file(s): {', '.join(files)})" if files else ""
    get_run_logger().info("training %s, started by %s%s", dataset_name(config), trigger, landed)
    return dict(json.loads(training_flow(config).as_json()))


@flow(name=MONITORING)
def monitoring_job_flow(config_file: str | None = None, model: str | None = None) -> None:
    """A deployment's monitoring run: the service's prediction log against the champion; a sustained
    alarm emits `mlops.retrain.requested`, which the training deployment's trigger turns into a run."""
    from flows.monitoring import monitoring_flow

    config = load_job_config(config_file, model)
    monitoring_flow(config, data=None, labels=None, retrain="event")


def expand_path(value: str, home: Path, base: Path, day: str | None = None) -> Path:
    """A configured path: `{home}` is the workspace, `{date}` the run's date, relative to `base`."""
    text = value.replace("{home}", str(home))
    if day is not None:
        text = text.replace("{date}", day)
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _base_dir(config_file: str | Path | None) -> Path:
    """Relative paths in the config are relative to its file (as elsewhere), else to the current directory."""
    return Path(config_file).resolve().parent if config_file else Path.cwd()


@flow(name=SCORING)
def scoring_job_flow(config_file: str | None = None, model: str | None = None) -> dict[str, Any]:
    """A deployment's batch-scoring run: `deploy.scoring.input` scored into `.output`, whose `{date}`
    is the run's scheduled date in `deploy.timezone`."""
    from flows.scoring import scoring_flow

    config = load_job_config(config_file, model)
    scoring = config.deploy.scoring
    if not scoring.input or not scoring.output:
        raise DeployError("deploy.scoring.input and deploy.scoring.output must both be set to score on a schedule")
    when = flow_run.scheduled_start_time or datetime.now(UTC)
    day = when.astimezone(ZoneInfo(config.deploy.timezone)).strftime("%Y-%m-%d")
    home, base = Workspace.at(config.home).root, _base_dir(config_file)
    output = expand_path(scoring.output, home, base, day)
    output.parent.mkdir(parents=True, exist_ok=True)
    result = scoring_flow(config, expand_path(scoring.input, home, base, day), output, model_name=dataset_name(config))
    return dict(json.loads(result.as_json()))


# ---------------------------------------------------------------- what `mlops deploy` serves


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
        folder=expand_path(folder.replace("{model}", model), workspace.root, _base_dir(config_file)),
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


def describe(plan: DeployPlan, ids: dict[str, uuid.UUID] | None = None, ui_url: str | None = None) -> dict[str, Any]:
    """What is (or would be) served, as JSON-ready data."""
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


def check_api() -> None:
    """Fail with a clear message when the Prefect API does not answer (the client retries first)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    if error is not None:
        raise DeployError(
            f"the Prefect API at {get_current_settings().api.url} does not answer ({type(error).__name__}: "
            f"{error}); check PREFECT_API_URL, or unset it to use the workspace's local server"
        )


def register(plans: Sequence[DeployPlan]) -> dict[str, uuid.UUID]:
    """Create or update the deployments and their triggers' automations on the API, without serving."""
    check_api()
    return {item.name: cast(uuid.UUID, item.deployment.apply()) for plan in plans for item in plan.deployments}


def _stop_on_sigterm(runner: Any) -> Callable[..., None]:
    """A SIGTERM handler that stops the runner as its own shutdown path does.

    Prefect 3.8's handler calls the runner's synchronous `stop()` from inside the runner's event
    loop, where it only makes a coroutine nobody awaits, then exits: runs in progress were left
    `Running` on the server and a schedule stayed active. This one has the loop run `astop()`: runs
    in progress are cancelled (their processes stopped, state `Cancelled`), the deployments paused.
    """
    pending: set[asyncio.Task[None]] = set()

    def handle(signum: int, frame: Any) -> None:
        loop = asyncio.get_running_loop()  # the handler runs in the main thread, inside the runner's loop

        def stop() -> None:
            if runner.started and not runner.stopping:
                pending.add(loop.create_task(runner.astop()))

        loop.call_soon_threadsafe(stop)

    return handle


def serve(
    plans: Sequence[DeployPlan],
    on_ready: Callable[[dict[str, uuid.UUID]], None],
    heartbeat_seconds: int | None = None,
) -> None:
    """Register every model's deployments, then run their flow runs and the landing watchers until
    Ctrl-C or SIGTERM; schedules are paused on the way out (the next `mlops deploy` resumes them)."""
    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    check_api()
    # the runs this process starts inherit it: they accept no config file but these
    os.environ[SERVED_CONFIGS] = json.dumps(sorted({str(plan.config_file) for plan in plans if plan.config_file}))
    names = "-".join(plan.model_name for plan in plans)
    runner = Runner(name=f"mlops-{names}"[:100], pause_on_shutdown=True, heartbeat_seconds=heartbeat_seconds)
    runner.handle_sigterm = _stop_on_sigterm(runner)  # type: ignore[method-assign]
    # Called from synchronous code, Prefect's dual sync/async method returns the id itself.
    ids = {
        item.name: cast(uuid.UUID, runner.add_deployment(item.deployment))
        for plan in plans
        for item in plan.deployments
    }
    watchers = []
    for plan in plans:
        if plan.landing is not None:
            zone = plan.landing.zone()
            zone.prepare()
            watchers.append(LandingWatcher(zone, plan.model_name, plan.landing.poll_seconds))
    on_ready(ids)
    for watcher in watchers:
        watcher.start()
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        pass
    finally:
        for watcher in watchers:
            watcher.stop()


# ---------------------------------------------------------------- the landing watcher


def announce_landed(model_name: str, files: Sequence[Landed], event_id: str) -> None:
    """Emit `mlops.data.landed` for the model and wait until the server has it (a websocket
    ping after the event); raises when it could not be delivered."""
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    event = Event.model_validate(
        {
            "id": event_id,
            "event": LANDED_EVENT,
            "resource": {"prefect.resource.id": model_event_resource(model_name), "prefect.resource.name": model_name},
            "payload": {
                "files": [Path(f.target).name for f in files],
                "paths": [f.target for f in files],
                "bytes": sum(f.size for f in files),
            },
        }
    )

    async def send() -> None:
        async with get_events_client(checkpoint_every=1) as client:  # checkpoint: a ping confirms delivery
            await client.emit(event)

    asyncio.run(send())


class LandingWatcher:
    """Polls a landing zone in a thread of the deploy process and announces what it moved.

    A failed poll or announcement is logged and tried again with a doubling delay (up to 10 min);
    moved files stay `moved` in the state until an announcement went through.
    """

    def __init__(self, zone: LandingZone, model_name: str, poll_seconds: float):
        self.zone = zone
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self.logger = get_logger("mlops.landing")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> list[Landed]:
        """One poll: move complete files, announce every file not yet announced; returns those announced."""
        result = self.zone.poll()
        for note in result.notes:
            self.logger.warning("%s", note)
        for landed in result.moved:
            self.logger.info("landed %s -> %s (%d bytes)", landed.name, landed.target, landed.size)
        if not result.pending:
            return []
        announce_landed(self.model_name, result.pending, result.announcement_id)
        self.zone.mark_announced(result.pending)
        self.logger.info(
            "emitted %s for %s: %s",
            LANDED_EVENT,
            self.model_name,
            ", ".join(Path(f.target).name for f in result.pending),
        )
        return result.pending

    def _run(self) -> None:
        failures = 0
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - the watcher outlives a failed poll; it is logged and retried
                failures += 1
                delay = min(self.poll_seconds * 2**failures, MAX_BACKOFF_S)
                self.logger.warning(
                    "landing poll of %s failed (%s: %s); next try in %.0f s",
                    self.zone.folder,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            else:
                failures, delay = 0, self.poll_seconds

    def start(self) -> None:
        self.logger.info(
            "watching %s every %.0f s; complete files move to %s",
            self.zone.folder,
            self.poll_seconds,
            self.zone.destination,
        )
        self._thread = threading.Thread(target=self._run, name="mlops-landing", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
