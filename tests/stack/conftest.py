"""The stack's fixtures: the servers (module scope), a project of two models on real public tables,
its deployments registered on a work pool and two process workers running them."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.stack.harness import BIN, TELEMETRY_OFF, Stack, caller_environment, stack

POOL = "mlops-stack"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Project:
    stack: Stack
    root: Path
    env: dict[str, str]  # what every command of the project runs with: the servers and the workspace
    dask: str

    def mlops(
        self, *args: str, timeout: float = 600, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "mlops"), *args],
            cwd=self.root, env={**caller_environment(), **self.env, **(env or {})}, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def worker(self, name: str) -> Any:
        return self.stack.start_worker(POOL, name, self.env)


@contextmanager
def prefect_api(url: str) -> Iterator[Any]:
    """A synchronous Prefect client on the stack's server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        yield client


def start_run(project: Project, deployment: str, **parameters: Any) -> Any:
    """A flow run of the deployment, created now; its id."""
    with prefect_api(project.env["PREFECT_API_URL"]) as client:
        found = client.read_deployment_by_name(deployment)
        return client.create_flow_run_from_deployment(found.id, parameters=parameters or None).id


def wait_run(project: Project, run_id: Any, timeout: float = 600, states: set[str] = FINAL) -> Any:
    """The flow run once its state is one of `states`."""
    deadline = time.monotonic() + timeout
    with prefect_api(project.env["PREFECT_API_URL"]) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state and run.state.type.value in states:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {run.name} still {run.state.type.value if run.state else None}")
            time.sleep(1.0)


def write_model(root: Path, name: str, extra: dict[str, Any]) -> None:
    """Merge `extra` into models/<name>.yaml as written by `mlops init`."""
    import yaml

    path = root / "models" / f"{name}.yaml"
    settings = yaml.safe_load(path.read_text())
    for section, values in extra.items():
        if isinstance(values, dict):
            settings.setdefault(section, {}).update(values)
        else:
            settings[section] = values
    path.write_text(yaml.safe_dump(settings, sort_keys=False))


FAST = {
    "search": {"trials": 3, "cv_repeats": 1},
    "evaluation": {"plots": False},
    "serving": {"reload_seconds": 1},
    "monitoring": {"windows": 1, "min_windows": 1, "min_rows": 100, "retrain": "event"},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """Two models (scikit-learn's breast-cancer table, binary; its diabetes table, regression, trained
    from a folder that a landing folder feeds) on the stack, deployed on a work pool with two workers."""
    from sklearn.datasets import load_breast_cancer, load_diabetes

    root = tmp_path_factory.mktemp("stack-project")
    with stack(dask_workers=2) as running:
        dask = running.env.pop("MLOPS_STACK_DASK")
        env = {**TELEMETRY_OFF, **running.env, "MLOPS_HOME": str(root / "workspace")}
        (root / "mlops.yaml").write_text(
            "home: ./workspace\nmodels_dir: models\nvalidation:\n  suite_dir: expectations\n"
        )
        cancer = load_breast_cancer(as_frame=True).frame
        cancer.insert(0, "row_id", range(len(cancer)))
        cancer.to_csv(root / "cancer.csv", index=False)
        diabetes = load_diabetes(as_frame=True, scaled=False).frame
        (root / "diabetes").mkdir()
        diabetes.iloc[:300].to_csv(root / "diabetes" / "part-1.csv", index=False)
        diabetes.iloc[300:].to_csv(root / "diabetes-later.csv", index=False)
        proj = Project(running, root, env, dask)
        for name, data, target in (("cancer", "cancer.csv", "target"), ("diabetes", "diabetes/part-1.csv", "target")):
            result = proj.mlops("init", "--data", data, "--target", target, "--name", name)
            assert result.returncode == 0, result.stderr
        write_model(root, "cancer", {**FAST, "data": {"id_column": "row_id"}})
        landing = {"landing": {"folder": "{home}/landing/{model}", "poll_seconds": 1}}
        write_model(root, "diabetes", {**FAST, "data": {"source": str(root / "diabetes")}, "deploy": landing})
        deployed = proj.mlops("deploy", "--work-pool", POOL, "--no-serve", "--json")
        assert deployed.returncode == 0, deployed.stderr
        proj.deployed = json.loads(deployed.stdout.strip().splitlines()[-1])  # type: ignore[attr-defined]
        proj.worker("worker-a")
        proj.worker("worker-b")
        yield proj


def drifted(frame: pd.DataFrame, share: float = 0.45) -> pd.DataFrame:
    """The rows with the largest tumours: a covariate shift (most features move together) made of
    real rows, so it drifts without breaking the contract."""
    return frame.nlargest(int(len(frame) * share), "mean area")
