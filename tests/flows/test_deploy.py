"""`mlops deploy` on a real temporary Prefect API: deployments, schedules, automations, and events that
start training runs (the drift event of the monitor, the landing watcher's event)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import emit_event
from typer.testing import CliRunner

from components.core.workspace import Workspace
from components.data.landing import announcement_id
from components.simulation.simulate import write_batches
from flows import deploy, deploy_serve, deployments
from flows.cli import app
from tests.conftest import load_model, write_config

pytestmark = pytest.mark.usefixtures("prefect_api")

DEPLOY = (
    "{timezone: Europe/Paris, training: {cron: '0 3 * * 1'}, monitoring: {cron: '*/30 * * * *'}, "
    "scoring: {cron: '0 6 * * *', input: '{home}/incoming/today.parquet', output: '{home}/scores/{date}.parquet'}, "
    "landing: {folder: '{home}/drop', poll_seconds: 1}}"
)


def _workspace(tmp_path: Path, name: str, deploy_section: str = DEPLOY) -> tuple[Path, Any]:
    """A config for a dataset of its own (deployment and event names carry it), with generated data."""
    data = tmp_path / "data"
    write_batches(data, 2, 600, seed=7)
    path = write_config(
        tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "expectations", name=name, deploy=deploy_section
    )
    return path, load_model(path, name)


def _plan(path: Path, config: Any) -> deployments.DeployPlan:
    return deployments.plan_deployments(config, path, Workspace.at(config.home).ensure(), configured=True)


def _runs(deployment_id: UUID) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=100,
        )


def _wait_for_runs(deployment_id: UUID, count: int, timeout: float = 60.0) -> list[FlowRun]:
    deadline = time.monotonic() + timeout
    while len(runs := _runs(deployment_id)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no flow run of deployment {deployment_id} after {timeout:.0f} s: {runs}")
        time.sleep(0.5)
    return runs


def test_deployments_carry_the_configured_schedules_and_triggers(tmp_path: Path) -> None:
    path, config = _workspace(tmp_path, "deployed")
    ids = deploy_serve.register([_plan(path, config)])
    assert sorted(ids) == ["monitoring-job/deployed", "scoring-job/deployed", "training-job/deployed"]
    with get_client(sync_client=True) as client:
        deployments = {name: client.read_deployment(deployment_id) for name, deployment_id in ids.items()}
        automations = client.read_resource_related_automations(f"prefect.deployment.{ids['training-job/deployed']}")
        for other in ("monitoring-job/deployed", "scoring-job/deployed"):
            assert client.read_resource_related_automations(f"prefect.deployment.{ids[other]}") == []
    crons = {
        name: [(s.schedule.cron, s.schedule.timezone, s.parameters, s.active) for s in d.schedules]
        for name, d in deployments.items()
    }
    assert crons == {
        "training-job/deployed": [("0 3 * * 1", "Europe/Paris", {"trigger": "schedule"}, True)],
        "monitoring-job/deployed": [("*/30 * * * *", "Europe/Paris", {"trigger": "schedule"}, True)],
        "scoring-job/deployed": [("0 6 * * *", "Europe/Paris", {"trigger": "schedule"}, True)],
    }
    training = deployments["training-job/deployed"]
    # A JSON parameter, loaded at run time; the flow is imported by module, from any directory.
    assert training.parameters == {"config_file": str(path.resolve()), "model": "deployed"}
    assert training.entrypoint == "flows.deploy.training_job_flow"
    assert training.global_concurrency_limit is not None and training.global_concurrency_limit.limit == 1
    assert "mlops" in training.tags
    assert deployments["monitoring-job/deployed"].concurrency_options.collision_strategy == "CANCEL_NEW"

    by_event = {next(iter(a.trigger.expect)): a for a in automations}
    assert sorted(by_event) == ["mlops.data.landed", "mlops.retrain.requested"]
    for event, automation in by_event.items():
        assert automation.enabled
        assert automation.trigger.match.model_dump() == {"prefect.resource.id": "mlops.model.deployed"}
        (action,) = automation.actions
        assert action.type == "run-deployment" and action.deployment_id == ids["training-job/deployed"]
        assert action.parameters["trigger"] == event
    assert by_event["mlops.data.landed"].actions[0].parameters["files"] == "{{ event.payload.files }}"

    # Registering again (a restart of `mlops deploy`) replaces the automations instead of adding more.
    assert deploy_serve.register([_plan(path, config)]) == ids
    with get_client(sync_client=True) as client:
        again = client.read_resource_related_automations(f"prefect.deployment.{ids['training-job/deployed']}")
    assert len(again) == 2


def test_switches_in_the_config_remove_schedules_and_triggers(tmp_path: Path) -> None:
    section = "{training: {cron: null}, monitoring: {cron: null}, drift_trigger: false, landing: {folder: null}}"
    path, config = _workspace(tmp_path, "bare", section)
    plan = _plan(path, config)
    assert [p.name for p in plan.deployments] == ["training-job/bare"]
    assert (plan.deployments[0].schedule, plan.deployments[0].triggers, plan.landing) == (None, (), None)
    assert any("monitoring" in note for note in plan.notes)
    ids = deploy_serve.register([plan])
    with get_client(sync_client=True) as client:
        assert client.read_deployment(ids["training-job/bare"]).schedules == []
        assert client.read_resource_related_automations(f"prefect.deployment.{ids['training-job/bare']}") == []


def test_configurations_that_cannot_be_served_are_refused_and_a_file_source_has_no_landing_folder(
    tmp_path: Path,
) -> None:
    path, config = _workspace(tmp_path, "refused", "{scoring: {cron: '0 6 * * *'}}")
    with pytest.raises(deploy.DeployError, match=r"input and deploy\.scoring\.output"):
        _plan(path, config)
    with pytest.raises(deploy.DeployError, match=r"deploy\.training\.cron"):
        _plan(path, config.with_overrides(deploy={"training": {"cron": "not a cron"}, "scoring": {}}))
    with pytest.raises(deploy.DeployError, match="time zone"):
        _plan(path, config.with_overrides(deploy={"timezone": "Mars/Olympus", "scoring": {}}))
    single_file = config.with_overrides(data={"source": str(tmp_path / "data" / "batch_0000.parquet")})
    plan = _plan(path, single_file.with_overrides(deploy={"scoring": {}}))  # deployed, without a landing folder
    assert plan.landing is None and any("not a folder" in note for note in plan.notes)


def test_cli_dry_run_prints_the_plan_without_a_server(tmp_path: Path, monkeypatch) -> None:
    path, _ = _workspace(tmp_path, "printed")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = CliRunner().invoke(app, ["deploy", "--config", str(path), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    (info,) = json.loads(result.stdout.strip().splitlines()[-1])["models"]
    assert [d["name"] for d in info["deployments"]] == [
        "training-job/printed",
        "monitoring-job/printed",
        "scoring-job/printed",
    ]
    assert info["deployments"][0]["triggers"] == ["mlops.retrain.requested", "mlops.data.landed"]
    assert info["landing"]["folder"] == str(Workspace.at(tmp_path / "ws").root / "drop")
    assert not (tmp_path / "ws" / "prefect" / "server.json").exists()  # no local server was started
    table = CliRunner().invoke(app, ["deploy", "--config", str(path), "--dry-run"])
    assert "training-job/printed" in table.stdout and "0 3 * * 1 (Europe/Paris)" in table.stdout


def test_cli_registers_on_the_api_it_is_given(tmp_path: Path, monkeypatch) -> None:
    from prefect.settings import PREFECT_API_URL

    path, _ = _workspace(tmp_path, "registered")
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # as a user pointing at a server
    result = CliRunner().invoke(app, ["deploy", "--config", str(path), "--no-serve", "--json"])
    assert result.exit_code == 0, result.output
    (info,) = json.loads(result.stdout.strip().splitlines()[-1])["models"]
    training = info["deployments"][0]
    assert training["id"] and training["url"].endswith(f"/deployments/deployment/{training['id']}")
    with get_client(sync_client=True) as client:
        assert str(client.read_deployment_by_name("training-job/registered").id) == training["id"]


def test_drift_and_landed_events_start_training_runs(tmp_path: Path) -> None:
    path, config = _workspace(tmp_path, "evented")
    plan = _plan(path, config)
    training_id = deploy_serve.register([plan])["training-job/evented"]
    assert _runs(training_id) == []

    # The monitor's event, sent as flows/monitoring.py sends it.
    emit_event(event="mlops.retrain.requested", resource={"prefect.resource.id": "mlops.model.evented"})
    emit_event(event="mlops.retrain.requested", resource={"prefect.resource.id": "mlops.model.someone_else"})
    (drift_run,) = _wait_for_runs(training_id, 1)
    assert drift_run.parameters == {
        "config_file": str(path.resolve()),
        "model": "evented",
        "trigger": "mlops.retrain.requested",
    }

    # A file dropped into the landing folder: moved on the second poll, announced, and a run follows.
    assert plan.landing is not None
    zone = plan.landing.zone()
    zone.prepare()
    (plan.landing.folder / "batch_0002.parquet").write_bytes((tmp_path / "data" / "batch_0001.parquet").read_bytes())
    old = time.time() - 10
    os.utime(plan.landing.folder / "batch_0002.parquet", (old, old))
    watcher = deploy_serve.LandingWatcher(zone, "evented", plan.landing.poll_seconds)
    assert watcher.poll_once() == []
    (announced,) = watcher.poll_once()
    assert Path(announced.target) == tmp_path / "data" / "batch_0002.parquet"
    runs = _wait_for_runs(training_id, 2)
    landed_run = next(r for r in runs if r.id != drift_run.id)
    assert landed_run.parameters["trigger"] == "mlops.data.landed"
    assert landed_run.parameters["files"] == ["batch_0002.parquet"]
    assert watcher.poll_once() == []  # announced once
    # A repeat of the announcement (a crash between sending it and recording it) has the same id:
    # the server's triggers recognise it and start nothing.
    deploy_serve.announce_landed("evented", [announced], announcement_id([announced]))
    time.sleep(5)
    assert len(_runs(training_id)) == 2  # nothing else asked for training


@pytest.mark.slow
def test_a_served_deployment_runs_the_training_flow_in_its_own_process(tmp_path: Path) -> None:
    """What `mlops deploy` does with a triggered run: the runner starts it in a child process that
    loads the config file by path and trains into the workspace's registry."""
    from prefect.runner import Runner

    from components.tracking import registry

    path, config = _workspace(tmp_path, "served")
    plan = _plan(path, config)
    runner = Runner(name="test-served", pause_on_shutdown=False, query_seconds=1)
    training = plan.deployments[0].deployment
    training_id = runner.add_deployment(training)
    emit_event(event="mlops.retrain.requested", resource={"prefect.resource.id": "mlops.model.served"})
    _wait_for_runs(training_id, 1)
    asyncio.run(runner.start(run_once=True))  # submits the waiting run and waits for it to finish
    (run,) = _runs(training_id)
    assert run.state is not None and run.state.is_completed(), run.state
    champion = registry.get_champion(registry.connect(Workspace.at(config.home)), "served")
    assert champion is not None and champion.version == "1"


