"""The challenger's online test, as a task of the monitoring flow: it reads the prediction log and
the labels, and promotes, retires or keeps the challenger (`components.monitoring.challenger`)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.core.alerts import Alerter
from components.core.config import PipelineConfig
from components.core.workspace import Workspace
from components.modeling.tasks import Task
from components.monitoring import challenger, monitor, unlabelled
from components.monitoring.labelqueue import label_sources
from components.tracking import registry

# What `challenger.settle` did -> the alert it sends (a re-check overturned: rollback; confirmed: the shadow ends).
EVENTS = {
    "promoted": "challenger_promoted",
    "retired": "challenger_retired",
    "ready": "approval_pending",
    "rolled_back": "rollback",
    "confirmed": "challenger_retired",
}


@task(name="judge_challenger", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def judge_challenger_task(config: PipelineConfig, model_name: str, champion: Any) -> dict[str, Any] | None:
    """Where the model's challenger stands (None without one), after applying the test's verdict.
    `champion`: the monitoring flow's loaded champion (`flows.monitoring.Champion`: version, model,
    task, its run's metrics and a regressor's stored errors)."""
    logger = get_run_logger()
    workspace = Workspace.at(config.home)
    client = registry.connect(workspace)
    info = registry.get_challenger(client, model_name)
    if info is None:
        return None
    cache = workspace.model_cache(model_name, info.version)
    model = registry.load_model(str(registry.download_model(model_name, info.version, cache / "model", info.run_id)))
    target, id_column = config.data.target, config.data.id_column
    sources = label_sources(config, model_name)
    labels = monitor.read_labels(sources, id_column, str(target), weighted=True) if target else None
    keys = (id_column, str(target))
    task_, version = champion.task, champion.info.version
    graders = None
    if config.promotion.online.without_labels == "estimated" and info.recheck_of is None:
        graders = (
            unlabelled.Grader(version, champion.model, champion.baseline, champion.residuals),
            grader(workspace, client, (model_name, info.version, info.run_id), model, task_),
        )
    trial = challenger.look(
        workspace.predictions / model_name,
        labels,
        info,
        (version, champion.model),
        model,
        task_,
        keys,
        config.promotion.online,
        designs=workspace.label_queue / model_name,
        graders=graders,
    )
    try:
        trial = challenger.settle(
            client,
            trial,
            approval=config.promotion.approval,
            lock_dir=workspace.root,
            folder=workspace.monitoring / model_name,
        )
    except (registry.ChampionMoved, registry.ChallengerMoved) as exc:
        logger.warning("challenger v%s: verdict %s not applied: %s", info.version, trial.verdict, exc)
        return {**trial.as_dict(), "action": "none", "reason": f"{trial.reason}; not applied: {exc}"}
    logger.info("challenger v%s (%s): %s: %s", info.version, info.rollout, trial.verdict, trial.reason)
    if trial.action in EVENTS:
        Alerter(config.alerts, model_name, workspace.alerts).send(
            EVENTS[trial.action],
            f"v{info.version} {trial.action}: {trial.reason}",
            challenger=info.version,
            champion=trial.champion,
            evidence=trial.evidence,
        )
    return trial.as_dict()


def grader(
    workspace: Workspace, client: Any, version: tuple[str, str, str | None], model: Any, task_: Task
) -> unlabelled.Grader:
    """What a version's expected loss is read from: its run's held-out metrics and a regressor's stored
    errors. `version`: model name, version and its run id."""
    name, number, run_id = version
    metrics = registry.run_metrics(client, run_id) if run_id else {}
    residuals = None
    if run_id and not task_.classification:
        cache = workspace.model_cache(name, number) / "residuals.parquet"
        path = registry.download_artifact(run_id, monitor.RESIDUALS_ARTIFACT, cache)
        residuals = pd.read_parquet(path) if path is not None else None
    return unlabelled.Grader(number, model, metrics, residuals)
