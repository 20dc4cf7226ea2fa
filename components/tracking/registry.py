"""MLflow adapter: tracking runs, logging the pipeline, and the registry's `champion` alias."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from components.core.errors import UserError
from components.core.faults import fault_point
from components.core.logs import DROP, quiet
from components.core.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from sklearn.pipeline import Pipeline

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
MODEL_ARTIFACT = "model"
# What the logged model needs at serving time; pinned to what trained it.
RUNTIME_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "skops", "mlflow")
# What a model file may hold, kept by the project rather than read from the model's own files
# (MLflow takes skops's trusted list from the MLmodel file, which whoever wrote the model wrote):
# scikit-learn's estimators and transformers, and the few NumPy objects the pipelines use.
TRUSTED_TYPE_PREFIXES = ("sklearn.",)
TRUSTED_TYPES = frozenset({"numpy.clip", "numpy.dtype"})
SAFE_FORMAT = "skops"


class RegistryError(UserError, RuntimeError):
    """The tracking server or model registry refused an operation."""


class UnsafeModel(RegistryError):
    """A model whose files could run foreign code when loaded (pickle, shipped code, untrusted types)."""


def _trusted(type_name: str) -> bool:
    return type_name.startswith(TRUSTED_TYPE_PREFIXES) or type_name in TRUSTED_TYPES


@dataclass(frozen=True)
class ChampionInfo:
    """The model version the `champion` alias points at."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    promoted_at: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{CHAMPION}"


# mlflow.set_tracking_uri/set_registry_uri also export MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI;
# values this process exported itself are not a user's choice and must not pin later workspaces.
_EXPORTED: set[str] = set()


def _user_uri(variable: str) -> str | None:
    value = os.environ.get(variable)
    return value if value and value not in _EXPORTED else None


def tracking_uri(workspace: Workspace) -> str:
    """MLFLOW_TRACKING_URI when the user set it (a real server), else the workspace's SQLite store."""
    return _user_uri("MLFLOW_TRACKING_URI") or workspace.tracking_uri


def is_embedded(uri: str, workspace: Workspace) -> bool:
    return uri == workspace.tracking_uri


def connect(workspace: Workspace) -> MlflowClient:
    """Point MLflow at the configured store and return a client for it."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(workspace)
    if is_embedded(uri, workspace):
        workspace.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
        workspace.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    registry = _user_uri("MLFLOW_REGISTRY_URI") or uri
    if is_embedded(uri, workspace):
        _EXPORTED.add(uri)  # exported by the two calls below; a user's server URI is never added
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    return MlflowClient()


def ensure_experiment(client: MlflowClient, name: str, workspace: Workspace) -> str:
    """The experiment's id; on the embedded store its artifacts live under the workspace."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_location = None
    if is_embedded(tracking_uri(workspace), workspace):
        artifact_location = (workspace.mlflow_artifacts / name).as_uri()
    return str(client.create_experiment(name, artifact_location=artifact_location))


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the code that runs, when it runs from a git checkout."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=start or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def pip_requirements() -> list[str]:
    """Exact versions of the serving-time packages, so MLflow need not infer them (seconds)."""
    pins = []
    for package in RUNTIME_PACKAGES:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def trusted_types(model: Pipeline) -> list[str]:
    """The types skops must be told to trust for this pipeline; refuses anything unexpected."""
    import skops.io

    types = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = [t for t in types if not _trusted(t)]
    if foreign:
        raise UnsafeModel(f"refusing to trust types outside the project's allow-list in the model: {foreign}")
    return list(types)


def signature_frame(X: pd.DataFrame) -> pd.DataFrame:
    """Integer features declared as doubles: a missing value at serving time must not break the schema."""
    return X.astype({c: "float64" for c in X.columns if pd.api.types.is_integer_dtype(X[c].dtype)})


SIGNATURE_SAMPLE_ROWS = 500


def signature_sample(X: pd.DataFrame, rows: int = SIGNATURE_SAMPLE_ROWS) -> pd.DataFrame:
    """A few rows that show every column's type and, where any value is missing, a missing one.

    Inferring a signature walks every value; on a million rows that alone takes seconds,
    while the schema only needs types and which columns may be null.
    """
    head = X.head(rows)
    missing = X.isna().any()
    extra = [int(X[c].isna().to_numpy().argmax()) for c in X.columns if missing[c] and not head[c].isna().any()]
    sample = pd.concat([head, X.iloc[sorted(set(extra))]]) if extra else head
    return signature_frame(sample)