def test_the_scoring_job_scores_the_configured_file_into_a_dated_output(trained, tmp_path: Path) -> None:
    import pandas as pd

    config_path, config, _ = trained
    incoming = tmp_path / "today.parquet"
    pd.read_parquet(write_batches(tmp_path / "new", 1, 200, seed=5)[0]).drop(columns=["default"]).to_parquet(incoming)
    job_config = tmp_path / "mlops.yaml"  # the trained workspace's project, its model with a scoring schedule
    job_config.write_text(config_path.read_text())
    (tmp_path / "models").mkdir()
    schedule = f"{{cron: '0 6 * * *', input: '{incoming}', output: '{{home}}/scores/{{date}}.parquet'}}"
    model_file = config_path.parent / "models" / "loans.yaml"
    (tmp_path / "models" / "loans.yaml").write_text(model_file.read_text() + f"deploy: {{scoring: {schedule}}}\n")
    result = deploy.scoring_job_flow(str(job_config), "loans")
    day = datetime.now(UTC).strftime("%Y-%m-%d")  # the run's date (a direct call starts now)
    assert result["output"] == str(Workspace.at(config.home).root / "scores" / f"{day}.parquet")
    assert (result["rows"], result["scored"]) == (200, 200)
    assert len(pd.read_parquet(result["output"])) == 200


