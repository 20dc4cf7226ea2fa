"""Alerts: what happens to a model, POSTed to its webhooks off the critical path.

`Alerter.send(event, summary, **details)` returns at once: a daemon thread delivers to every
webhook that wants the event, retrying with doubling backoff; each outcome is logged and appended to
`<workspace>/alerts/deliveries.jsonl`. A failed delivery never raises into the pipeline. At exit
a command waits for deliveries still under way, at most `alerts.wait_seconds`.

Bodies: 'json' is the alert itself (event, model, summary, at, id, details); 'slack' is a message
Slack's incoming webhooks take (`text` plus blocks). Each request carries the alert's id in an
`Idempotency-Key` header, so a receiver can drop a retried duplicate.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.core.config import AlertsConfig, WebhookConfig
from components.core.secrets import redact

LOG = logging.getLogger("mlops.alerts")
DELIVERIES = "deliveries.jsonl"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TITLES = {
    "rejected_batch": "batch rejected",
    "drift_alarm": "drift alarm",
    "retraining_started": "retraining started",
    "retraining_finished": "retraining finished",
    "candidate_held": "candidate held back",
    "promoted": "promoted to champion",
    "approval_pending": "waiting for approval",
    "approved": "approved",
    "rejected": "rejected",
    "rollback": "rolled back",
    "challenger_started": "challenger started",
    "challenger_promoted": "challenger promoted to champion",
    "challenger_retired": "challenger retired",
    "outside_move": "champion moved outside the project",
    "failed_run": "run failed",
}


class DeliveryError(RuntimeError):
    """A webhook could not be reached, or answered other than 2xx."""


class MissingVariable(DeliveryError):
    """A `${VAR}` of the webhook's settings is not set: retrying cannot help."""


@dataclass(frozen=True)
class Alert:
    event: str
    model: str
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def title(self) -> str:
        return f"{self.model}: {_TITLES.get(self.event, self.event)}"


def render(alert: Alert, fmt: str) -> dict[str, Any]:
    """The request body for a receiver of this format."""
    if fmt == "json":
        return {"source": "mlops", **asdict(alert), "details": dict(alert.details)}
    facts = [f"*{k}*: {v}" for k, v in alert.details.items() if v not in (None, "")]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": alert.summary[:2900]}},
    ]
    if facts:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)[:2900]}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"{alert.event} · {alert.at}"}]})
    return {"text": f"{alert.title}: {alert.summary}"[:3000], "blocks": blocks}


def expand(text: str, environ: Mapping[str, str]) -> str:
    """`text` with each `${VAR}` replaced from the environment; a missing variable is an error."""

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name not in environ:
            raise MissingVariable(f"environment variable {name} is not set")
        return environ[name]

    return _VARIABLE.sub(value, text)


def post(hook: WebhookConfig, body: dict[str, Any], key: str, environ: Mapping[str, str]) -> int:
    """One POST; returns the status (2xx) or raises `DeliveryError`."""
    headers = {"Content-Type": "application/json", "User-Agent": "mlops-alerts", "Idempotency-Key": key}
    headers |= {name: expand(value, environ) for name, value in hook.headers.items()}
    request = urllib.request.Request(
        expand(hook.url, environ), data=json.dumps(body, default=str).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=hook.timeout_seconds) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"answered {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DeliveryError(str(getattr(exc, "reason", exc))) from None


@dataclass(frozen=True)
class Delivery:
    alert: str
    event: str
    model: str
    url: str  # redacted, variables unexpanded
    ok: bool
    attempts: int
    status: int | None
    error: str | None
    at: str


def deliver(hook: WebhookConfig, alert: Alert, environ: Mapping[str, str], sleep: Any = time.sleep) -> Delivery:
    """POST the alert, retrying with doubling backoff; the outcome, never an exception."""
    body, error, status, attempts = render(alert, hook.format), None, None, 0
    for attempt in range(hook.retries + 1):
        attempts = attempt + 1
        try:
            status, error = post(hook, body, alert.id, environ), None
            break
        except MissingVariable as exc:
            error = str(exc)
            break
        except DeliveryError as exc:
            error = str(exc)
            if attempt < hook.retries:
                sleep(min(hook.backoff_seconds * 2**attempt, 60.0))
    at = datetime.now(UTC).isoformat(timespec="seconds")
    return Delivery(alert.id, alert.event, alert.model, redact(hook.url), error is None, attempts, status, error, at)


class _Outbox:
    """One per process: a queue and the daemon thread that drains it."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[WebhookConfig, Alert, Path]] = queue.Queue()
        self.thread = threading.Thread(target=self._drain, name="mlops-alerts", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            hook, alert, folder = self.queue.get()
            try:
                _record(deliver(hook, alert, os.environ), folder)
            finally:
                self.queue.task_done()

    def wait(self, seconds: float) -> bool:
        """Until every queued delivery is done, or `seconds` passed; True when none is left."""
        deadline = time.monotonic() + seconds
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.queue.unfinished_tasks


_outbox: _Outbox | None = None
_lock = threading.Lock()
_wait_seconds = 0.0


def _record(delivery: Delivery, folder: Path) -> None:
    if delivery.ok:
        LOG.info("alert %s (%s) delivered to %s", delivery.event, delivery.model, delivery.url)
    else:
        LOG.warning(
            "alert %s (%s) not delivered to %s after %d attempt(s): %s",
            delivery.event,
            delivery.model,
            delivery.url,
            delivery.attempts,
            delivery.error,
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / DELIVERIES).open("a") as handle:
            handle.write(json.dumps(asdict(delivery)) + "\n")
    except OSError as exc:
        LOG.warning("could not record the delivery of alert %s: %s", delivery.alert, exc)


def _at_exit() -> None:
    if _outbox is not None and not _outbox.wait(_wait_seconds):
        LOG.warning("%d alert delivery(ies) still under way at exit were dropped", _outbox.queue.unfinished_tasks)


def outbox(wait_seconds: float) -> _Outbox:
    """The process's outbox, started on first use (with its wait at exit)."""
    global _outbox, _wait_seconds
    with _lock:
        _wait_seconds = max(_wait_seconds, wait_seconds)
        if _outbox is None:
            _outbox = _Outbox()
            atexit.register(_at_exit)
        return _outbox


@dataclass(frozen=True)
class Alerter:
    """Sends one model's alerts to its webhooks; `send` returns at once."""

    config: AlertsConfig
    model: str
    folder: Path  # <workspace>/alerts

    def send(self, event: str, summary: str, **details: Any) -> Alert | None:
        hooks = [hook for hook in self.config.webhooks if hook.wants(event)]
        if not hooks:
            return None
        alert = Alert(event, self.model, redact(summary), {k: _plain(v) for k, v in details.items()})
        box = outbox(self.config.wait_seconds)
        for hook in hooks:
            box.queue.put((hook, alert, self.folder))
        return alert

    def wait(self, seconds: float | None = None) -> bool:
        """Until this process's deliveries are done (tests, and commands about to exit)."""
        if _outbox is None:
            return True
        return _outbox.wait(self.config.wait_seconds if seconds is None else seconds)


def _plain(value: Any) -> Any:
    """A detail as JSON can carry it (text redacted)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return redact(str(value))


def read_deliveries(folder: Path) -> list[dict[str, Any]]:
    path = folder / DELIVERIES
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
