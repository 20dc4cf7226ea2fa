"""`mlops config`: the effective settings, defaults included, as the pipeline will see them."""

from __future__ import annotations

import json
from typing import Annotated

import typer
import yaml

from components.core.config import ConfigError
from components.core.project import ModelNotFound, Project
from flows.cli.common import ConfigOption, _fail, _project, out


def _known(project: Project, name: str) -> str:
    """A model with settings: configured in models/, or registered by an ad-hoc run (it has a contract)."""
    name = project.resolve_name(name)
    if not project.has_model(name) and name not in project.contracted_models():
        known = sorted({*project.model_names(), *project.contracted_models()})
        raise ModelNotFound(f"no model named {name!r}; known models: {', '.join(known) or 'none'}")
    return name


def config(
    config_path: ConfigOption = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="A model: its settings layered over the project's (default: the project's)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the effective settings: the code's defaults, mlops.yaml, the model's file and the
    environment's MLOPS__<SECTION>__<KEY> overrides, merged and validated (passwords redacted)."""
    project = _project(config_path)
    try:
        settings = project.base() if name is None else project.config_for(_known(project, name))
    except ConfigError as exc:
        _fail(str(exc))
    data = settings.model_dump(mode="json")
    if as_json:
        out.print_json(json.dumps(data))
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
