"""Typed pipeline configuration: the code's defaults, one YAML file per layer, environment overrides.

One model's settings are a `PipelineConfig`, one section per concern; each step receives the
section it uses. Environment variables named ``MLOPS__<SECTION>__<KEY>`` override the YAML, e.g.
``MLOPS__PROMOTION__MIN_SCORE=0.8``; ``MLOPS_HOME`` sets the workspace directory.

Modules: `base` (the error, strict sections), `data`, `modeling`, `operations` (the sections by
concern), `pipeline` (the whole), `loading` (files, environment, validation).
"""

from components.core.config.base import DEFAULT_CONFIG_NAME, ENV_PREFIX, ConfigError
from components.core.config.data import (
    CurationConfig,
    DataConfig,
    EstimatorName,
    LabelReviewConfig,
    SplitConfig,
    TaskName,
    ValidationConfig,
)
from components.core.config.loading import dataset_name, find_config_file, load_config, resolve_source
from components.core.config.modeling import (
    CLASSIFICATION_METRICS,
    LOWER_IS_BETTER_METRICS,
    REGRESSION_METRICS,
    EvaluationConfig,
    MetricName,
    ModelConfig,
    OnlineTestConfig,
    PromotionConfig,
    SearchConfig,
)
from components.core.config.operations import (
    AlertEvent,
    AlertsConfig,
    DeployConfig,
    LandingConfig,
    MonitoringConfig,
    PredictionLogConfig,
    PrefectConfig,
    ScheduleConfig,
    ScoringConfig,
    ScoringScheduleConfig,
    ServingConfig,
    WebhookConfig,
)
from components.core.config.pipeline import PipelineConfig

__all__ = [
    "CLASSIFICATION_METRICS",
    "DEFAULT_CONFIG_NAME",
    "ENV_PREFIX",
    "LOWER_IS_BETTER_METRICS",
    "REGRESSION_METRICS",
    "AlertEvent",
    "AlertsConfig",
    "ConfigError",
    "CurationConfig",
    "DataConfig",
    "DeployConfig",
    "EstimatorName",
    "EvaluationConfig",
    "LabelReviewConfig",
    "LandingConfig",
    "MetricName",
    "ModelConfig",
    "MonitoringConfig",
    "OnlineTestConfig",
    "PipelineConfig",
    "PredictionLogConfig",
    "PrefectConfig",
    "PromotionConfig",
    "ScheduleConfig",
    "ScoringConfig",
    "ScoringScheduleConfig",
    "SearchConfig",
    "ServingConfig",
    "SplitConfig",
    "TaskName",
    "ValidationConfig",
    "WebhookConfig",
    "dataset_name",
    "find_config_file",
    "load_config",
    "resolve_source",
]
