"""The whole pipeline's settings: every section, one model's `PipelineConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from components.core.config.base import _Section
from components.core.config.data import (
    CurationConfig,
    DataConfig,
    LabelReviewConfig,
    SplitConfig,
    TaskName,
    ValidationConfig,
)
from components.core.config.modeling import EvaluationConfig, ModelConfig, PromotionConfig, SearchConfig
from components.core.config.operations import (
    AlertsConfig,
    DeployConfig,
    MonitoringConfig,
    PrefectConfig,
    ScoringConfig,
    ServingConfig,
)


class PipelineConfig(_Section):
    """The whole pipeline's settings; flows take it as their only parameter."""

    home: Path = Field(default=Path(".mlops"), description="Workspace directory holding all state.")
    models_dir: Path = Field(
        default=Path("models"), description="Where each model's own settings live, one `<name>.yaml` per model."
    )
    seed: int = 42
    task: TaskName | None = Field(
        default=None, description="binary, multiclass or regression; default: inferred from the target column."
    )
    assumptions: tuple[str, ...] = Field(default=(), description="Documented assumptions about the data.")
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    curation: CurationConfig = CurationConfig()
    label_review: LabelReviewConfig = LabelReviewConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    search: SearchConfig = SearchConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    promotion: PromotionConfig = PromotionConfig()
    serving: ServingConfig = ServingConfig()
    scoring: ScoringConfig = ScoringConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    deploy: DeployConfig = DeployConfig()
    prefect: PrefectConfig = PrefectConfig()
    alerts: AlertsConfig = AlertsConfig()

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    def with_overrides(self, **sections: dict[str, Any]) -> PipelineConfig:
        """Return a copy with some fields of some sections replaced (None values are ignored)."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section].update({k: v for k, v in values.items() if v is not None})
        return PipelineConfig.model_validate(data)
