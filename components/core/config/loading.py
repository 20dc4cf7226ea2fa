"""Loading: the YAML file, then `MLOPS__<SECTION>__<KEY>` environment overrides (pydantic-settings), validated."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource

from components.core.config.base import DEFAULT_CONFIG_NAME, ENV_PREFIX, ConfigError
from components.core.config.pipeline import PipelineConfig


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _EnvOverrides(EnvSettingsSource):
    """`MLOPS__<SECTION>__<KEY>` variables as nested overrides, read by pydantic-settings from a given
    environment. Values are parsed as YAML, like the file: "0.8" a number, "[a, b]" a list, "null" None."""

    def __init__(self, environ: dict[str, str]) -> None:
        self._environ = environ
        super().__init__(
            PipelineConfig,  # type: ignore[arg-type]  # a plain model: only its fields are read
            case_sensitive=False,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter="__",
        )

    def _load_env_vars(self) -> dict[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{ENV_PREFIX}{field_name.upper()}: not valid YAML: {exc}") from exc


def _nulls(node: Any) -> Any:
    """Empty or `null` scalars mean None, as they do in the YAML file."""
    if isinstance(node, dict):
        return {key: _nulls(value) for key, value in node.items()}
    if isinstance(node, str) and node.strip() in ("", "~", "null", "Null", "NULL"):
        return None
    return node


def env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    unknown = sorted(
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX)
        and name[len(ENV_PREFIX) :].split("__")[0].lower() not in PipelineConfig.model_fields
    )
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in the environment: {', '.join(unknown)}; "
            f"the sections are {', '.join(PipelineConfig.model_fields)}"
        )
    overrides: dict[str, Any] = _nulls(_EnvOverrides(environ)())
    if "MLOPS_HOME" in environ and environ["MLOPS_HOME"].strip():
        overrides["home"] = environ["MLOPS_HOME"]
    return overrides


def resolve_relative(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Resolve paths written in the YAML file relative to the file, not to the current directory."""
    data = dict(data)
    if "home" in data and data["home"] is not None and not Path(data["home"]).expanduser().is_absolute():
        data["home"] = str(base_dir / data["home"])
    if data.get("models_dir") and not Path(data["models_dir"]).expanduser().is_absolute():
        data["models_dir"] = str(base_dir / data["models_dir"])
    validation = data.get("validation")
    if isinstance(validation, dict) and validation.get("suite_dir"):
        suite_dir = Path(validation["suite_dir"])
        if not suite_dir.is_absolute():
            data["validation"] = {**validation, "suite_dir": str(base_dir / suite_dir)}
    source = (data.get("data") or {}).get("source")
    if (
        isinstance(source, str)
        and source
        and "{home}" not in source
        and not re.match(r"^[a-zA-Z][\w+.-]*://", source)
        and not Path(source).expanduser().is_absolute()
    ):
        data["data"] = {**data["data"], "source": str(base_dir / source)}
    return data


def find_config_file(start: Path | None = None) -> Path | None:
    """The config named by MLOPS_CONFIG, else the nearest mlops.yaml from `start` upwards."""
    named = os.environ.get("MLOPS_CONFIG")
    if named:
        return Path(named)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / DEFAULT_CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def read_yaml(path: Path) -> dict[str, Any]:
    """A settings file's mapping of sections; a clear error when it is missing, not YAML or not a mapping."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded


def validated(data: dict[str, Any], where: str = "") -> PipelineConfig:
    """The merged settings as a `PipelineConfig`; every problem named by its dotted key."""
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid configuration{where}: {problems}") from exc


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> PipelineConfig:
    """Load the YAML config (if any), apply environment overrides, and validate."""
    environ = dict(os.environ if environ is None else environ)
    data = resolve_relative(read_yaml(path), path.resolve().parent) if path is not None else {}
    return validated(deep_merge(data, env_overrides(environ)), f" in {path}" if path else "")


def dataset_name(config: PipelineConfig) -> str:
    """The dataset's name: it names the suite, the experiment and the registered model."""
    from components.data.extract import dataset_name_for

    if config.data.name:
        return config.data.name
    if not config.data.source:
        raise ConfigError("no data source: set data.source in the config or pass --data")
    return dataset_name_for(config.data.source)


def resolve_source(config: PipelineConfig, home: Path) -> str:
    """The training data source with `{home}` expanded to the workspace root."""
    if not config.data.source:
        raise ConfigError("no data source: set data.source in the config or pass --data")
    if not config.data.target:
        raise ConfigError("no target column: set data.target in the config or pass --target")
    return config.data.source.replace("{home}", str(home))
