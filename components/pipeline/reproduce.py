"""Reproducing a registered version from what its run recorded.

Each training run logs its inputs beside the model (`record_inputs`): the rows as validated (an
immutable Parquet snapshot, whatever happens to the source later), the resolved settings and the
data contract; the code commit and the seed are already on the run. `reproduce` retrains from
those, in memory (nothing is registered), and compares the held-out metrics with the run's.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from components.core.config import PipelineConfig
from components.core.errors import UserError
from components.data import contract
from components.pipeline.results import Validated
from components.tracking import registry
from components.tracking.runlog import MemoryRun

LOG = logging.getLogger("mlops.reproduce")
INPUTS = "inputs"
ROWS, SETTINGS, SUITE = "rows.parquet", "config.json", "suite.json"
COMMIT_TAG = "mlflow.source.git.commit"


class NotReproducible(UserError):
    """The version's run did not record what a retraining needs."""


def record_inputs(run_id: str, config: PipelineConfig, frame: pd.DataFrame, suite_path: Path) -> bool:
    """Log the validated rows, the settings (alerts left out) and the contract to the run; False
    (with a warning) when the rows cannot be written as Parquet."""
    with tempfile.TemporaryDirectory() as folder:
        rows = Path(folder) / ROWS
        try:
            frame.to_parquet(rows, index=False)
        except (ValueError, TypeError, ImportError, OSError) as exc:  # pyarrow's errors subclass these
            LOG.warning("the training rows were not snapshotted (mlops reproduce will refuse): %s", exc)
            return False
        registry.log_artifact(run_id, rows, INPUTS)
    settings = config.model_dump(mode="json", exclude={"alerts"})
    registry.log_dict(run_id, settings, f"{INPUTS}/{SETTINGS}")
    if suite_path.exists():
        registry.log_dict(run_id, json.loads(suite_path.read_text()), f"{INPUTS}/{SUITE}")
    return True


@dataclass(frozen=True)
class MetricCheck:
    name: str
    recorded: float
    reproduced: float | None

    @property
    def difference(self) -> float | None:
        return None if self.reproduced is None else abs(self.reproduced - self.recorded)


@dataclass(frozen=True)
class Reproduction:
    """How a retraining from the recorded inputs compares with the recorded run."""

    name: str
    version: str
    run_id: str
    tolerance: float
    rows: int
    metrics: list[MetricCheck] = field(default_factory=list)
    recorded_commit: str | None = None
    current_commit: str | None = None

    @property
    def matches(self) -> bool:
        return bool(self.metrics) and all(
            m.difference is not None and m.difference <= self.tolerance for m in self.metrics
        )

    @property
    def same_code(self) -> bool | None:
        if self.recorded_commit is None or self.current_commit is None:
            return None
        return self.recorded_commit == self.current_commit

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "rows": self.rows,
            "tolerance": self.tolerance,
            "matches": self.matches,
            "same_code": self.same_code,
            "recorded_commit": self.recorded_commit,
            "current_commit": self.current_commit,
            "metrics": [
                {"name": m.name, "recorded": m.recorded, "reproduced": m.reproduced, "difference": m.difference}
                for m in self.metrics
            ],
        }


def _download(run_id: str, name: str, folder: Path) -> Path | None:
    return registry.download_artifact(run_id, f"{INPUTS}/{name}", folder / name)


def _settings(recorded: dict[str, Any], name: str, rows: Path, home: Path, suite_dir: Path) -> PipelineConfig:
    """The recorded settings, reading the snapshot in this workspace with the recorded contract."""
    recorded = {**recorded, "home": str(home)}
    recorded["data"] = {**recorded["data"], "source": str(rows), "query": None, "name": name}
    recorded["validation"] = {**recorded["validation"], "suite_dir": str(suite_dir), "create_missing_suite": True}
    return PipelineConfig.model_validate(recorded)


def reproduce(client: Any, name: str, version: str, home: Path, tolerance: float = 1e-6) -> Reproduction:
    """Retrain `name` v`version` from its run's recorded inputs (in memory; nothing is registered)
    and compare its held-out metrics with the run's."""
    from components.pipeline.run import Steps, run_training

    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        raise NotReproducible(f"{name} v{version} has no training run")
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        rows, settings = _download(run_id, ROWS, folder), _download(run_id, SETTINGS, folder)
        if rows is None or settings is None:
            raise NotReproducible(
                f"{name} v{version} (run {run_id}) did not record its training rows and settings "
                "(trained before snapshots, or with data.snapshot: false): it cannot be reproduced"
            )
        suite = _download(run_id, SUITE, folder)
        config = _settings(json.loads(settings.read_text()), name, rows, home, folder / "suites")
        if suite is not None:
            contract.save_suite(json.loads(suite.read_text()), contract.suite_path(folder / "suites", name))
        frame = pd.read_parquet(rows)
        record = MemoryRun()

        def as_validated(*args: Any, **kwargs: Any) -> Validated:  # the rows passed the contract when recorded
            return Validated(frame=frame, judgement="recorded", why=f"the rows run {run_id} validated")

        run_training(config, record=record, steps=Steps(validate=as_validated))
    recorded = {k: v for k, v in run.data.metrics.items() if k.startswith("test_") and k != "test_rows"}
    checks = [MetricCheck(k, v, record.metrics.get(k)) for k, v in sorted(recorded.items())]
    return Reproduction(
        name,
        version,
        run_id,
        tolerance,
        len(frame),
        checks,
        run.data.tags.get(COMMIT_TAG),
        registry.git_commit(),
    )
