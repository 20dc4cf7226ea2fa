"""Where a pipeline step records what it did: an MLflow run, or memory.

Every training step takes a `RunLog` and records its metrics, tags and artifacts through it. A
run of `mlops run` records into its MLflow run (`MlflowRun`); a plain script or a benchmark that
wants no tracking server records into a `MemoryRun`, which keeps everything for inspection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class RunLog(Protocol):
    """What a step records: the methods of an MLflow run, without its id."""

    @property
    def run_id(self) -> str | None: ...

    def log_metrics(self, metrics: Mapping[str, float]) -> None: ...

    def log_params(self, params: dict[str, Any]) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def log_dict(self, data: Any, artifact_file: str) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def log_figure(self, figure: Any, artifact_file: str) -> None: ...


@dataclass(frozen=True)
class MlflowRun:
    """Records into one MLflow run (through the registry adapter, so the tracking URI is the workspace's)."""

    id: str

    @property
    def run_id(self) -> str | None:
        return self.id

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        from components.tracking import registry

        registry.log_metrics(self.id, dict(metrics))

    def log_params(self, params: dict[str, Any]) -> None:
        from components.tracking import registry

        registry.log_params(self.id, params)

    def set_tags(self, tags: dict[str, str]) -> None:
        from components.tracking import registry

        registry.set_tags(self.id, tags)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        from components.tracking import registry

        registry.log_dict(self.id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        from components.tracking import registry

        registry.log_text(self.id, text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        from components.tracking import registry

        registry.log_artifact(self.id, path, artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        from components.tracking import registry

        registry.log_figure(self.id, figure, artifact_file)


@dataclass
class MemoryRun:
    """Keeps what the steps record in memory: for plain scripts, benchmarks and tests.

    Figures are kept as their rendered bytes; artifacts as the path they were logged from (the caller owns
    the file). `run_id` is None: nothing is registered from a memory run.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str | None:
        return None

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self.metrics.update({k: float(v) for k, v in metrics.items()})

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update({k: str(v) for k, v in params.items()})

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.artifacts[artifact_file] = json.loads(json.dumps(data, default=str))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.artifacts[artifact_file] = text

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.artifacts[f"{artifact_path}/{path.name}" if artifact_path else path.name] = str(path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        import io

        buffer = io.BytesIO()  # rendered as MLflow renders it: the cost of a plot is its PNG
        figure.savefig(buffer, format=Path(artifact_file).suffix.lstrip(".") or "png")
        self.artifacts[artifact_file] = buffer.getvalue()