def test_mlops_deploy_serves_the_landing_folder_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """The real command in its own process: it registers, watches the landing folder, and on SIGTERM
    pauses the schedules and exits 0."""
    from prefect.settings import PREFECT_API_URL

    path, _ = _workspace(tmp_path, "served_cli", "{landing: {poll_seconds: 1}}")
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_RUNNER_POLL_FREQUENCY": "600",  # the runner looks for runs once, at start: none is executed
    }
    mlops = Path(sys.executable).parent / "mlops"
    process = subprocess.Popen(
        [str(mlops), "deploy", "--config", str(path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        (info,) = json.loads(process.stdout.readline())["models"]  # printed once the deployments are registered
        training_id = UUID(info["deployments"][0]["id"])
        drop = Path(info["landing"]["folder"])
        (drop / "batch_0002.parquet").write_bytes((tmp_path / "data" / "batch_0001.parquet").read_bytes())
        (run,) = _wait_for_runs(training_id, 1)
        assert run.parameters["files"] == ["batch_0002.parquet"]
        assert (tmp_path / "data" / "batch_0002.parquet").exists()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "stopped serving" in output
    with get_client(sync_client=True) as client:
        assert client.read_deployment(training_id).paused


def test_cli_registers_on_a_work_pool_with_the_runs_environment_and_the_crash_automation(
    tmp_path: Path, monkeypatch
) -> None:
    from prefect.automations import Automation
    from prefect.settings import PREFECT_API_URL

    from flows import deploy_pool

    path, _ = _workspace(tmp_path, "pooled")
    result = CliRunner().invoke(app, ["deploy", "--config", str(path), "--work-pool", "pool-a", "--no-serve", "--json"])
    assert result.exit_code == 1 and "PREFECT_API_URL" in result.output  # the workers must reach the server too
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    for _ in range(2):  # a second registration updates, it adds nothing
        result = CliRunner().invoke(
            app, ["deploy", "--config", str(path), "--work-pool", "pool-a", "--no-serve", "--json"]
        )
        assert result.exit_code == 0, result.output
    (info,) = json.loads(result.stdout.strip().splitlines()[-1])["models"]
    assert info["work_pool"] == "pool-a"
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("pool-a").type == "process"  # created, as none had the name
        deployment = client.read_deployment_by_name("training-job/pooled")
        assert deployment.work_pool_name == "pool-a" and deployment.global_concurrency_limit.limit == 1
        env = deployment.job_variables["env"]
        assert json.loads(env[deploy.SERVED_CONFIGS]) == [str(path.resolve())]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(deploy_pool.DEFAULT_HEARTBEAT_S)
        assert len(client.read_automations_by_name(deploy_pool.ZOMBIE_AUTOMATION)) == 1
    automation = Automation.read(name=deploy_pool.ZOMBIE_AUTOMATION)
    assert automation.trigger.within.total_seconds() == 3 * deploy_pool.DEFAULT_HEARTBEAT_S
    assert automation.actions[0].state.value == "CRASHED"
    # An existing pool of another type is used as it is, not replaced.
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.actions import WorkPoolCreate

        client.create_work_pool(WorkPoolCreate(name="pool-k", type="kubernetes", base_job_template={}))
    assert deploy_pool.ensure_work_pool("pool-k") == ("kubernetes", False)
