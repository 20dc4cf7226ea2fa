"""A failed monitoring or scoring run told to the model's webhooks (a Prefect `on_failure` hook).

Training alerts its own failures from `run_training`, which also runs without Prefect.
"""

from __future__ import annotations

import logging
from typing import Any

from components.core.alerts import Alerter
from components.core.config import PipelineConfig, dataset_name
from components.core.workspace import Workspace

LOG = logging.getLogger("mlops.alerts")


def alert_failed_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Send `failed_run` for the model in the run's `config` parameter."""
    raw = (flow_run.parameters or {}).get("config")
    try:
        config = raw if isinstance(raw, PipelineConfig) else PipelineConfig.model_validate(raw)
    except ValueError as exc:
        LOG.warning("no failed_run alert for %s: its config parameter does not validate: %s", flow_run.name, exc)
        return
    if not config.alerts.webhooks:
        return
    name = dataset_name(config)
    summary = f"{flow.name} run {flow_run.name} failed: {state.message or state.name}"
    Alerter(config.alerts, name, Workspace.at(config.home).alerts).send(
        "failed_run", summary, flow=flow.name, flow_run_id=str(flow_run.id)
    )
