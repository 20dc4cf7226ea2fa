"""The monitoring flow and `mlops monitor` on a trained workspace: real Prefect API, SQLite registry, GX."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from components.core.alerts import Alerter
from components.core.workspace import Workspace
from components.inference.predlog import PredictionLog
from components.monitoring import monitor
from components.simulation.simulate import Scenario, generate_loans
from components.tracking import registry
from flows.cli import EXIT_REJECTED, EXIT_RETRAIN, app
from flows.monitoring import monitoring_flow

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(autouse=True)
def _fresh_history(trained) -> None:
    """Each test judges its windows from an empty history (the trained workspace is shared)."""
    _, config, _ = trained
    monitor.history_file(Workspace.at(config.home).monitoring, "loans").unlink(missing_ok=True)


def _batch(folder: Path, name: str, scenario: Scenario | None = None, rows: int = 600, index: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    generate_loans(rows, 7, scenario or Scenario(), batch_index=index).frame.to_parquet(path, index=False)
    return path


def _monitor(config_path: Path, *args: str):
    return CliRunner().invoke(app, ["monitor", "--config", str(config_path), "--json", *args])


def _verdict(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_clean_batch_is_stable_with_a_report_in_the_workspace_and_mlflow(trained, tmp_path: Path) -> None:
    config_path, config, _ = trained
    # 3,000 rows: the champion's held-out score came from 240 rows, a noisy baseline the decay check allows for.
    result = _monitor(config_path, "--data", str(_batch(tmp_path, "clean.parquet", rows=3000)))
    assert result.exit_code == 0, result.output
    verdict = _verdict(result)
    assert verdict["verdict"] == "stable" and not verdict["drift"] and verdict["retraining"] == "none"
    assert verdict["decay"] is not None and not verdict["decay"]["decayed"]  # the batch carries its labels
    page = Path(verdict["report_html"]).read_text()
    assert "Drift report: loans" in page and "credit_score" in page
    assert json.loads(Path(verdict["report_json"]).read_text())["verdict"] == "stable"
    run = MlflowClient(registry.tracking_uri(Workspace.at(config.home))).get_run(verdict["mlflow_run_id"])
    assert run.data.tags["verdict"] == "stable" and "drift_share" in run.data.metrics
    artifacts = {a.path for a in MlflowClient().list_artifacts(verdict["mlflow_run_id"], "monitoring")}
    assert artifacts == {"monitoring/report.html", "monitoring/report.json"}


def test_drift_must_hold_in_two_windows_before_retraining_is_triggered(trained, tmp_path: Path) -> None:
    config_path, _, _ = trained
    drifted = generate_loans(600, 7, Scenario(covariate_drift=1.0), batch_index=41).frame
    features = tmp_path / "drifted.parquet"
    drifted.drop(columns=["default"]).to_parquet(features, index=False)
    labels = tmp_path / "labels.csv"
    drifted[["loan_id", "default"]].to_csv(labels, index=False)
    first = _monitor(config_path, "--data", str(features), "--labels", str(labels), "--retrain", "off")
    assert first.exit_code == 0, first.output
    assert _verdict(first)["verdict"] == "watching" and _verdict(first)["drift"]
    second = _monitor(config_path, "--data", str(features), "--labels", str(labels), "--retrain", "off")
    assert second.exit_code == EXIT_RETRAIN, second.output
    verdict = _verdict(second)
    assert verdict["verdict"] == "retrain" and verdict["retraining"] == "off"
    assert "credit_score" in verdict["drifted_features"] and verdict["decay"]["rows"] == 600


def test_a_corrupted_batch_is_rejected_not_judged(trained, tmp_path: Path) -> None:
    config_path, config, _ = trained
    result = _monitor(config_path, "--data", str(_batch(tmp_path, "units.parquet", Scenario(unit_change=True))))
    assert result.exit_code == EXIT_REJECTED, result.output
    assert _verdict(result)["verdict"] == "rejected" and "annual_income" in _verdict(result)["reason"]
    assert monitor.read_history(monitor.history_file(Workspace.at(config.home).monitoring, "loans")) == []


def test_the_prediction_log_is_judged_window_by_window(trained) -> None:
    _, config, _ = trained
    workspace = Workspace.at(config.home)
    rows = generate_loans(400, 7, batch_index=42).frame.drop(columns=["default", "application_time"])
    features = rows.drop(columns=["loan_id"])
    log = PredictionLog(workspace.predictions / "loans", flush_seconds=60)
    log.append_batch(
        features, ["r"] * len(rows), "1", [0] * len(rows), np.full(len(rows), 0.2), {"loan_id": rows["loan_id"]}
    )
    log.close()
    first = monitoring_flow(config, retrain="off")
    assert first.window.startswith("prediction-log@") and first.rows == 400
    assert first.verdict in ("stable", "watching") and first.decay is None  # no labels in the log
    second = monitoring_flow(config, retrain="off")  # nothing new since the first window
    assert second.verdict == "insufficient" and second.rows == 0


def test_labels_arriving_in_the_configured_folder_measure_decay_on_logged_rows(trained, tmp_path: Path) -> None:
    _, config, _ = trained
    workspace = Workspace.at(config.home)
    frame = generate_loans(400, 7, batch_index=44).frame
    rows = frame.drop(columns=["default", "application_time"])
    log = PredictionLog(workspace.predictions / "loans", flush_seconds=60)
    log.append_batch(
        rows.drop(columns=["loan_id"]), ["r"] * 400, "1", [0] * 400, np.full(400, 0.2), {"loan_id": rows["loan_id"]}
    )
    log.close()
    folder = tmp_path / "labels"
    with_labels = config.with_overrides(monitoring={"labels": str(folder)})
    monitoring_flow(with_labels, retrain="off")  # drains earlier windows of the shared log: no labels yet
    log = PredictionLog(workspace.predictions / "loans", flush_seconds=60)
    log.append_batch(
        rows.drop(columns=["loan_id"]), ["s"] * 400, "1", [0] * 400, np.full(400, 0.2), {"loan_id": rows["loan_id"]}
    )
    log.close()
    folder.mkdir()
    frame[["loan_id", "default"]].to_csv(folder / "week1.csv", index=False)
    result = monitoring_flow(with_labels, retrain="off")
    assert result.rows == 400 and result.decay is not None and result.decay["rows"] == 400


def test_the_label_queue_asks_for_unsure_rows_and_its_labels_measure_decay_and_train(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path, config, _ = trained
    workspace = Workspace.at(config.home)
    monitoring_flow(config, retrain="off")  # drains earlier windows of the shared log
    data = tmp_path / "data"
    shutil.copytree(config.data.source, data)
    monkeypatch.setenv("MLOPS__DATA__SOURCE", str(data))  # the ingested batch lands in a copy
    frame = generate_loans(600, 7, batch_index=46).frame
    rows, p = frame.drop(columns=["default", "application_time"]), np.linspace(0.01, 0.99, 600)
    since = datetime.now(UTC).isoformat()
    log = PredictionLog(workspace.predictions / "loans", flush_seconds=60)
    log.append_batch(
        rows.drop(columns=["loan_id"]), ["q"] * 600, "1", (p >= 0.2).astype(int), p, {"loan_id": rows["loan_id"]}
    )
    log.close()
    try:
        queue = CliRunner().invoke(
            app, ["label-queue", "--config", str(config_path), "-k", "400", "--since", since, "--json"]
        )
        assert queue.exit_code == 0, queue.output
        outcome = _verdict(queue)
        queued = pd.read_csv(outcome["path"])
        assert outcome["rows"] == 400 and outcome["candidates"] == 600 and "threshold 0.20" in outcome["strategy"]
        assert queued["_selection"].value_counts().to_dict() == {"informative": 300, "random": 100}
        unsure = queued.loc[queued["_selection"] == "informative", "_probability"]
        # around the threshold, on the probability's scale: 4x wider above it (0.8 of room) than below (0.2)
        assert unsure.between(0.07, 0.7).all() and unsure.between(0.19, 0.25).sum() >= 20
        queued["default"] = queued["loan_id"].map(frame.set_index("loan_id")["default"])
        queued.to_csv(outcome["path"], index=False)
        taken = CliRunner().invoke(
            app, ["label-queue", "--config", str(config_path), "--ingest", outcome["path"], "--json"]
        )
        assert taken.exit_code == 0, taken.output
        ingested = _verdict(taken)
        assert ingested["labelled"] == 400 and Path(ingested["batch_path"]).parent == data
        batch, first = pd.read_parquet(ingested["batch_path"]), pd.read_parquet(sorted(data.iterdir())[0])
        assert len(batch) == 400 and list(batch.columns) == list(first.columns)  # the batches' own format
        assert batch["application_time"].notna().all()  # served at: the log's time
        again = CliRunner().invoke(
            app, ["label-queue", "--config", str(config_path), "-k", "400", "--since", since, "--json"]
        )
        assert _verdict(again)["rows"] == 200 and _verdict(again)["labelled"] == 400
        result = monitoring_flow(config.with_overrides(monitoring={"min_rows": 50}), retrain="off")
        assert result.rows == 600 and result.decay is not None and result.decay["rows"] == 100  # the random share
    finally:
        shutil.rmtree(workspace.labels / "loans", ignore_errors=True)
        shutil.rmtree(workspace.label_queue / "loans", ignore_errors=True)


def test_a_sustained_alarm_can_request_retraining_with_an_event(trained, receiver, tmp_path: Path) -> None:
    _, config, _ = trained
    config = config.with_overrides(alerts={"webhooks": [{"url": receiver.url, "events": ["drift_alarm"]}]})
    path = _batch(tmp_path, "concept.parquet", Scenario(covariate_drift=1.0), index=43)
    assert monitoring_flow(config, data=str(path), retrain="event").verdict == "watching"
    result = monitoring_flow(config, data=str(path), retrain="event")
    assert result.verdict == "retrain" and result.retraining == "event"
    assert Alerter(config.alerts, "loans", Workspace.at(config.home).alerts).wait(20)
    [alarm] = receiver.received  # the watching window sent none
    assert alarm["body"]["event"] == "drift_alarm" and alarm["body"]["details"]["retraining"] == "event"
    # The alarms are spent: the next window starts counting again.
    assert monitoring_flow(config, data=str(path), retrain="event").verdict == "watching"


def test_monitoring_needs_a_champion_with_a_reference(tmp_path: Path) -> None:
    from tests.conftest import write_config

    config_path = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", tmp_path / "data", tmp_path / "exp")
    result = _monitor(config_path, "--data", str(_batch(tmp_path, "b.parquet")))
    assert result.exit_code == 1 and "no champion yet" in result.output


def test_monitor_reads_what_training_stored(trained) -> None:
    _, config, result = trained
    client = registry.connect(Workspace.at(config.home))
    reference = registry.download_artifact(result.run_id, monitor.REFERENCE_ARTIFACT, Path(config.home) / "ref.parquet")
    assert reference is not None
    frame = pd.read_parquet(reference)
    assert monitor.SCORE_COLUMN in frame and frame[monitor.SCORE_COLUMN].between(0, 1).all()
    assert "default" not in frame and "loan_id" not in frame
    assert registry.run_metrics(client, result.run_id)["test_roc_auc"] > 0.5


@pytest.mark.slow
def test_inline_retraining_trains_and_promotes_on_the_drifted_data(tmp_path: Path) -> None:
    from flows.training import training_flow
    from tests.conftest import load_model, write_config

    data = tmp_path / "data"
    for index in range(2):
        _batch(data, f"batch_{index}.parquet", rows=1500, index=index)
    config = load_model(write_config(tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "exp"))
    assert training_flow(config).promoted
    # The drift arrives in the training data too (the landing folder's job in production).
    drifted = [
        _batch(data, f"batch_{i}.parquet", Scenario(covariate_drift=1.0, concept_drift=1.0), rows=1500, index=i)
        for i in (2, 3)
    ]
    for path in (data / "batch_0.parquet", data / "batch_1.parquet"):
        path.unlink()
    assert monitoring_flow(config, data=str(drifted[0]), retrain="inline").verdict == "watching"
    result = monitoring_flow(config, data=str(drifted[1]), retrain="inline")
    assert result.verdict == "retrain" and result.retraining == "ran", result.reason
    assert result.training is not None and result.training["model_version"] == "2"
