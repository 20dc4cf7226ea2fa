"""The model a service answers with: the registry's champion (hot-reloaded) or a bundled copy.

`RegistrySource` resolves `models:/<name>@champion` to a version, loads it on a background
thread, and every `interval` seconds checks whether the alias moved (promotion, rollback).
A new version is loaded and warmed up beside the current one, then swapped in with one
assignment: a batch in flight finishes on the model it started with, the next batch uses
the new one, and no request fails or waits for the load. A version whose input columns
differ from the ones the running service validates requests against is not swapped in
(the request schema is fixed at start); the service keeps answering with the current
model and reports the refusal in /metadata and its log until restarted.

It also follows the `challenger` alias (a rollout: shadow or canary, tagged on the version): the
challenger is loaded the same way, refused with a note when its columns or task differ, and
dropped when the alias goes (promoted or retired).

`BundleSource` serves a model packed into a Bento by `mlops build` and never changes.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from components.core.faults import fault_point
from components.inference.scoring import MODEL_METADATA_KEY, ServingModel, decision_threshold, load_serving_model
from serving.schema import Column, same_columns, signature_columns

logger = logging.getLogger("mlops.serving")

BUNDLE_METADATA = "mlops.json"
BUNDLE_MODEL_DIR = "mlflow_model"


@dataclass(frozen=True)
class LoadedModel:
    """One model version as the service holds it."""

    name: str
    version: str
    run_id: str | None
    fingerprint: str | None
    origin: str
    served: ServingModel
    columns: tuple[Column, ...]
    output_type: str | None
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def classes(self) -> list[Any]:
        return [c.item() if isinstance(c, np.generic) else c for c in getattr(self.served.model, "classes_", [])]

    def describe(self) -> dict[str, Any]:
        model = self.served.model
        return {
            "model_name": self.name,
            "model_version": self.version,
            "run_id": self.run_id,
            "training_data_fingerprint": self.fingerprint,
            "origin": self.origin,
            "loaded_at": self.loaded_at,
            "task": self.served.task,
            "classes": self.classes,
            "decision_threshold": decision_threshold(model),
            "calibration": self.served.info.get("calibration"),
            "interval": self.served.info.get("interval"),
            "inference": self.served.inference.describe() if self.served.inference is not None else None,
            "signature": {
                "inputs": [{"name": c.name, "type": c.type, "required": c.required} for c in self.columns],
                "output": self.output_type,
            },
        }


@dataclass(frozen=True)
class Challenger:
    """The challenger as a service holds it, and how it is tried."""

    model: LoadedModel
    rollout: str  # shadow | canary
    share: float  # canary: the share of request keys it answers

    def describe(self) -> dict[str, Any]:
        return {
            "model_version": self.model.version,
            "rollout": self.rollout,
            "canary_share": self.share if self.rollout == "canary" else None,
            "loaded_at": self.model.loaded_at,
            "inference": self.model.served.inference.describe() if self.model.served.inference is not None else None,
        }


def _output_type(signature: Any) -> str | None:
    outputs = getattr(signature, "outputs", None)
    if outputs is None or not outputs.inputs:
        return None
    kind = outputs.inputs[0].type
    return str(getattr(kind, "name", kind))


# A full collection walks every long-lived object, and BentoML's request timeout keeps each answered
# request's timer (its future, context and tracing span) alive for the whole timeout: at 1,300 req/s
# that is ~500,000 objects, a 100-200 ms stall of every request in flight about once a second (p99
# 210 ms against a p50 of 14 ms at concurrency 32). Full collections 50x less often: p99 33-37 ms
# (prediction log off; 47 ms with it, see `predlog.CONVERT_SECONDS`).
FULL_COLLECTION_THRESHOLD = 500  # young collections between full ones (CPython's default: 10)


def settle_heap() -> None:
    """Move everything alive now (imported libraries, the loaded models) out of the garbage
    collector's reach, and make full collections rare: a full collection otherwise walks millions
    of long-lived objects and stalls every request in flight for hundreds of milliseconds."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)


