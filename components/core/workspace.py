"""The workspace: every piece of state lives below one directory (MLOPS_HOME)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """Paths of the embedded default state, derived from one root."""

    root: Path

    @classmethod
    def at(cls, root: Path) -> Workspace:
        return cls(root.expanduser().resolve())

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow" / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlflow" / "artifacts"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def gx_dir(self) -> Path:
        return self.root / "gx"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def monitoring(self) -> Path:
        return self.root / "monitoring"

    @property
    def alerts(self) -> Path:
        return self.root / "alerts"

    @property
    def labels(self) -> Path:
        """Labels taken back from the label queue, per model (monitoring always reads them)."""
        return self.root / "labels"

    @property
    def label_queue(self) -> Path:
        """The rows written for people to label, per model (`mlops label-queue`)."""
        return self.root / "label-queue"

    def accepted_batches(self, dataset: str) -> Path:
        """Ledger of batch files the contract accepted, so unchanged ones are not re-validated alone."""
        return self.root / "contract" / f"{dataset}_accepted.json"

    def rows_set_aside(self, dataset: str) -> Path:
        """Ledger of batch files whose broken rows are already in quarantine (not written again)."""
        return self.root / "contract" / f"{dataset}_rows_set_aside.json"

    def model_cache(self, name: str, version: str) -> Path:
        """A registered model version downloaded for batch scoring (versions never change)."""
        return self.root / "cache" / "models" / name / version

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    def ensure(self) -> Workspace:
        """Create the directories, private to their owner (0700); called by entry points, never at import.

        The workspace holds the registry database, prediction logs with request features, logs and
        keys: an existing workspace root readable by others is made private again.
        """
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = self.root.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            self.root.chmod(0o700)
        for path in (
            self.mlflow_db.parent,
            self.mlflow_artifacts,
            self.gx_dir,
            self.reports,
            self.landing,
            self.quarantine,
            self.data,
            self.predictions,
            self.prefect_home,
        ):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self