def log_model(
    run_id: str,
    model: Pipeline,
    X_example: pd.DataFrame,
    info: dict[str, Any] | None = None,
    name: str = MODEL_ARTIFACT,
) -> str:
    """Log the fitted pipeline with signature and input example; returns the model URI.

    `info` (the task, a prediction interval, ...) is kept in the MLmodel file's metadata under
    `mlops`, where every loader of the model reads it (`scoring.read_model_info`).
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from components.inference.scoring import MODEL_METADATA_KEY

    example = signature_frame(X_example.head(5))
    sample = signature_sample(X_example)
    signature = infer_signature(sample, model.predict(sample))
    _quiet_pip_version_warning()
    with mlflow.start_run(run_id=run_id):
        logged = mlflow.sklearn.log_model(
            model,
            name=name,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            skops_trusted_types=trusted_types(model),
            metadata={MODEL_METADATA_KEY: info} if info else None,
        )
    return str(logged.model_uri)


def _quiet_pip_version_warning() -> None:
    """uv's environments have no pip: MLflow warns on every model it logs that conda.yaml gets an
    unpinned `pip`. The model's own requirements are pinned (`pip_requirements`); drop the noise."""
    quiet(
        "pip version",
        ["mlflow.utils.environment"],
        lambda record: DROP if record.getMessage().startswith("Failed to resolve installed pip version") else None,
    )


def register_model(model_uri: str, name: str, tags: dict[str, str] | None = None) -> str:
    """Create a new version of `name` from a logged model; returns the version number."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=tags)
    return str(version.version)


def _champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def get_champion(client: MlflowClient, name: str) -> ChampionInfo | None:
    version = _champion_version(client, name)
    if version is None:
        return None
    return ChampionInfo(
        name=name,
        version=str(version.version),
        run_id=version.run_id,
        source=str(version.source),
        tags=dict(version.tags or {}),
        promoted_at=(version.tags or {}).get("promoted_at"),
    )


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


class ChampionMoved(RegistryError):
    """Another run moved `champion` after this candidate was compared with the one before."""


_UNCHECKED = object()


@contextlib.contextmanager
def alias_lock(lock_dir: Path | None) -> Iterator[None]:
    """Serialize alias changes among processes sharing a workspace (an advisory file lock)."""
    if lock_dir is None:
        yield
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / "registry-alias.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_champion(
    client: MlflowClient,
    name: str,
    version: str,
    tags: dict[str, str],
    *,
    expected: str | object | None = _UNCHECKED,
    lock_dir: Path | None = None,
) -> str | None:
    """Tag the version with why it was promoted, keep the outgoing champion as `previous-champion`,
    then move `champion` in one registry call. Returns the outgoing champion's version.

    `expected` is the champion the candidate was compared with (None: there was none). If the alias
    moved since, nothing changes and `ChampionMoved` is raised: two runs racing to promote never
    replace a champion neither was compared with. Processes sharing `lock_dir` (the workspace) are
    serialized; against a remote registry the check and a read-back after the move narrow the race
    to the server's round trips, and the alias, like any MLflow alias, names one version only.
    """
    with alias_lock(lock_dir):
        outgoing = _alias_version(client, name, CHAMPION)
        if expected is not _UNCHECKED and outgoing != expected:
            raise ChampionMoved(
                f"{name}: champion is now v{outgoing}, not "
                f"{'absent' if expected is None else f'v{expected}'} as when v{version} was evaluated; "
                "not promoted (a new run will compare against the current champion)"
            )
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, str(value)[:5000])
        if outgoing is not None and outgoing != version:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, outgoing)
        fault_point("alias")  # between the two alias moves
        client.set_registered_model_alias(name, CHAMPION, version)
        now = _alias_version(client, name, CHAMPION)
        if now != version:
            raise ChampionMoved(f"{name}: another run moved champion to v{now} while v{version} was being promoted")
    return outgoing


@dataclass(frozen=True)
class Rollback:
    name: str
    restored: str
    demoted: str
    reason: str
    at: str


def rollback(
    client: MlflowClient,
    name: str,
    reason: str,
    *,
    expected: str | None = None,
    lock_dir: Path | None = None,
) -> Rollback:
    """Point `champion` back at `previous-champion` in one call; the demoted version becomes the
    new `previous-champion` (so a second rollback undoes the first). Both versions are tagged.

    Under the same lock as promotion (`alias_lock`), so a promotion and a rollback never interleave;
    with `expected`, only while the champion is still that version (`ChampionMoved` otherwise: a
    champion promoted since the caller looked is never rolled back unseen). A read-back after the
    move catches a remote registry changed by a process outside the lock.
    """
    from datetime import UTC, datetime

    with alias_lock(lock_dir):
        previous = _alias_version(client, name, PREVIOUS_CHAMPION)
        current = _alias_version(client, name, CHAMPION)
        if previous is None:
            raise RegistryError(f"{name!r} has no {PREVIOUS_CHAMPION!r} version to roll back to")
        if current is None:
            raise RegistryError(f"{name!r} has no champion to roll back")
        if expected is not None and current != expected:
            raise ChampionMoved(f"{name}: champion is v{current}, not v{expected}: nothing rolled back")
        at = datetime.now(UTC).isoformat(timespec="seconds")
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
        now = _alias_version(client, name, CHAMPION)
        if now != previous:
            raise ChampionMoved(f"{name}: another process moved champion to v{now} during the rollback")
    note = f"{at}: {reason}"[:5000]
    client.set_model_version_tag(name, current, "rolled_back", note)
    client.set_model_version_tag(name, previous, "restored_by_rollback", note)
    client.set_registered_model_tag(name, "last_rollback", f"v{current} -> v{previous}; {note}"[:5000])
    return Rollback(name, previous, current, reason, at)


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
            if "No such file" in str(exc) or "does not exist" in str(exc) or isinstance(exc, FileNotFoundError):
                return None
            raise
        if not local.is_file():
            return None
        local.replace(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def run_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    """The latest value of each metric a run logged."""
    return {k: float(v) for k, v in client.get_run(run_id).data.metrics.items()}


def list_models(client: MlflowClient) -> list[str]:
    return sorted(m.name for m in client.search_registered_models())


def flatten_config(config: Any) -> dict[str, str]:
    """A pydantic config as flat `section.key` params, the way MLflow stores them."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = str(value)[:6000]

    walk("", config.model_dump(mode="json", exclude={"serving", "scoring", "prefect", "home", "assumptions"}))
    return flat


