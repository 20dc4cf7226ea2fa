"""The server stack end to end, as real processes (`make test-stack`): PostgreSQL, an MLflow
tracking server and a Prefect server on it, two process workers on a work pool, a Dask scheduler
with two workers. The tests run in order on one project: training through the workers, the
registry in PostgreSQL, serving from it, batch scoring on Dask, monitoring's retraining event and
the landing folder, then the failures: the tracking server restarting mid-run, a worker killed
mid-run, a database that does not answer."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.stack.conftest import POOL, Project, drifted, prefect_api, start_run, wait_run
from tests.stack.harness import BIN, free_port, wait_http

pytestmark = [pytest.mark.stack]


def mlflow_client(project: Project) -> Any:
    import mlflow

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        if name in project.env:
            import os

            os.environ[name] = project.env[name]
    mlflow.set_tracking_uri(project.env["MLFLOW_TRACKING_URI"])
    return mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])


def champion(project: Project, name: str) -> int:
    return int(mlflow_client(project).get_model_version_by_alias(name, "champion").version)


def assert_registry_whole(project: Project, name: str) -> None:
    """One champion, every version READY with its model files served by the tracking server."""
    client = mlflow_client(project)
    versions = client.search_model_versions(f"name='{name}'")
    assert versions and all(v.status == "READY" for v in versions), [(v.version, v.status) for v in versions]
    rows = project.stack.postgres.execute(  # type: ignore[union-attr]
        f"SELECT alias, version FROM registered_model_aliases WHERE name = '{name}' AND alias = 'champion'",
        project.stack.mlflow_db,
    )
    assert len(rows) == 1, rows
    for version in versions:
        files = {Path(f.path).name for f in client.list_artifacts(version.run_id, "model")}
        assert "MLmodel" in files, (version.version, files)


def run_window(run: Any) -> tuple[float, float]:
    return run.start_time.timestamp(), run.end_time.timestamp()


def test_deploy_registers_every_model_on_the_work_pool(project: Project) -> None:
    names = {row["name"] for model in project.deployed["models"] for row in model["deployments"]}
    assert {"training-job/cancer", "training-job/diabetes", "monitoring-job/cancer"} <= names
    assert {model["work_pool"] for model in project.deployed["models"]} == {POOL}
    with prefect_api(project.env["PREFECT_API_URL"]) as client:
        pool = client.read_work_pool(POOL)
        assert pool.type == "process"
        deployment = client.read_deployment_by_name("training-job/cancer")
        assert deployment.work_pool_name == POOL
        assert "MLOPS_SERVED_CONFIGS" in deployment.job_variables["env"]
        automations = client.read_automations_by_name("mlops: crash flow runs whose heartbeat stopped")
        assert automations and automations[0].enabled


def test_two_workers_train_two_models_at_once_and_one_models_runs_never_overlap(project: Project) -> None:
    cancer = start_run(project, "training-job/cancer")
    diabetes = start_run(project, "training-job/diabetes")
    cancer_again = start_run(project, "training-job/cancer")
    runs = {key: wait_run(project, run_id) for key, run_id in
            (("cancer", cancer), ("diabetes", diabetes), ("cancer_again", cancer_again))}  # fmt: skip
    assert {key: run.state.type.value for key, run in runs.items()} == dict.fromkeys(runs, "COMPLETED")
    (c0, c1), (d0, d1), (a0, a1) = (run_window(runs[k]) for k in ("cancer", "diabetes", "cancer_again"))
    assert c0 < d1 and d0 < c1, "the two models' trainings ran one after the other"
    assert a0 >= c1 or c0 >= a1, "two runs of one model overlapped"
    # The registry lives in PostgreSQL: two versions of cancer (the second held back: same data), one of diabetes.
    rows = project.stack.postgres.execute(  # type: ignore[union-attr]
        "SELECT name, count(*) FROM model_versions GROUP BY name ORDER BY name", project.stack.mlflow_db
    )
    assert rows == [("cancer", 2), ("diabetes", 1)]
    assert champion(project, "cancer") == 1 and champion(project, "diabetes") == 1
    assert_registry_whole(project, "cancer")


def test_serve_follows_the_champion_alias_on_the_server(project: Project) -> None:
    port = free_port()
    env = {**project.env, "OMP_NUM_THREADS": "1"}
    proc = project.stack.spawn(
        "serve", [str(BIN / "mlops"), "serve", "--name", "cancer", "--port", str(port)], env, cwd=project.root
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 180, proc)
        rows = pd.read_csv(project.root / "cancer.csv").drop(columns=["target"]).head(3)
        body = {"rows": json.loads(rows.to_json(orient="records"))}
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 3
        assert str(httpx.get(f"http://127.0.0.1:{port}/metadata").json()["model_version"]) == "1"
        client = mlflow_client(project)
        client.set_registered_model_alias("cancer", "champion", "2")
        try:
            deadline = time.monotonic() + 60
            while str(httpx.get(f"http://127.0.0.1:{port}/metadata").json()["model_version"]) != "2":
                assert time.monotonic() < deadline, "the service did not follow the alias"
                time.sleep(0.5)
        finally:
            client.set_registered_model_alias("cancer", "champion", "1")
    finally:
        project.stack.procs.pop("serve").stop()


def test_batch_scoring_on_the_dask_cluster_writes_one_row_per_row(project: Project, tmp_path: Path) -> None:
    output = tmp_path / "scored.parquet"
    result = project.mlops(
        "score", "--name", "cancer", "--input", str(project.root / "cancer.csv"), "--output", str(output),
        "--dask-address", project.dask, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    scored = pd.read_parquet(output)
    assert len(scored) == len(pd.read_csv(project.root / "cancer.csv")) == summary["rows"]
    assert summary["workers"] == 2
    assert scored["model_version"].astype(str).eq("1").all()


def _runs_of(project: Project, deployment: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with prefect_api(project.env["PREFECT_API_URL"]) as client:
        found = client.read_deployment_by_name(deployment)
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])))


def _wait_new_run(project: Project, deployment: str, before: set[Any], trigger: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # (registering again adds the schedule's next runs: those are not the ones looked for)
        runs = _runs_of(project, deployment)
        new = [r for r in runs if r.id not in before and r.parameters.get("trigger") == trigger]
        if new:
            return new[0]
        time.sleep(1.0)
    raise AssertionError(f"no run of {deployment} started by {trigger}")


def test_monitoring_asks_for_retraining_and_a_worker_runs_it(project: Project, tmp_path: Path) -> None:
    before = {run.id for run in _runs_of(project, "training-job/cancer")}
    frame = drifted(pd.read_csv(project.root / "cancer.csv").drop(columns=["target"]))
    frame.to_csv(tmp_path / "drifted.csv", index=False)
    result = project.mlops("monitor", "--name", "cancer", "--data", str(tmp_path / "drifted.csv"), "--retrain", "event")
    assert result.returncode == 4, result.stdout + result.stderr
    run = _wait_new_run(project, "training-job/cancer", before, "mlops.retrain.requested")
    assert wait_run(project, run.id).state.type.value == "COMPLETED"


def test_files_in_the_landing_folder_start_training_on_the_pool(project: Project) -> None:
    before = {run.id for run in _runs_of(project, "training-job/diabetes")}
    watcher = project.stack.spawn("deploy-watch", [str(BIN / "mlops"), "deploy", "--work-pool", POOL, "--name",
                                  "diabetes"], project.env, cwd=project.root)  # fmt: skip
    try:
        landing = Path(project.env["MLOPS_HOME"]) / "landing" / "diabetes"
        deadline = time.monotonic() + 120
        while not landing.is_dir():
            assert watcher.popen.poll() is None and time.monotonic() < deadline, watcher.tail()
            time.sleep(0.5)
        (landing / "part-2.csv").write_bytes((project.root / "diabetes-later.csv").read_bytes())
        run = _wait_new_run(project, "training-job/diabetes", before, "mlops.data.landed", timeout=180)
        assert wait_run(project, run.id).state.type.value == "COMPLETED"
    finally:
        watcher.popen.send_signal(signal.SIGINT)
        watcher.popen.wait(timeout=60)
        project.stack.procs.pop("deploy-watch").stop()
    assert (project.root / "diabetes" / "part-2.csv").exists()


def _wait_task(project: Project, run_id: Any, task_name: str, timeout: float = 300) -> None:
    """Until the flow run has started the task (it is mid-run, past its imports and data steps)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    deadline = time.monotonic() + timeout
    with prefect_api(project.env["PREFECT_API_URL"]) as client:
        while time.monotonic() < deadline:
            # the steps are tasks of the job's subflow, `training_flow`
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))
            )
            ids = [run_id, *(child.id for child in children)]
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            if any(t.name.startswith(task_name) for t in tasks):
                return
            time.sleep(0.5)
    raise AssertionError(f"the run never reached {task_name}")


