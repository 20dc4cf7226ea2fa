"""A rollout end to end, through the real training flow, a real BentoML app on a real SQLite
registry, the monitoring flow and the CLI: a candidate that passes the gate serves in shadow,
both versions' answers reach the prediction log, labelled requests promote it (after a person's
approval), then a worse challenger tried as a canary is retired, each step alerted and in the trail."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from components.core import alerts
from components.core.workspace import Workspace
from components.inference.predlog import MODEL_VERSION, SHADOW_PREDICTION, SHADOW_VERSION, read_prediction_log
from components.simulation.simulate import write_batches
from components.tracking import registry
from flows.cli import app
from flows.monitoring import monitoring_flow
from flows.training import training_flow
from tests.conftest import load_model, write_config

pytestmark = pytest.mark.slow


def _wait(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _fresh_rows(folder: Path, rows: int, seed: int, first_id: int) -> pd.DataFrame:
    """New applications with ids of their own (labels join on them)."""
    frame = pd.read_parquet(write_batches(folder, 1, rows, seed=seed)[0])
    return frame.assign(loan_id=range(first_id, first_id + len(frame)))


def _send(client: TestClient, frame: pd.DataFrame, per_request: int) -> list[dict]:
    features = json.loads(frame.drop(columns=["default", "application_time"]).to_json(orient="records"))
    answers = []
    for start in range(0, len(features), per_request):
        response = client.post("/predict", json={"rows": features[start : start + per_request]})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def _logged(directory: Path, ids: set[int]) -> pd.DataFrame:
    log = read_prediction_log(directory)
    return log[log["loan_id"].isin(ids)] if len(log) else log


def _shadowed(log: pd.DataFrame) -> int:
    """Rows logged with the challenger's answer (none until its first rows are written)."""
    return int(log[SHADOW_PREDICTION].notna().sum()) if SHADOW_PREDICTION in log.columns else 0


def _labels(home: Path, frame: pd.DataFrame, name: str) -> None:
    folder = home / "labels" / "loans"
    folder.mkdir(parents=True, exist_ok=True)
    frame[["loan_id", "default"]].to_parquet(folder / f"{name}.parquet", index=False)


def _service(config_path: Path, patch: pytest.MonkeyPatch):
    patch.setenv("MLOPS_CONFIG", str(config_path))
    patch.delenv("MLOPS_MODEL_NAME", raising=False)
    patch.setenv("MLOPS__SERVING__RELOAD_SECONDS", "0.5")
    patch.setenv("MLOPS__SERVING__PREDICTION_LOG__FLUSH_SECONDS", "0.2")
    # One process holds one Prometheus registry: the serving tests' own service registers BentoML's metrics.
    patch.setenv("MLOPS__SERVING__METRICS", "false")
    from serving.service import create_service, settings_from_environment

    return create_service(settings_from_environment())


