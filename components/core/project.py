"""A project: project-wide defaults in `mlops.yaml` and one file per model in `models/<name>.yaml`.

A model's settings are the project file's sections, then its own file's, then the environment's
`MLOPS__<SECTION>__<KEY>` overrides, validated as one `PipelineConfig`. What describes one dataset
(its source and columns, task, metric and floors, slices, assumptions, label and scoring files)
may only appear in a model's file, so nothing of one model leaks into another; the workspace is
the project's (`home`, `models_dir` only in `mlops.yaml`).

A model registered by an ad-hoc `mlops run --data F --target T` has no file: its column roles come
from the contract profiled for it (`expectations/<name>.json` records target, id, time and task).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.core.config import ConfigError, PipelineConfig
from components.core.config.loading import (
    deep_merge,
    env_overrides,
    find_config_file,
    read_yaml,
    resolve_relative,
    validated,
)

MODEL_FILE_SUFFIXES = (".yaml", ".yml")
# Keys that describe one model's dataset: never project-wide.
MODEL_ONLY: tuple[tuple[str, ...], ...] = (
    ("data",),
    ("task",),
    ("assumptions",),
    ("evaluation", "slices"),
    ("promotion", "metric"),
    ("promotion", "min_score"),
    ("promotion", "floors"),
    ("search", "metric"),
    ("monitoring", "labels"),
    ("deploy", "scoring", "input"),
    ("deploy", "scoring", "output"),
)
# Keys of the whole project: one workspace, one models folder.
PROJECT_ONLY = ("home", "models_dir")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ModelNotFound(ConfigError):
    """No model of that name is configured or registered; the message names the choices."""


def _has(data: dict[str, Any], keys: tuple[str, ...]) -> bool:
    node: Any = data
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return node is not None and node != [] and node != {}


def check_name(name: str) -> str:
    """A model name usable as a file name, an MLflow registered model and a Prefect deployment."""
    if not NAME.match(name):
        raise ConfigError(
            f"model name {name!r} may hold letters, digits, '_', '-' and '.', and must start with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Project:
    """The project file's defaults and the model files next to it."""

    config_file: Path | None
    root: Path
    defaults: dict[str, Any]
    environ: dict[str, str] = field(default_factory=dict, repr=False)

    def _anchored(self) -> dict[str, Any]:
        """The project's defaults, with the code's relative defaults (workspace, contracts) anchored
        at the project's folder rather than the current directory."""
        code = {"home": str(self.root / ".mlops"), "validation": {"suite_dir": str(self.root / "expectations")}}
        return deep_merge(code, self.defaults)

    @property
    def models_dir(self) -> Path:
        return Path(self.defaults.get("models_dir") or self.root / "models")

    def model_file(self, name: str) -> Path:
        for suffix in MODEL_FILE_SUFFIXES:
            path = self.models_dir / f"{name}{suffix}"
            if path.is_file():
                return path
        return self.models_dir / f"{name}.yaml"

    def model_names(self) -> list[str]:
        """The configured models: one per `models/<name>.yaml` (names starting with _ or . are skipped)."""
        if not self.models_dir.is_dir():
            return []
        names = {
            p.stem
            for p in self.models_dir.iterdir()
            if p.suffix in MODEL_FILE_SUFFIXES and p.is_file() and not p.name.startswith(("_", "."))
        }
        return sorted(names)

    def has_model(self, name: str) -> bool:
        return self.model_file(name).is_file()

    def base(self) -> PipelineConfig:
        """The project defaults alone (workspace, servers): for commands that act on no one model."""
        data = deep_merge(self._anchored(), env_overrides(self.environ))
        return validated(data, f" in {self.config_file}" if self.config_file else "")

    def model_config(self, name: str) -> PipelineConfig:
        """One configured model's settings: project defaults, its own file, then the environment."""
        path = self.model_file(name)
        if not path.is_file():
            raise ModelNotFound(f"no model {name!r} is configured: {path} does not exist{self._choices()}")
        own = read_yaml(path)
        stray = [key for key in PROJECT_ONLY if key in own]
        if stray:
            raise ConfigError(f"{path}: {', '.join(stray)} belong(s) to the project, in {self._project_file_name()}")
        data_section = own.get("data") or {}
        if not isinstance(data_section, dict):
            raise ConfigError(f"{path}: data must be a mapping")
        given = data_section.get("name")
        if given is not None and given != name:
            raise ConfigError(f"{path}: data.name is {given!r}, but a model file's name is its model's ({name!r})")
        own = resolve_relative({**own, "data": {**data_section, "name": name}}, self.root)
        merged = deep_merge(deep_merge(self._anchored(), own), env_overrides(self.environ))
        return validated(merged, f" in {path}")

    def adhoc_config(self, data: dict[str, Any], task: str | None = None, **sections: Any) -> PipelineConfig:
        """Project defaults for a model without a file: its data (and task) given here."""
        own: dict[str, Any] = {"data": {k: v for k, v in data.items() if v is not None}}
        if task:
            own["task"] = task
        own.update({k: v for k, v in sections.items() if v is not None})
        merged = deep_merge(deep_merge(self._anchored(), own), env_overrides(self.environ))
        return validated(merged, "")

    def registered_config(self, name: str) -> PipelineConfig:
        """A model without a file (registered by an ad-hoc run): its column roles from its contract."""
        from components.data.contract import ContractError, load_suite, suite_path

        base = self.base()
        try:
            meta = load_suite(suite_path(base.validation.suite_dir, name)).get("meta") or {}
        except ContractError:
            meta = {}
        roles = {key: meta.get(key) for key in ("target", "id_column", "time_column")}
        return self.adhoc_config({"name": name, **roles}, task=meta.get("task"))

    def config_for(self, name: str) -> PipelineConfig:
        """A model's settings: its file when it has one, else what its contract records."""
        return self.model_config(name) if self.has_model(name) else self.registered_config(name)

    def contracted_models(self) -> list[str]:
        """Models with a data contract in the suite folder (configured or registered by an ad-hoc run)."""
        folder = self.base().validation.suite_dir
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith(("_", ".")))

    def resolve_name(self, name: str | None, what: str = "this command") -> str:
        """The model a command acts on: the one named, or the only one configured."""
        if name:
            return check_name(name)
        names = self.model_names()
        if len(names) == 1:
            return names[0]
        if not names:
            raise ModelNotFound(
                f"no model is configured in {self.models_dir}: create one with "
                "`mlops init --data FILE --target COLUMN`, or pass --name"
            )
        raise ModelNotFound(f"{len(names)} models are configured ({', '.join(names)}): {what} needs --name")

    def _choices(self) -> str:
        names = self.model_names()
        return f"; configured models: {', '.join(names)}" if names else "; create it with `mlops init`"

    def _project_file_name(self) -> str:
        return str(self.config_file) if self.config_file else "mlops.yaml"