def warm_up(served: ServingModel) -> None:
    """One prediction on a row of missing values: lazy initialisation is not what a request pays."""
    row: dict[str, Any] = {c: np.nan for c in served.schema.numeric} | {c: None for c in served.schema.categorical}
    served.predict([row])


def load_registry_version(client: Any, name: str, version: str) -> LoadedModel:
    """Load one registered version (pinned, so an alias moving meanwhile cannot mix versions)."""
    import mlflow.models

    details = client.get_model_version(name, version)
    uri = f"models:/{name}/{version}"
    signature = mlflow.models.get_model_info(uri).signature
    served = load_serving_model(uri)
    tags = dict(details.tags or {})
    loaded = LoadedModel(
        name=name,
        version=str(version),
        run_id=details.run_id or tags.get("run_id"),
        fingerprint=tags.get("data_fingerprint"),
        origin=f"registry: {uri}",
        served=served,
        columns=signature_columns(signature),
        output_type=_output_type(signature),
    )
    warm_up(served)
    return loaded


def task_of(info: dict[str, Any] | None, output_type: str | None) -> str:
    """The task a logged model serves, from its MLmodel metadata (models logged before it was
    recorded are classifiers: binary unless known otherwise)."""
    task = ((info or {}).get(MODEL_METADATA_KEY) or {}).get("task")
    return str(task) if task else "binary"


def registry_signature(client: Any, name: str) -> tuple[str, tuple[Column, ...], str | None, str]:
    """The champion's version, input columns, output type and task, without loading the model."""
    import mlflow.models

    from components.tracking import registry

    champion = registry.get_champion(client, name)
    if champion is None:
        raise LookupError(f"registered model {name!r} has no champion; run `mlops run` first")
    info = mlflow.models.get_model_info(f"models:/{name}/{champion.version}")
    output = _output_type(info.signature)
    return champion.version, signature_columns(info.signature), output, task_of(info.metadata, output)


