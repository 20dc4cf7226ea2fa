"""The pipeline against an MLflow tracking server behind MLflow's basic auth (on PostgreSQL, its
users in PostgreSQL too): credentials from MLFLOW_TRACKING_USERNAME/PASSWORD, nothing else changes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack.conftest import FAST, write_model
from tests.stack.harness import BIN, TELEMETRY_OFF, Stack, caller_environment, stack

pytestmark = [pytest.mark.stack]


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path, dict[str, str]]]:
    from sklearn.datasets import load_wine

    root = tmp_path_factory.mktemp("auth-project")
    with stack(prefect=False, auth=True) as running:
        env = {**TELEMETRY_OFF, **running.env, "MLOPS_HOME": str(root / "workspace"),
               "MLOPS__PREFECT__SERVER": "ephemeral"}  # fmt: skip
        (root / "mlops.yaml").write_text("home: ./workspace\nvalidation:\n  suite_dir: expectations\n")
        load_wine(as_frame=True).frame.to_csv(root / "wine.csv", index=False)
        yield running, root, env


def mlops(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "mlops"), *args], cwd=root, env={**caller_environment(), **env},
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def test_wrong_credentials_are_named_before_any_work(authed: tuple[Stack, Path, dict[str, str]]) -> None:
    _, root, env = authed
    result = mlops(root, {**env, "MLFLOW_TRACKING_PASSWORD": "not-the-password"}, "status")
    assert result.returncode == 1
    assert "refused the credentials (HTTP 401)" in result.stderr.replace("\n", " "), result.stderr
    assert "not-the-password" not in result.stderr + result.stdout


def test_training_and_status_work_unchanged_behind_basic_auth(authed: tuple[Stack, Path, dict[str, str]]) -> None:
    _, root, env = authed
    assert mlops(root, env, "init", "--data", "wine.csv", "--target", "target", "--name", "wine").returncode == 0
    write_model(root, "wine", {**FAST, "search": {"trials": 2, "cv_repeats": 1}})
    result = mlops(root, env, "run", "--name", "wine")
    assert result.returncode == 0, result.stderr[-3000:]
    status = mlops(root, env, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"version": "1"' in status.stdout or '"version": 1' in status.stdout, status.stdout[-2000:]
    # the registry is behind the login: without credentials the server refuses
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/registered-models/search", timeout=10)
    assert refused.value.code == 401
    assert os.environ.get("MLFLOW_TRACKING_PASSWORD") != env["MLFLOW_TRACKING_PASSWORD"]
