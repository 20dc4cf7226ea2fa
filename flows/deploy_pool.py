"""Registering the deployments on a Prefect work pool, for workers on any machine to run.

`mlops deploy --work-pool NAME` puts every model's deployments on the pool (a process pool of that
name is created when missing; an existing pool of any type is used as it is) instead of serving them
from its own process; `prefect worker start --pool NAME` runs them wherever it is started. The runs
get, through the pool's job variables, what the serving process would have handed its children: the
config files they may be given (`MLOPS_SERVED_CONFIGS`) and a flow-run heartbeat. A run whose
heartbeats stop (its worker's machine died, the worker was killed with it) is marked `Crashed` by an
automation registered here, which releases its deployment's concurrency slot for the next run.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

from components.core.errors import UserError
from flows.deploy import SERVED_CONFIGS, DeployError
from flows.deployments import DeployPlan, served_configs

ZOMBIE_AUTOMATION = "mlops: crash flow runs whose heartbeat stopped"
DEFAULT_HEARTBEAT_S = 30  # Prefect's minimum
MISSED_HEARTBEATS = 3  # a run is crashed after this many heartbeat periods without one


class WorkPoolError(UserError, RuntimeError):
    """The work pool cannot be read or created."""


def ensure_work_pool(name: str) -> tuple[str, bool]:
    """The pool's type, and whether it was created here (a `process` pool, when none has the name)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            return str(client.read_work_pool(name).type), False
        except ObjectNotFound:
            pass
        template = ProcessWorker.get_default_base_job_template()
        try:
            pool = client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
        except Exception as exc:  # the API's refusal, reported with the pool's name
            raise WorkPoolError(f"could not create work pool {name!r}: {type(exc).__name__}: {exc}") from exc
        return str(pool.type), True


def run_environment(plans: Sequence[DeployPlan], heartbeat_seconds: int) -> dict[str, str]:
    """The variables every run on the pool gets (merged over its worker's environment)."""
    return {SERVED_CONFIGS: served_configs(plans), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_seconds)}


def zombie_automation(heartbeat_seconds: int) -> Any:
    """The automation that marks a flow run `Crashed` when its heartbeats stop before it ended
    (Prefect's documented recipe), waiting `MISSED_HEARTBEATS` periods."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    ended = ("Completed", "Failed", "Cancelled", "Crashed")
    return Automation(
        name=ZOMBIE_AUTOMATION,
        description="A flow run that stopped sending heartbeats (its worker or machine died) is marked "
        "Crashed, which frees its deployment's concurrency slot. Registered by `mlops deploy --work-pool`.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{state}" for state in ended)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=MISSED_HEARTBEATS * heartbeat_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                state=StateType.CRASHED,
                message=f"no heartbeat for {MISSED_HEARTBEATS * heartbeat_seconds} s: its worker or machine died",
                force=False,
            )
        ],
    )


def ensure_zombie_automation(heartbeat_seconds: int) -> uuid.UUID:
    """Create the crash-on-silence automation, or update it to this heartbeat; its id."""
    from prefect.automations import Automation
    from prefect.exceptions import ObjectNotFound

    wanted = zombie_automation(heartbeat_seconds)
    # Called from synchronous code, Prefect's dual sync/async methods return their results.
    try:
        existing: Any = Automation.read(name=ZOMBIE_AUTOMATION)
    except (ObjectNotFound, ValueError):
        created: Any = wanted.create()
        return cast(uuid.UUID, created.id)
    wanted.id = existing.id
    wanted.update()
    return cast(uuid.UUID, existing.id)


def register_on_pool(
    plans: Sequence[DeployPlan], work_pool: str, heartbeat_seconds: int | None
) -> tuple[dict[str, uuid.UUID], str, bool]:
    """Put every deployment on the pool with the runs' environment, and the crash automation.

    Returns the deployments' ids, the pool's type and whether it was created."""
    heartbeat = heartbeat_seconds or DEFAULT_HEARTBEAT_S
    pool_type, created = ensure_work_pool(work_pool)
    env = run_environment(plans, heartbeat)
    ids: dict[str, uuid.UUID] = {}
    for plan in plans:
        for item in plan.deployments:
            deployment = item.deployment
            # Assigned (not passed to apply): an update sends only the fields that were set.
            deployment.work_pool_name = work_pool
            deployment.job_variables = {"env": dict(env)}
            try:
                ids[item.name] = cast(uuid.UUID, deployment.apply())
            except Exception as exc:  # the API's refusal, with the deployment's name
                raise DeployError(f"could not register {item.name} on work pool {work_pool!r}: {exc}") from exc
    ensure_zombie_automation(heartbeat)
    return ids, pool_type, created
