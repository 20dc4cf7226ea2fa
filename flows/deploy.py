"""`mlops deploy`: the flows its Prefect deployments run, one set per model.

- `training-job/<model>`: on `deploy.training.cron`; on `mlops.retrain.requested` for the model
  (emitted by the monitor on sustained drift) when `deploy.drift_trigger`; on `mlops.data.landed`
  (emitted by the landing watcher) when `deploy.landing.folder` is set.
- `monitoring-job/<model>`: on `deploy.monitoring.cron`, the monitoring flow on the service's
  prediction log, asking for retraining by event.
- `scoring-job/<model>`: on `deploy.scoring.cron`, when `deploy.scoring.input` and `.output` are set.

Every deployment takes the project file's path and the model's name as parameters and loads the
model's settings when a run starts, so an edit to its file applies to the next run without
redeploying. `flows.deployments` plans the deployments (schedules, triggers, landing folder);
`flows.deploy_serve` registers and serves them from one long-running process, whose child
processes run the flows and inherit its environment (MLOPS_HOME, MLOPS__* overrides,
PREFECT_API_URL, ...), and watches the landing folders.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from components.core.config import (
    PipelineConfig,
    dataset_name,
    find_config_file,
    load_config,
)
from components.core.environment import workspace_environment
from components.core.errors import UserError
from components.core.project import load_project
from components.core.secrets import install_log_redaction
from components.core.workspace import Workspace

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


def base_dir(config_file: str | Path | None) -> Path:
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
    home, base = Workspace.at(config.home).root, base_dir(config_file)
    output = expand_path(scoring.output, home, base, day)
    output.parent.mkdir(parents=True, exist_ok=True)
    result = scoring_flow(config, expand_path(scoring.input, home, base, day), output, model_name=dataset_name(config))
    return dict(json.loads(result.as_json()))


# ---------------------------------------------------------------- what `mlops deploy` serves
