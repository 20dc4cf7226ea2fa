"""The judged windows' history, and the verdict debounced over it (`sustained`, `decide`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from components.core.config import MonitoringConfig
from components.monitoring.monitor.report import DriftReport

RETRAIN_EVENT = "mlops.retrain.requested"


def model_event_resource(model_name: str) -> str:
    """The Prefect event resource id of a registered model."""
    return f"mlops.model.{model_name}"


@dataclass(frozen=True)
class Window:
    """One judged window, as kept in the history file."""

    at: str
    window: str
    model_version: str
    drift: bool
    decay: bool | None
    rows: int
    retrained: bool = False  # a marker: retraining was started here; earlier alarms are spent

    @property
    def alarm(self) -> bool:
        return not self.retrained and (self.drift or bool(self.decay))


def history_file(monitoring_dir: Path, model_name: str) -> Path:
    """Where a model's judged windows are kept (JSON lines)."""
    return monitoring_dir / model_name / "windows.jsonl"


def read_history(path: Path) -> list[Window]:
    if not path.is_file():
        return []
    windows = []
    for line in path.read_text().splitlines():
        if line.strip():
            windows.append(Window(**json.loads(line)))
    return windows


def append_history(path: Path, window: Window) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(asdict(window)) + "\n")
        handle.flush()


def _counted(history: Sequence[Window], model_version: str) -> list[Window]:
    """Windows judged against `model_version` since retraining was last started for it.

    A retraining whose candidate the gate held back leaves the champion in place; without the
    marker the same old alarms would start another retraining on the next window, and the next.
    """
    counted: list[Window] = []
    for window in history:
        if window.model_version != model_version:
            continue
        if window.retrained:
            counted = []
        else:
            counted.append(window)
    return counted


def sustained(history: Sequence[Window], model_version: str, config: MonitoringConfig) -> tuple[int, int]:
    """(alarms, windows) among the last `config.windows` windows counted for `model_version`."""
    recent = _counted(history, model_version)[-config.windows :]
    return sum(w.alarm for w in recent), len(recent)


def note_retraining(path: Path, model_version: str, window: str) -> None:
    """Record that retraining started on alarms against `model_version` (see `_counted`)."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    append_history(path, Window(at, window, model_version, drift=False, decay=None, rows=0, retrained=True))


def decide(report: DriftReport, history: Sequence[Window], config: MonitoringConfig) -> DriftReport:
    """Set the verdict from this window (already appended to `history`) and those before it."""
    alarms, seen = sustained(history, report.model_version, config)
    report.history = [asdict(w) for w in _counted(history, report.model_version)][-config.windows :]
    causes = []
    if report.drift:
        if report.drifted_features:
            causes.append(f"{len(report.drifted_features)} of {len(report.features)} features drifted")
        if report.score and report.score.drifted:
            causes.append(f"score distance {report.score.js_distance:.3f}")
        if not causes:
            causes.append("drift")
    decay = report.decay or (report.estimated if config.estimated_decay else None)
    if decay and decay.decayed:
        causes.append(
            f"{'estimated ' if decay.estimated else ''}{decay.metric} {decay.current:.4f} vs {decay.baseline:.4f} "
            f"at training (-{decay.drop:.4f}{', no labels' if decay.estimated else ''})"
        )
    this = "; ".join(causes)
    tally = (
        f"{alarms} of the last {seen} window(s) against v{report.model_version} alarmed "
        f"(retrain at {config.min_windows} of {config.windows})"
    )
    if alarms >= config.min_windows:
        report.verdict, report.reason = "retrain", f"{this or 'no alarm in this window'}; {tally}"
    elif causes:
        report.verdict, report.reason = "watching", f"{this}; {tally}"
    elif report.drifted_features:
        report.verdict, report.reason = (
            "stable",
            f"{len(report.drifted_features)} of {len(report.features)} features drifted "
            f"({', '.join(report.drifted_features)}), below the {config.drift_share:.0%} that makes a window drift; "
            f"no decay; {tally}",
        )
    else:
        report.verdict, report.reason = "stable", f"no drift or decay; {tally}"
    return report
