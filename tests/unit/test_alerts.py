"""Alerts delivered to a real local HTTP receiver: bodies, retries, failures that never raise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from components.core import alerts
from components.core.config import AlertsConfig, WebhookConfig
from tests.receiver import Receiver


def _hook(url: str, **settings: Any) -> WebhookConfig:
    return WebhookConfig(url=url, backoff_seconds=0, **settings)


def test_a_json_alert_reaches_the_receiver_with_its_id_and_details(receiver: Receiver, tmp_path: Path) -> None:
    alerter = alerts.Alerter(AlertsConfig(webhooks=(_hook(receiver.url),)), "loans", tmp_path)
    alert = alerter.send("drift_alarm", "7 of 10 features drifted", window="2026-12", version="3")
    assert alerter.wait(10)
    [got] = receiver.received
    assert got["body"]["event"] == "drift_alarm" and got["body"]["model"] == "loans"
    assert got["body"]["details"] == {"window": "2026-12", "version": "3"}
    assert got["headers"]["Idempotency-Key"] == alert.id
    [delivery] = alerts.read_deliveries(tmp_path)
    assert delivery["ok"] and delivery["attempts"] == 1 and delivery["status"] == 200


def test_a_slack_body_has_text_and_blocks(receiver: Receiver, tmp_path: Path) -> None:
    hook = _hook(receiver.url, format="slack")
    alerter = alerts.Alerter(AlertsConfig(webhooks=(hook,)), "loans", tmp_path)
    alerter.send("candidate_held", "v4 held back: roc_auc 0.61 < floor 0.65", version="4")
    assert alerter.wait(10)
    body = receiver.received[0]["body"]
    assert body["text"].startswith("loans: candidate held back: v4 held back")
    assert body["blocks"][0]["text"]["text"] == "loans: candidate held back"


def test_only_the_events_a_receiver_wants_are_sent(receiver: Receiver, tmp_path: Path) -> None:
    hook = _hook(receiver.url, events=("rollback",))
    alerter = alerts.Alerter(AlertsConfig(webhooks=(hook,)), "loans", tmp_path)
    assert alerter.send("drift_alarm", "ignored") is None
    alerter.send("rollback", "v2 again")
    assert alerter.wait(10)
    assert [r["body"]["event"] for r in receiver.received] == ["rollback"]


def test_a_failing_receiver_is_retried_then_succeeds(receiver: Receiver) -> None:
    receiver.statuses = [503, 500]
    alert = alerts.Alert("failed_run", "loans", "boom")
    delivery = alerts.deliver(_hook(receiver.url, retries=3), alert, {}, sleep=lambda s: None)
    assert delivery.ok and delivery.attempts == 3 and delivery.status == 200
    assert len({r["headers"]["Idempotency-Key"] for r in receiver.received}) == 1  # the same alert, retried


def test_backoff_doubles_between_attempts() -> None:
    waits: list[float] = []
    hook = WebhookConfig(url="http://127.0.0.1:9/closed", retries=3, backoff_seconds=0.5, timeout_seconds=1)
    delivery = alerts.deliver(hook, alerts.Alert("failed_run", "loans", "boom"), {}, sleep=waits.append)
    assert not delivery.ok and delivery.attempts == 4 and delivery.error
    assert waits == [0.5, 1.0, 2.0]


def test_an_unreachable_receiver_is_logged_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hook = _hook("http://127.0.0.1:9/closed", retries=1, timeout_seconds=1)
    alerter = alerts.Alerter(AlertsConfig(webhooks=(hook,)), "loans", tmp_path)
    with caplog.at_level("WARNING", logger="mlops.alerts"):
        alerter.send("rejected_batch", "batch 3 breaks the contract")
        assert alerter.wait(20)
    [delivery] = alerts.read_deliveries(tmp_path)
    assert not delivery["ok"] and delivery["attempts"] == 2
    assert "not delivered" in caplog.text


def test_variables_expand_at_send_time_and_stay_out_of_the_record(receiver: Receiver, tmp_path: Path) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    hook = _hook("http://127.0.0.1:${HOOK_PORT}/hook", headers={"Authorization": "Bearer ${HOOK_TOKEN}"})
    environ = {"HOOK_PORT": port, "HOOK_TOKEN": "s3cret"}
    delivery = alerts.deliver(hook, alerts.Alert("promoted", "loans", "v2"), environ, sleep=lambda s: None)
    assert delivery.ok and delivery.url == "http://127.0.0.1:${HOOK_PORT}/hook"
    assert receiver.received[0]["headers"]["Authorization"] == "Bearer s3cret"
    missing = alerts.deliver(hook, alerts.Alert("promoted", "loans", "v2"), {"HOOK_TOKEN": "x"}, sleep=lambda s: None)
    assert not missing.ok and missing.attempts == 1 and "HOOK_PORT is not set" in str(missing.error)


def test_passwords_in_summaries_are_redacted(receiver: Receiver, tmp_path: Path) -> None:
    alerter = alerts.Alerter(AlertsConfig(webhooks=(_hook(receiver.url),)), "loans", tmp_path)
    alerter.send("failed_run", "cannot reach postgresql://ml:hunter2@db/loans", source="postgresql://ml:hunter2@db/x")
    assert alerter.wait(10)
    assert "hunter2" not in json.dumps(receiver.received[0]["body"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "ftp://x"}, "starts with http"),
        ({"url": "http://x", "events": ("drifted",)}, "events"),
        ({"url": "http://x", "format": "teams"}, "format"),
    ],
)
def test_bad_webhook_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WebhookConfig(**settings)