def test_a_tracking_server_restart_mid_run_loses_nothing(project: Project) -> None:
    versions_before = len(mlflow_client(project).search_model_versions("name='cancer'"))
    run_id = start_run(project, "training-job/cancer")
    _wait_task(project, run_id, "select_model")
    project.stack.restart_mlflow(down_seconds=5)
    state = wait_run(project, run_id).state.type.value
    # MLflow's client retries while the server is away: the run goes on (or fails whole, never half).
    assert state in {"COMPLETED", "FAILED"}, state
    assert_registry_whole(project, "cancer")
    versions = len(mlflow_client(project).search_model_versions("name='cancer'"))
    assert versions == versions_before + (state == "COMPLETED")
    if state == "FAILED":
        assert wait_run(project, start_run(project, "training-job/cancer")).state.type.value == "COMPLETED"


def test_a_worker_killed_mid_run_crashes_that_run_and_the_next_one_succeeds(project: Project) -> None:
    import psutil

    run_id = start_run(project, "training-job/cancer")
    _wait_task(project, run_id, "select_model")
    with prefect_api(project.env["PREFECT_API_URL"]) as client:
        pid = int(str(client.read_flow_run(run_id).infrastructure_pid).rsplit(":", 1)[-1])
    workers = {name: proc for name, proc in project.stack.procs.items() if name.startswith("worker-")}
    owner = next(
        name for name, proc in workers.items() if pid in {c.pid for c in psutil.Process(proc.popen.pid).children(True)}
    )
    project.stack.procs.pop(owner).kill_tree()  # the machine is gone: the worker and its run
    crashed = wait_run(project, run_id, timeout=240)
    assert crashed.state.type.value == "CRASHED", crashed.state
    project.worker(owner)
    again = wait_run(project, start_run(project, "training-job/cancer"))
    assert again.state.type.value == "COMPLETED", again.state
    assert_registry_whole(project, "cancer")


def test_an_unreachable_database_is_named_at_start(project: Project) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    database = f"postgresql://mlops:secret@127.0.0.1:{closed}/mlflow"
    started = time.monotonic()
    result = project.mlops("run", "--name", "cancer", env={"MLFLOW_TRACKING_URI": database})
    assert result.returncode == 1
    assert f"the tracking database at postgresql://mlops:***@127.0.0.1:{closed}/mlflow is unreachable" in (
        result.stderr.replace("\n", " ")
    )
    assert "secret" not in result.stderr + result.stdout
    assert time.monotonic() - started < 60
    api = f"http://127.0.0.1:{free_port()}/api"
    result = project.mlops("deploy", "--work-pool", POOL, "--no-serve", env={"PREFECT_API_URL": api})
    assert result.returncode == 1 and "does not answer" in result.stderr, result.stderr


def test_the_stack_leaves_no_flow_run_unfinished(project: Project) -> None:
    with prefect_api(project.env["PREFECT_API_URL"]) as client:
        runs = client.read_flow_runs()
    open_runs = [(r.name, r.state.type.value) for r in runs if r.state and r.state.type.value in {"RUNNING", "PENDING"}]
    assert not open_runs, open_runs