def start_run(client: MlflowClient, experiment_id: str, tags: dict[str, str], params: dict[str, str]) -> str:
    run = client.create_run(experiment_id, tags=tags)
    log_params(run.info.run_id, params)
    return str(run.info.run_id)


def log_params(run_id: str, params: dict[str, Any]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Param

    if params:
        MlflowClient().log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])


def log_metrics(run_id: str, metrics: dict[str, float]) -> None:
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    if metrics:
        MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    MlflowClient().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_child_run(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    failed: bool = False,
) -> str:
    """A nested run (a search trial) under `parent_run_id`, logged in one batch."""
    import math
    import time

    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent_run_id, "mlflow.runName": name})
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)],
    )
    client.set_terminated(run.info.run_id, status="FAILED" if failed else "FINISHED")
    return str(run.info.run_id)


def log_figure(run_id: str, figure: Any, artifact_file: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_figure(run_id, figure, artifact_file)


def log_dict(run_id: str, data: Any, artifact_file: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_dict(run_id, data, artifact_file)


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_text(run_id, text, artifact_file)


def log_artifact(run_id: str, path: Path, artifact_path: str | None = None) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_artifact(run_id, str(path), artifact_path)


def log_validation_run(
    workspace: Workspace,
    dataset: str,
    report: dict[str, Any],
    suite: dict[str, Any],
    docs_pages: list[Path],
    accepted: bool,
) -> str:
    """Record a standalone validation (no training) as its own MLflow run in the dataset's experiment."""
    client = connect(workspace)
    run_id = start_run(
        client,
        ensure_experiment(client, dataset, workspace),
        tags={"mlflow.runName": "validate", "mlops.kind": "validation", "dataset": dataset},
        params={},
    )
    log_dict(run_id, report, "validation/report.json")
    log_dict(run_id, suite, f"validation/{dataset}.json")
    for page in docs_pages:
        log_artifact(run_id, page, "validation/data_docs")
    end_run(client, run_id, "FINISHED" if accepted else "FAILED", {"outcome": "accepted" if accepted else "rejected"})
    return run_id


def end_run(client: MlflowClient, run_id: str, status: str, tags: dict[str, str]) -> None:
    set_tags(run_id, tags)
    client.set_terminated(run_id, status=status)


def tag_version(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:5000])
