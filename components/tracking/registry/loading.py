"""Model loading without running foreign code (skops, the project's allow-list), and local copies."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.tracking.registry.connection import RegistryError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# What a model file may hold, kept by the project rather than read from the model's own files
# (MLflow takes skops's trusted list from the MLmodel file, which whoever wrote the model wrote):
# scikit-learn's estimators and transformers, and the few NumPy objects the pipelines use.
TRUSTED_TYPE_PREFIXES = ("sklearn.",)
TRUSTED_TYPES = frozenset({"numpy.clip", "numpy.dtype"})
SAFE_FORMAT = "skops"


class UnsafeModel(RegistryError):
    """A model whose files could run foreign code when loaded (pickle, shipped code, untrusted types)."""


def _trusted(type_name: str) -> bool:
    return type_name.startswith(TRUSTED_TYPE_PREFIXES) or type_name in TRUSTED_TYPES


def trusted_types(model: Pipeline) -> list[str]:
    """The types skops must be told to trust for this pipeline; refuses anything unexpected."""
    import skops.io

    types = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = [t for t in types if not _trusted(t)]
    if foreign:
        raise UnsafeModel(f"refusing to trust types outside the project's allow-list in the model: {foreign}")
    return list(types)


def load_model(model_uri: str) -> Any:
    """Load a logged scikit-learn pipeline (e.g. `models:/name@champion`, or a local model folder),
    without running foreign code: see `load_model_folder`."""
    folder = Path(model_uri)
    if not (folder / "MLmodel").is_file():
        from mlflow.artifacts import download_artifacts

        folder = Path(download_artifacts(artifact_uri=model_uri))
    return load_model_folder(folder, model_uri)


def load_model_folder(folder: Path, shown: str | None = None) -> Any:
    """The pipeline in a local MLflow model folder, loaded only in the skops format and only when
    every type in it is on the project's allow-list (`TRUSTED_TYPE_PREFIXES`, `TRUSTED_TYPES`).

    MLflow's own loader obeys the model's MLmodel file: it unpickles when the file says pickle, and
    trusts whatever types the file lists, so anyone who can write an artifact or move an alias could
    run code in the service, in training's champion comparison, in scoring and in monitoring. This
    loader decides from the project's list instead, ignores code the model ships, and raises
    `UnsafeModel` naming what it refused.
    """
    import skops.io
    import yaml

    shown = shown or str(folder)
    try:
        meta = yaml.safe_load((folder / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"{shown}: no readable MLmodel file: {exc}") from exc
    flavor = (meta.get("flavors") or {}).get("sklearn")
    if not isinstance(flavor, dict):
        raise UnsafeModel(f"{shown} is not a scikit-learn model (flavors: {sorted(meta.get('flavors') or {})})")
    form = flavor.get("serialization_format", "pickle")
    if form != SAFE_FORMAT:
        raise UnsafeModel(
            f"{shown} is serialised as {form!r}: refused, loading it could run any code; only {SAFE_FORMAT} "
            "models load (the project logs every model that way)"
        )
    if flavor.get("code"):
        raise UnsafeModel(f"{shown} ships code ({flavor['code']!r}) to put on the import path: refused")
    file = (folder / str(flavor.get("pickled_model", ""))).resolve()
    if folder.resolve() not in file.parents or not file.is_file():
        raise UnsafeModel(f"{shown}: its model file {flavor.get('pickled_model')!r} is not a file inside the model")
    try:
        types = skops.io.get_untrusted_types(file=file)
    except Exception as exc:  # a file skops cannot parse is refused, whatever the parse error
        raise UnsafeModel(f"{shown}: not a readable skops file: {type(exc).__name__}: {exc}") from exc
    foreign = sorted(t for t in types if not _trusted(t))
    if foreign:
        raise UnsafeModel(f"{shown} holds types outside the project's allow-list: {foreign}: refused")
    return skops.io.load(file, trusted=list(types))


def download_model(name: str, version: str, dest: Path, run_id: str | None = None) -> Path:
    """A registered version's model folder, downloaded once to `dest` (a version never changes).

    Batch workers load this local copy (`load_model(str(path))`) instead of asking the registry.
    A copy from another run (a different tracking server behind the same workspace) is replaced;
    the download lands under a temporary name first, so a crash never leaves a half model.
    """
    import shutil
    import uuid

    import mlflow.artifacts
    import yaml

    def matches(folder: Path) -> bool:
        try:
            meta = yaml.safe_load((folder / "MLmodel").read_text()) or {}
        except (OSError, yaml.YAMLError):
            return False
        return run_id is None or meta.get("run_id") == run_id

    if matches(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(staging)))
        if not (local / "MLmodel").is_file():
            raise RegistryError(f"models:/{name}/{version} has no MLmodel file; is it a logged model?")
        if dest.exists() and not matches(dest):
            shutil.rmtree(dest)
        try:
            local.rename(dest)
        except OSError:
            if not matches(dest):  # not a concurrent download that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def download_artifact(run_id: str, artifact_path: str, dest: Path) -> Path | None:
    """One artifact of a run, downloaded once to `dest` (a run's artifacts never change); None if absent."""
    import shutil
    import uuid

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(staging))
            )
        except (MlflowException, OSError) as exc:
            absent = getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"
            if (
                absent
                or "No such file" in str(exc)
                or "does not exist" in str(exc)
                or isinstance(exc, FileNotFoundError)
            ):
                return None
            raise
        if not local.is_file():
            return None
        local.replace(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