def test_shadow_then_canary_promote_and_retire_on_labelled_requests(prefect_api, receiver, tmp_path: Path) -> None:
    pool, data = tmp_path / "pool", tmp_path / "data"
    write_batches(pool, 6, 500, seed=5)
    data.mkdir()
    first, *rest = sorted(pool.glob("*.parquet"))
    shutil.copy(first, data / first.name)
    hooks = f"\n  webhooks:\n    - url: {receiver.url}\n      backoff_seconds: 0"
    config_path = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "suites", alerts=hooks)
    base = load_model(config_path).with_overrides(
        promotion={"metric": "log_loss", "min_test_rows": 50}, label_review={"enabled": False}
    )
    home = Path(base.home)
    # A champion starved by regularization: probabilities near the base rate.
    weak = training_flow(base.with_overrides(model={"estimator": "linear", "params": {"C": 0.0005}}))
    assert weak.promoted, weak.reason
    rollout = {"rollout": "shadow", "approval": "manual", "online": {"min_rows": 100}}
    shadow = base.with_overrides(model={"estimator": "linear"}, promotion=rollout)
    for path in rest:
        shutil.copy(path, data / path.name)
    candidate = training_flow(shadow)
    assert candidate.challenger and not candidate.promoted and not candidate.awaiting_approval, candidate.reason
    assert "challenger" in candidate.reason
    client = registry.connect(Workspace.at(home))
    assert registry.get_champion(client, "loans").version == weak.model_version == "1"
    assert registry.get_challenger(client, "loans").version == candidate.model_version == "2"
    alerter = alerts.Alerter(shadow.alerts, "loans", Workspace.at(home).alerts)
    assert alerter.wait(20) and "challenger_started" in receiver.events()

    log_dir = home / "predictions" / "loans"
    with pytest.MonkeyPatch.context() as patch, TestClient(_service(config_path, patch).to_asgi()) as service:
        _wait(lambda: (service.get("/metadata").json().get("challenger") or {}).get("model_version") == "2", "shadow")
        assert service.get("/metadata").json()["challenger"]["rollout"] == "shadow"
        served = _fresh_rows(tmp_path / "new1", 300, seed=99, first_id=1_000_000)
        answers = _send(service, served, per_request=6)
        assert {a["model_version"] for a in answers} == {"1"}  # the champion answers; the challenger is shadow
        ids = set(served["loan_id"])
        _wait(lambda: _shadowed(_logged(log_dir, ids)) == len(ids), "both answers logged")
        logged = _logged(log_dir, ids)
        assert set(logged[MODEL_VERSION]) == {"1"} and set(logged[SHADOW_VERSION]) == {"2"}
        assert service.get("/metadata").json()["challenger"]["shadow"]["scored_rows"] >= len(ids)

        _labels(home, served, "first")
        looked = monitoring_flow(shadow)
        trial = looked.challenger
        assert trial["verdict"] == "promote" and trial["action"] == "ready", trial
        assert trial["labelled_rows"] == len(ids) and "the challenger is better" in trial["reason"]
        assert Path(trial["evidence"]).exists()
        assert registry.get_champion(client, "loans").version == "1"  # approval first
        assert alerter.wait(20) and "approval_pending" in receiver.events()
        again = monitoring_flow(shadow).challenger
        assert again["verdict"] == "waiting" and again["action"] == "none"

        approved = CliRunner().invoke(
            app, ["approve", "--config", str(config_path), "--version", "2", "--reason", "online test read"]
        )
        assert approved.exit_code == 0, approved.output
        assert registry.get_champion(client, "loans").version == "2"
        assert registry.get_challenger(client, "loans") is None
        _wait(lambda: service.get("/metadata").json()["model_version"] == "2", "the service follows the champion")
        _wait(lambda: service.get("/metadata").json()["challenger"] is None, "the shadow ends")

        # The weak version again, as a canary: half of the request keys, always the same ones.
        since = datetime.now(UTC).isoformat(timespec="seconds")
        canary = {"rollout": "canary", "canary_share": "0.5", "challenger_since": since}
        audit = registry.Audit("retry the old model on live traffic", "test")
        registry.set_challenger(client, "loans", "1", canary, expected_champion="2", audit=audit, lock_dir=home)
        _wait(lambda: (service.get("/metadata").json().get("challenger") or {}).get("rollout") == "canary", "canary")
        time.sleep(1.0)  # past `since`, which has whole seconds
        tried = _fresh_rows(tmp_path / "new2", 300, seed=123, first_id=2_000_000)
        answers = _send(service, tried, per_request=1)
        versions = [a["model_version"] for a in answers]
        assert 0.3 < versions.count("1") / len(versions) < 0.7
        repeat = _send(service, tried.head(20), per_request=1)
        assert [a["model_version"] for a in repeat] == versions[:20]  # sticky per key
        ids = set(tried["loan_id"])
        _wait(lambda: len(_logged(log_dir, ids)) >= len(ids), "canary rows logged")
        logged = _logged(log_dir, ids)
        assert (logged[MODEL_VERSION].astype(str) != logged[SHADOW_VERSION].astype(str)).all()

        _labels(home, tried, "second")
        retired = monitoring_flow(shadow.with_overrides(promotion={"approval": "auto"})).challenger
        assert retired["verdict"] == "retire" and retired["action"] == "retired", retired
        assert "the challenger is worse" in retired["reason"]
        assert registry.get_challenger(client, "loans") is None
        assert registry.get_champion(client, "loans").version == "2"
        assert alerter.wait(20) and "challenger_retired" in receiver.events()

    moves = json.loads(CliRunner().invoke(app, ["history", "--config", str(config_path), "--json"]).stdout)
    assert [(m["action"], m["version"], m["champion"], m["challenger"]) for m in moves] == [
        ("promoted", "1", "1", None),
        ("challenger_started", "2", "1", "2"),
        ("ready", "2", "1", "2"),
        ("approved", "2", "2", None),
        ("challenger_started", "1", "2", "1"),
        ("challenger_retired", "1", "2", None),
    ]
    assert moves[3]["reason"] == "online test read" and moves[5]["via"] == "mlops monitor (online test)"
    table = CliRunner().invoke(app, ["history", "--config", str(config_path)])  # evidence paths in brackets
    assert table.exit_code == 0 and "loans: history" in table.stdout, table.output