class RegistrySource:
    """The registry's champion, loaded in the background and swapped when the alias moves."""

    def __init__(
        self, client: Any, name: str, columns: tuple[Column, ...], interval: float, task: str | None = None
    ) -> None:
        self.client = client
        self.name = name
        self.columns = columns
        self.task = task
        self.interval = interval
        self.current: LoadedModel | None = None
        self.last_check: str | None = None
        self.last_error: str | None = None
        self.refused_version: str | None = None
        self.challenger: Challenger | None = None
        self.refused_challenger: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="champion-watch", daemon=True)

    def start(self) -> RegistrySource:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> bool:
        """Load and swap in the champion if it is not the version being served; True if swapped."""
        from components.tracking import registry

        self.last_check = datetime.now(UTC).isoformat(timespec="seconds")
        champion = registry.get_champion(self.client, self.name)
        if champion is None:
            raise LookupError(f"registered model {self.name!r} has no champion")
        if self.current is not None and champion.version == self.current.version:
            return False
        if champion.version == self.refused_version:
            return False
        started = time.perf_counter()
        loaded = load_registry_version(self.client, self.name, champion.version)
        if self.current is not None:
            fault_point("reloading")  # the new version loaded, the old one still served
        if not same_columns(self.columns, loaded.columns):
            self.refused_version = champion.version
            raise ValueError(
                f"{self.name} v{champion.version} expects different input columns than this service validates; "
                "restart the service to serve it"
            )
        if self.task is not None and loaded.served.task != self.task:
            self.refused_version = champion.version
            raise ValueError(
                f"{self.name} v{champion.version} is a {loaded.served.task} model and this service answers "
                f"{self.task} requests; restart the service to serve it"
            )
        previous = self.current
        self.current = loaded
        settle_heap()
        self.refused_version = None
        logger.info(
            "now serving %s v%s (was %s), loaded in %.1f s",
            self.name,
            loaded.version,
            f"v{previous.version}" if previous else "nothing",
            time.perf_counter() - started,
        )
        return True

    def check_challenger(self) -> None:
        """Follow the `challenger` alias: load a new one beside the champion, drop one that ended."""
        from components.tracking import registry

        info = registry.get_challenger(self.client, self.name)
        current = self.challenger
        if info is None or (self.current is not None and info.version == self.current.version):
            if current is not None:
                logger.info("challenger v%s ended; the champion answers alone", current.model.version)
            self.challenger = None
            return
        if current is not None and current.model.version == info.version:
            if (current.rollout, current.share) != (info.rollout, info.canary_share):
                self.challenger = Challenger(current.model, info.rollout, info.canary_share)
            return
        if info.version == self.refused_challenger:
            return
        loaded = load_registry_version(self.client, self.name, info.version)
        if not same_columns(self.columns, loaded.columns) or (self.task and loaded.served.task != self.task):
            self.refused_challenger = info.version
            raise ValueError(
                f"challenger {self.name} v{info.version} expects other input columns or another task than this "
                "service answers; it is not tried here (restart the service to try it)"
            )
        self.challenger = Challenger(loaded, info.rollout, info.canary_share)
        logger.info("challenger %s v%s loaded (%s)", self.name, info.version, info.rollout)

    def _loop(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self.check()
                self.check_challenger()
                self.last_error = None
                delay = 1.0
            except Exception as exc:  # noqa: BLE001 - keep serving the current model whatever the registry does
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    logger.error("champion check failed: %s", message)
                self.last_error = message
                if self.current is None:
                    # Not ready yet: retry sooner, backing off to the interval.
                    self._stop.wait(delay)
                    delay = min(delay * 2, max(self.interval, 1.0))
                    continue
            if self.interval <= 0:
                return
            self._stop.wait(self.interval)

    def describe(self) -> dict[str, Any]:
        return {
            "interval_seconds": self.interval,
            "last_check": self.last_check,
            "last_error": self.last_error,
            "refused_version": self.refused_version,
            "refused_challenger": self.refused_challenger,
        }


def bundle_columns(path: Path) -> tuple[tuple[Column, ...], str | None, dict[str, Any], str]:
    """A bundled model's input columns, output type, bundle metadata and task."""
    from mlflow.models import Model

    meta = json.loads((path / BUNDLE_METADATA).read_text())
    logged = Model.load(str(path / BUNDLE_MODEL_DIR))
    output = _output_type(logged.signature)
    return signature_columns(logged.signature), output, meta, task_of(logged.metadata, output)


class BundleSource:
    """A model copied into a Bento: loaded once in the background, never reloaded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: LoadedModel | None = None
        self.challenger: Challenger | None = None  # a bundle serves one model, never a rollout
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._load, name="bundle-load", daemon=True)

    def start(self) -> BundleSource:
        self._thread.start()
        return self

    def stop(self) -> None:
        return None

    def _load(self) -> None:
        try:
            columns, output_type, meta, _ = bundle_columns(self.path)
            served = load_serving_model(str(self.path / BUNDLE_MODEL_DIR))
            warm_up(served)
            self.current = LoadedModel(
                name=meta["name"],
                version=str(meta["version"]),
                run_id=meta.get("run_id"),
                fingerprint=meta.get("data_fingerprint"),
                origin=f"bundle: {self.path}",
                served=served,
                columns=columns,
                output_type=output_type,
            )
            settle_heap()
            logger.info("serving bundled %s v%s", meta["name"], meta["version"])
        except Exception as exc:
            logger.exception("could not load the bundled model")
            self.last_error = f"{type(exc).__name__}: {exc}"

    def describe(self) -> dict[str, Any]:
        return {"interval_seconds": 0, "last_check": None, "last_error": self.last_error, "refused_version": None}
