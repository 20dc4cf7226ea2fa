"""Kill `mlops run` with SIGKILL at every point of a real run: the next command succeeds, there is
at most one champion and it loads and answers, and no batch file is lost or half-moved.

Each run is a real `mlops` process on a real SQLite registry and local Prefect server; the kill is
`components.core.faults.fault_point` (MLOPS_FAULT_AT), a SIGKILL the process sends itself: no handler,
no cleanup, as the OOM killer or a power cut would leave it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from components.core.workspace import Workspace
from components.tracking import registry
from tests.conftest import write_config

BIN = Path(sys.executable).parent
# Promotion's points first, while there is no champion (a rerun on the same data is not promoted);
# then the stages before it, with a champion in place.
POINTS = ("registered", "alias", "promoted", "extracted", "validated", "trained", "logged")


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _champion_answers(home: Path, rows: pd.DataFrame) -> str | None:
    """The champion's version after checking it loads and answers (None: no champion yet)."""
    client = registry.connect(Workspace.at(home))
    champion = registry.get_champion(client, "loans")
    if champion is None:
        return None
    previous = registry._alias_version(client, "loans", registry.PREVIOUS_CHAMPION)
    assert previous != champion.version
    model = registry.load_model(champion.uri)
    assert len(model.predict(rows)) == len(rows)
    return champion.version


@pytest.fixture
def project(tmp_path: Path):
    from components.simulation.simulate import write_batches

    data = tmp_path / "data"
    write_batches(data, 2, 600, seed=11)
    config = write_config(
        tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "suites", label_review="{enabled: false}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS", "PREFECT_API", "MLFLOW_TRACKING"))}
    env.update(
        {
            "MLOPS_CONFIG": str(config),
            "MLOPS__PREFECT__SERVER": "local",  # one server start for all the runs
            # one family's defaults: the kills are the subject, not the model
            "MLOPS__MODEL__ESTIMATOR": "logistic_regression",
            "MLOPS__SEARCH__METHOD": "none",
        }
    )
    yield config, data, tmp_path / "ws", env
    subprocess.run([str(BIN / "mlops"), "server", "stop"], env=env, capture_output=True, check=False, timeout=60)


def _run(env: dict[str, str], point: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mlops"), "run", "--name", "loans", "--json"],
        env={**env, **({"MLOPS_FAULT_AT": point} if point else {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_run_killed_anywhere_loses_nothing_and_leaves_one_working_champion(project) -> None:
    _, data, home, env = project
    before = _digests(data)
    rows = pd.read_parquet(next(data.glob("*.parquet"))).head(20).drop(columns=["default"])
    for point in POINTS:
        killed = _run(env, point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-3000:])
        assert _digests(data) == before, point  # no batch file lost, moved or changed
        version = _champion_answers(home, rows)
        assert (version is None) == (point in ("registered", "alias")), point
    # A batch that breaks the contract: killed while it is being quarantined, it is still in the source.
    broken = data / "batch_9999.parquet"
    pd.read_parquet(next(data.glob("*.parquet"))).drop(columns=["annual_income"]).to_parquet(broken)
    killed = _run(env, "quarantining")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert broken.is_file()
    # The next command succeeds: the broken batch is moved whole into quarantine, once.
    done = _run(env)
    assert done.returncode in (0, 3), done.stderr[-3000:]
    assert not broken.exists()
    moved = list((Workspace.at(home).quarantine / "loans").rglob("batch_9999.parquet"))
    assert len(moved) == 1 and moved[0].stat().st_size > 0
    assert _digests(data) == before
    version = _champion_answers(home, rows)
    assert version is not None
    status = subprocess.run(
        [str(BIN / "mlops"), "status", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0 and f'"version": "{version}"' in status.stdout
