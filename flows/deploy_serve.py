"""Serving the deployments from one long-running process, and the landing watcher in a thread of it.

Prefect has no file watcher: `LandingWatcher` polls the landing folder (`components.data.landing` holds
the logic and the state), moves complete files into the training source and announces them with one
`mlops.data.landed` event per poll, whose id is derived from the files."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from prefect.logging import get_logger

from components.data.landing import Landed, LandingZone
from components.monitoring.monitor import model_event_resource
from flows.deploy import LANDED_EVENT, MAX_BACKOFF_S, SERVED_CONFIGS, DeployError
from flows.deployments import DeployPlan, served_configs


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
    os.environ[SERVED_CONFIGS] = served_configs(plans)
    names = "-".join(plan.model_name for plan in plans)
    runner = Runner(name=f"mlops-{names}"[:100], pause_on_shutdown=True, heartbeat_seconds=heartbeat_seconds)
    runner.handle_sigterm = _stop_on_sigterm(runner)  # type: ignore[method-assign]
    # Called from synchronous code, Prefect's dual sync/async method returns the id itself.
    ids = {
        item.name: cast(uuid.UUID, runner.add_deployment(item.deployment))
        for plan in plans
        for item in plan.deployments
    }
    watchers = _watchers(plans)
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


def watch_landing(plans: Sequence[DeployPlan]) -> bool:
    """Run the plans' landing watchers until Ctrl-C or SIGTERM (the deployments run elsewhere, on a
    work pool's workers); False at once when no model has a landing folder."""
    watchers = _watchers(plans)
    if not watchers:
        return False
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    for watcher in watchers:
        watcher.start()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for watcher in watchers:
            watcher.stop()
    return True


# ---------------------------------------------------------------- the landing watcher


def _watchers(plans: Sequence[DeployPlan]) -> list[LandingWatcher]:
    """A watcher per model with a landing folder, its folders created."""
    watchers = []
    for plan in plans:
        if plan.landing is not None:
            zone = plan.landing.zone()
            zone.prepare()
            watchers.append(LandingWatcher(zone, plan.model_name, plan.landing.poll_seconds))
    return watchers


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