def test_without_labels_an_estimated_promotion_serves_and_the_labels_re_check_it(prefect_api, tmp_path: Path) -> None:
    pool, data = tmp_path / "pool", tmp_path / "data"
    write_batches(pool, 6, 500, seed=5)
    data.mkdir()
    first, *rest = sorted(pool.glob("*.parquet"))
    shutil.copy(first, data / first.name)
    config_path = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "suites")
    base = load_model(config_path).with_overrides(
        promotion={"metric": "log_loss", "min_test_rows": 50}, label_review={"enabled": False}
    )
    home = Path(base.home)
    weak = training_flow(base.with_overrides(model={"estimator": "linear", "params": {"C": 0.0005}}))
    assert weak.promoted, weak.reason
    online = {"min_rows": 100, "without_labels": "estimated"}
    shadow = base.with_overrides(model={"estimator": "linear"}, promotion={"rollout": "shadow", "online": online})
    for path in rest:
        shutil.copy(path, data / path.name)
    assert training_flow(shadow).challenger
    client = registry.connect(Workspace.at(home))
    log_dir = home / "predictions" / "loans"
    with pytest.MonkeyPatch.context() as patch, TestClient(_service(config_path, patch).to_asgi()) as service:
        _wait(lambda: (service.get("/metadata").json().get("challenger") or {}).get("model_version") == "2", "shadow")
        before = _fresh_rows(tmp_path / "new1", 300, seed=99, first_id=1_000_000)
        _send(service, before, per_request=10)
        _wait(lambda: _shadowed(_logged(log_dir, set(before["loan_id"]))) == len(before), "both answers logged")

        trial = monitoring_flow(shadow).challenger  # no label has arrived
        assert trial["labelled_rows"] == 0 and trial["decided_on"] == "estimated", trial
        assert trial["verdict"] == "promote" and trial["action"] == "promoted", trial
        assert "estimated better" in trial["reason"]
        assert registry.get_champion(client, "loans").version == "2"
        recheck = registry.get_challenger(client, "loans")
        assert recheck.version == "1" and recheck.recheck_of == "2"
        status = CliRunner().invoke(app, ["status", "--config", str(config_path), "--json"])
        assert status.exit_code == 0, status.output
        assert '"recheck_of": "2"' in status.stdout and '"version": "1"' in status.stdout
        _wait(lambda: service.get("/metadata").json()["model_version"] == "2", "the service follows the champion")
        _wait(
            lambda: (service.get("/metadata").json().get("challenger") or {}).get("model_version") == "1",
            "the old champion in shadow",
        )
        after = _fresh_rows(tmp_path / "new2", 200, seed=7, first_id=2_000_000)
        _send(service, after, per_request=10)
        _wait(lambda: _shadowed(_logged(log_dir, set(after["loan_id"]))) == len(after), "the re-check's answers")
        waiting = monitoring_flow(shadow).challenger
        assert waiting["verdict"] == "continue" and "re-check of v2" in waiting["reason"], waiting

        _labels(home, pd.concat([before, after]), "late")  # weeks later, the labels of both periods
        checked = monitoring_flow(shadow).challenger
        assert checked["verdict"] == "retire" and checked["action"] == "confirmed", checked
        assert checked["labelled_rows"] == 500 and "the labels confirm it" in checked["reason"]
        assert registry.get_challenger(client, "loans") is None
        assert registry.get_champion(client, "loans").version == "2"
    moves = [(m.action, m.version) for m in registry.history.read(client, "loans")]
    assert moves == [
        ("promoted", "1"),
        ("challenger_started", "2"),
        ("promoted", "2"),
        ("challenger_started", "1"),
        ("challenger_retired", "1"),
    ]
