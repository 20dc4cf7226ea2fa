"""What every section shares: strict, frozen models, and the error a bad setting raises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from components.core.errors import UserError

ENV_PREFIX = "MLOPS__"
DEFAULT_CONFIG_NAME = "mlops.yaml"


class ConfigError(UserError, ValueError):
    """The configuration file or an override is invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
