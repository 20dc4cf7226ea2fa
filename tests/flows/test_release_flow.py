"""Releases with people and receivers in them: manual approval, alerts to a real local receiver,
the history and a champion moved by hand, through the real training flow and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from components.core import alerts
from components.core.workspace import Workspace
from components.data.contract import DataRejected
from components.simulation.simulate import write_batches
from components.tracking import registry
from flows.cli import app
from flows.training import training_flow
from tests.conftest import load_model, write_config


def _cli(*args: str) -> dict | list:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1]) if "--json" in args else {}


def test_manual_approval_alerts_and_history_end_to_end(prefect_api, receiver, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_batches(data, 2, 600, seed=7)
    hooks = f"\n  webhooks:\n    - url: {receiver.url}\n      backoff_seconds: 0"
    config_path = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "suites", alerts=hooks)
    config = load_model(config_path).with_overrides(promotion={"approval": "manual"})
    assert config.promotion.approval == "manual" and config.alerts.webhooks[0].url == receiver.url
    alerter = alerts.Alerter(config.alerts, "loans", Workspace.at(config.home).alerts)

    first = training_flow(config)
    assert first.awaiting_approval and not first.promoted, first.reason
    client = registry.connect(Workspace.at(config.home))
    assert registry.get_champion(client, "loans") is None
    assert alerter.wait(20)
    assert receiver.events() == ["retraining_started", "approval_pending", "retraining_finished"]
    assert receiver.received[2]["body"]["details"]["version"] == "1"

    _cli("approve", "--config", str(config_path), "--version", "1", "--reason", "slices reviewed")
    assert registry.get_champion(client, "loans").version == "1"
    approved_at = datetime.now(UTC)
    assert alerter.wait(20) and receiver.events()[-2:] == ["approved", "promoted"]

    second = training_flow(config)  # the same data: nothing to gain, held back
    assert not second.promoted and not second.awaiting_approval
    assert alerter.wait(20) and "candidate_held" in receiver.events()[-3:]

    client.set_registered_model_alias("loans", "champion", second.model_version)  # by hand, as in the MLflow UI
    moves = _cli("history", "--config", str(config_path), "--json")
    assert [m["action"] for m in moves] == ["ready", "approved", "outside_move"]
    assert moves[1]["reason"] == "slices reviewed" and moves[1]["evidence"] == f"runs:/{first.run_id}/decision.json"
    assert alerter.wait(20) and receiver.events()[-1] == "outside_move"

    for path in data.glob("*.parquet"):
        path.unlink()  # the source is gone: the version is retrained from its recorded snapshot
    again = _cli("reproduce", "--config", str(config_path), "--version", "1", "--json")
    assert again["matches"] and again["rows"] == 1200 and again["run_id"] == first.run_id
    assert {m["name"] for m in again["metrics"]} >= {"test_roc_auc", "test_log_loss"}

    serving = _cli("status", "--config", str(config_path), "--at", approved_at.isoformat(), "--json")
    assert serving["models"] == [{"name": "loans", "champion": "1", "since": moves[1]["at"]}]

    client.set_registered_model_alias("loans", "previous-champion", "1")
    back = _cli("rollback", "--config", str(config_path), "--reason", "v2 was put there by hand", "--json")
    assert (back["champion"], back["previous_champion"]) == ("1", second.model_version)
    assert alerter.wait(20) and receiver.events()[-1] == "rollback"
    assert receiver.received[-1]["body"]["details"] == {"champion": "1", "rolled_back": second.model_version}
    last = _cli("history", "--config", str(config_path), "--json")[-1]
    assert (last["action"], last["champion"], last["reason"]) == ("rollback", "1", "v2 was put there by hand")
    assert all(d["ok"] for d in alerts.read_deliveries(Workspace.at(config.home).alerts))


def test_a_rejected_batch_is_alerted(trained, receiver, tmp_path: Path) -> None:
    _, config, _ = trained
    source = Path(config.data.source)
    frame = pd.concat([pd.read_parquet(p) for p in sorted(source.glob("*.parquet"))], ignore_index=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    frame.drop(columns=["region"]).to_parquet(bad / "batch.parquet", index=False)
    hooked = config.with_overrides(
        data={"source": str(bad)}, alerts={"webhooks": [{"url": receiver.url, "backoff_seconds": 0}]}
    )
    with pytest.raises(DataRejected):
        training_flow(hooked)
    assert alerts.Alerter(hooked.alerts, "loans", Workspace.at(config.home).alerts).wait(20)
    assert receiver.events() == ["retraining_started", "rejected_batch"]
    assert "region" in receiver.received[1]["body"]["summary"]


def test_a_failed_monitoring_run_is_alerted(prefect_api, receiver, tmp_path: Path) -> None:
    from components.monitoring.monitor import MonitoringError
    from flows.monitoring import monitoring_flow

    config_path = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", tmp_path / "data", tmp_path / "suites")
    config = load_model(config_path).with_overrides(alerts={"webhooks": [{"url": receiver.url}]})
    with pytest.raises(MonitoringError, match="no champion"):
        monitoring_flow(config)
    assert alerts.Alerter(config.alerts, "loans", Workspace.at(config.home).alerts).wait(20)
    [failed] = receiver.received
    assert failed["body"]["event"] == "failed_run" and "no champion" in failed["body"]["summary"]
    assert failed["body"]["details"]["flow"] == "monitoring_flow"