def load_project(path: Path | str | None = None, environ: dict[str, str] | None = None) -> Project:
    """The project file (MLOPS_CONFIG, else the nearest mlops.yaml), checked to hold project-wide
    settings only; without one, the current directory with the code's defaults."""
    environ = dict(os.environ if environ is None else environ)
    path = Path(path) if path else find_config_file()
    if path is None:
        return Project(None, Path.cwd().resolve(), {}, environ)
    loaded = read_yaml(path)
    misplaced = [".".join(keys) for keys in MODEL_ONLY if _has(loaded, keys)]
    if misplaced:
        raise ConfigError(
            f"{path}: {', '.join(misplaced)} describe(s) one model's dataset and belong(s) in that model's own "
            f"file, models/<name>.yaml (`mlops init --data FILE --target COLUMN` writes one); {path.name} "
            "holds project-wide defaults only"
        )
    root = path.resolve().parent
    defaults = resolve_relative(loaded, root)
    project = Project(path, root, defaults, environ)
    project.base()  # fail early on an invalid project file
    return project


def models_with_columns(project: Project, columns: list[str], target: str, overlap: float = 0.8) -> list[str]:
    """Models whose contract describes data with (nearly) these columns and this target: a file of such
    columns is most likely a batch of that model, not a new one."""
    from components.data.contract import ContractError, expected_columns, load_suite, suite_path

    found = []
    given = set(columns)
    folder = project.base().validation.suite_dir
    for name in sorted(set(project.model_names()) | set(project.contracted_models())):
        try:
            suite = load_suite(suite_path(folder, name))
        except ContractError:
            continue
        expected = set(expected_columns(suite))
        own_target = (suite.get("meta") or {}).get("target")
        if not expected or target not in expected or own_target not in (None, target):
            continue
        shared = len(expected & given)
        if shared >= overlap * len(expected) and shared >= overlap * len(given):
            found.append(name)
    return found
