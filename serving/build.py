"""`mlops build`: pack the current champion into a Bento that serves without the tracking server."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from components.core.errors import UserError
from components.core.secrets import has_password
from serving.champion import BUNDLE_METADATA, BUNDLE_MODEL_DIR

# What the service imports at run time (components.core.config/scoring/predlog, serving.*, mlflow's loader).
SERVING_PACKAGES = (
    "bentoml",
    "mlflow",
    "scikit-learn",
    "skops",
    "scipy",
    "pandas",
    "numpy",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "fastapi",
    "threadpoolctl",
    # uvicorn's C HTTP parser and event loop: with the pure-Python ones a request costs ~30% more CPU.
    "httptools",
    "uvloop",
    "orjson",
)


class BuildError(UserError, RuntimeError):
    """The Bento cannot be built."""


@dataclass(frozen=True)
class Built:
    bento_tag: str
    model_tag: str
    model_name: str
    model_version: str
    path: Path


def pinned_packages(packages: tuple[str, ...] = SERVING_PACKAGES) -> list[str]:
    """`name==version` for each package as installed here (the versions uv.lock chose)."""
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError as exc:
            raise BuildError(f"{package} is not installed; run `make venv`") from exc
    return pins


def bento_name(model_name: str) -> str:
    """A BentoML tag name (lowercase letters, digits, '-', '_', '.') for a registered model."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", model_name.lower()).strip("-._")
    return name or "model"


def bundle_champion(client: Any, name: str, version: str, id_column: str | None = None) -> str:
    """Copy one registered version into the BentoML model store; returns the BentoML model tag.

    `id_column`: the model's row id, accepted (and logged) by the bundled service besides the features."""
    import bentoml
    import bentoml.exceptions

    from components.tracking import registry

    labels = {"registered_model": bento_name(name), "registered_version": str(version)}
    try:
        bundled = bentoml.models.list(f"{bento_name(name)}-model")
    except bentoml.exceptions.NotFound:  # the first build of this model
        bundled = []
    for existing in bundled:
        if existing.info.labels == labels and (Path(existing.path) / BUNDLE_METADATA).is_file():
            return str(existing.tag)  # this version is already bundled: models are immutable
    details = client.get_model_version(name, version)
    tags = dict(details.tags or {})
    meta = {
        "name": name,
        "version": str(version),
        "run_id": details.run_id or tags.get("run_id"),
        "data_fingerprint": tags.get("data_fingerprint"),
        "id_column": id_column,
        "bundled_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with bentoml.models.create(
        f"{bento_name(name)}-model",
        labels=labels,
        metadata=meta,
    ) as model:
        registry.download_model(name, version, Path(model.path) / BUNDLE_MODEL_DIR, meta["run_id"])
        (Path(model.path) / BUNDLE_METADATA).write_text(json.dumps(meta, indent=2))
    return str(model.tag)


CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml", ".cfg", ".ini", ".env")


def check_no_credentials(project_root: Path, include: list[str]) -> None:
    """Refuse to build when a config file the Bento would copy holds a password (in a data source
    URL, say): it would ship inside the Bento and every image made from it."""
    for pattern in include:
        for path in sorted(project_root.glob(pattern)):
            if not path.is_file() or path.suffix not in CONFIG_SUFFIXES:
                continue
            if has_password(path.read_text(errors="replace")):
                raise BuildError(
                    f"{path.relative_to(project_root)} holds a password and would be copied into the Bento and its "
                    "image: leave it out of the URL and set MLOPS_DATA_PASSWORD where the data is read"
                )


def build_bento(
    project_root: Path, bentofile: Path, work_dir: Path, model_tag: str, model_name: str, version: str
) -> str:
    """Build the Bento described by `bentofile` with the bundled model; returns the Bento tag."""
    import bentoml

    options: dict[str, Any] = yaml.safe_load(bentofile.read_text()) or {}
    check_no_credentials(project_root, options.get("include") or [])
    service = options.pop("service", "serving.service:PredictionService")
    python = dict(options.pop("python", None) or {})
    python["packages"] = sorted(set(python.get("packages") or []) | set(pinned_packages()))
    envs = [e for e in options.pop("envs", None) or [] if e.get("name") != "MLOPS_BUNDLED_MODEL"]
    envs += [{"name": "MLOPS_BUNDLED_MODEL", "value": model_tag}, {"name": "MLOPS_MODEL_NAME", "value": model_name}]
    labels = {**(options.pop("labels", None) or {}), "registered_model": bento_name(model_name), "version": version}
    models = [*(options.pop("models", None) or []), model_tag]
    spec = {
        **options,
        "service": service,
        "name": bento_name(model_name),
        "labels": labels,
        "python": python,
        "envs": envs,
        "models": models,
    }
    generated = work_dir / "bentofile.yaml"
    generated.parent.mkdir(parents=True, exist_ok=True)
    generated.write_text(yaml.safe_dump(spec, sort_keys=False))
    previous = os.environ.get("MLOPS_BUNDLED_MODEL")
    # The service reads its schema from the bundled copy while BentoML inspects it.
    os.environ["MLOPS_BUNDLED_MODEL"] = model_tag
    try:
        bento = bentoml.bentos.build_bentofile(str(generated), build_ctx=str(project_root))
    finally:
        if previous is None:
            os.environ.pop("MLOPS_BUNDLED_MODEL", None)
        else:
            os.environ["MLOPS_BUNDLED_MODEL"] = previous
    return str(bento.tag)
