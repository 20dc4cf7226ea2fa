"""The promotion gate end to end: dry runs, candidates without signal, more data, rollback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from components.core.workspace import Workspace
from components.inference.scoring import load_serving_model
from components.simulation.simulate import write_batches
from components.tracking import registry
from flows.cli import app
from flows.training import training_flow
from tests.conftest import load_model, write_config


def test_dry_run_decides_without_registering(trained) -> None:
    _, config, _ = trained
    client = registry.connect(Workspace.at(config.home))
    versions = len(client.search_model_versions("name='loans'"))
    result = training_flow(config, dry_run=True)
    assert result.dry_run and result.model_version is None and not result.promoted
    assert result.failed_checks == ["beats_champion"]  # same data as the champion: nothing to gain
    assert len(client.search_model_versions("name='loans'")) == versions
    run = client.get_run(result.run_id)
    assert run.data.tags["mlops.dry_run"] == "true" and run.data.tags["outcome"] == "dry_run"
    record = json.loads(Path(client.download_artifacts(result.run_id, "decision.json")).read_text())
    assert record["candidate"]["dry_run"] is True and record["candidate"]["version"] is None
    assert record["evidence"]["serving"]["loaded"] is True  # checked from the run's logged model


def test_a_candidate_without_signal_is_held_back_with_reasons(prefect_api, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_batches(data, 2, 600, seed=11)
    for path in data.glob("*.parquet"):
        frame = pd.read_parquet(path)
        frame["default"] = np.random.default_rng(3).permutation(frame["default"].to_numpy())
        frame.to_parquet(path, index=False)
    config = load_model(write_config(tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "x"))
    result = training_flow(config)
    assert not result.promoted
    assert "floor:roc_auc" in result.failed_checks, result.reason
    assert "below" not in result.reason or "floor" in result.reason
    client = registry.connect(Workspace.at(config.home))
    assert registry.get_champion(client, "loans") is None
    version = client.get_model_version("loans", result.model_version)
    assert version.tags["decision"] == "hold"
    assert version.tags["check.floor:roc_auc"].startswith("failed:")


def test_much_more_data_is_promoted_and_rollback_restores_the_previous_champion(prefect_api, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    write_batches(pool, 12, 500, seed=5)
    data = tmp_path / "data"
    data.mkdir()
    first, *rest = sorted(pool.glob("*.parquet"))
    shutil.copy(first, data / first.name)
    config_path = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "suites")
    config = load_model(config_path).with_overrides(promotion={"min_test_rows": 50})
    small = training_flow(config)
    assert small.promoted, small.reason

    for path in rest:
        shutil.copy(path, data / path.name)
    large = training_flow(config)
    assert large.promoted, large.reason
    client = registry.connect(Workspace.at(config.home))
    assert registry.get_champion(client, "loans").version == large.model_version == "2"
    assert str(client.get_model_version_by_alias("loans", "previous-champion").version) == "1"
    record = json.loads(Path(client.download_artifacts(large.run_id, "decision.json")).read_text())
    assert record["evidence"]["improvement"]["low"] > 0

    rollback = CliRunner().invoke(
        app, ["rollback", "--config", str(config_path), "--reason", "complaints from the loan desk", "--json"]
    )
    assert rollback.exit_code == 0, rollback.output
    assert json.loads(rollback.stdout) == {"name": "loans", "champion": "1", "previous_champion": "2"}
    assert registry.get_champion(client, "loans").version == "1"
    assert "complaints from the loan desk" in client.get_model_version("loans", "2").tags["rolled_back"]
    assert "v2 -> v1" in client.get_registered_model("loans").tags["last_rollback"]
    served = load_serving_model("models:/loans@champion")  # what a reloaded service loads
    rows = pd.read_parquet(first).drop(columns=["default"]).head(3).to_dict(orient="records")
    assert len(served.predict(rows).labels) == 3

    empty = tmp_path / "fresh.yaml"
    write_config(empty, tmp_path / "ws2", data, tmp_path / "suites")
    refused = CliRunner().invoke(app, ["rollback", "--config", str(empty), "--reason", "x"])
    assert refused.exit_code == 1 and "no 'previous-champion'" in refused.output


@pytest.mark.slow
def test_search_trials_run_on_a_local_dask_cluster(prefect_api, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_batches(data, 2, 500, seed=13)
    config_path = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "suites")
    base = load_model(config_path)
    sequential = training_flow(base.with_overrides(search={"trials": 4}, label_review={"enabled": False}))
    parallel_config = base.with_overrides(search={"trials": 4, "workers": 2}, label_review={"enabled": False})
    parallel = training_flow(parallel_config, dry_run=True)
    client = registry.connect(Workspace.at(base.home))

    def trials(run_id: str) -> list[float]:
        runs = client.search_runs(
            [client.get_run(run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'", max_results=50
        )
        return sorted(r.data.metrics["cv_roc_auc"] for r in runs if r.data.params["stage"] == "search")

    assert len(trials(parallel.run_id)) == 4
    # the first trial (the defaults) is the same on one process and on Dask
    assert set(trials(sequential.run_id)) & set(trials(parallel.run_id))
