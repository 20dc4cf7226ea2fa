"""The BentoML service: answers predictions with the registry's `champion` over HTTP.

`bentoml serve serving.service:PredictionService` (what `mlops serve` runs) builds the service
class on first access from the environment `mlops serve` / `mlops build` set:

- MLOPS_CONFIG / MLOPS_HOME: the pipeline config and workspace; MLFLOW_TRACKING_URI: a real registry.
- MLOPS_MODEL_NAME: the registered model (default: the configured dataset).
- MLOPS_BUNDLED_MODEL: a BentoML model tag packed by `mlops build`; the service then serves
  that copy and never contacts a tracking server.
- MLOPS_API_KEY: when set, every endpoint but the health checks and the API docs requires
  `Authorization: Bearer <key>`.

The request schema comes from the model's MLflow signature, so it is fixed when the class is
built; `create_service(settings)` builds one explicitly (tests do).

No `from __future__ import annotations` here: BentoML reads the API's parameter annotations,
which refer to the request model built inside `create_service`.
"""

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
import orjson
import pandas as pd
from fastapi import FastAPI
from pydantic import Field
from starlette.responses import JSONResponse, Response

from components.core.config import PipelineConfig, ServingConfig
from components.core.logs import exception_of, quiet
from components.inference.predlog import PredictionLog
from components.inference.scoring import InputError, Predictions, coerce_rows, predict_coerced
from serving.batching import Job, MicroBatcher, Overloaded
from serving.champion import BundleSource, LoadedModel, RegistrySource, bundle_columns, registry_signature
from serving.guard import GuardMiddleware
from serving.schema import Column, response_model, row_model

logger = logging.getLogger("mlops.serving")

SERVICE_NAME = "mlops_prediction_service"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Queued rows beyond this many batches are answered 503 at once rather than after a timeout.
QUEUED_BATCHES = 64


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service class is built from."""

    model_name: str
    columns: tuple[Column, ...]
    output_type: str | None
    task: str
    serving: ServingConfig
    predictions_dir: Path | None
    api_key: str | None = None
    config: PipelineConfig | None = None
    bundle_tag: str | None = None
    id_column: str | None = None


ALLOW_OPEN = "MLOPS_ALLOW_UNAUTHENTICATED"


class ExposedWithoutKey(RuntimeError):
    """A service that would answer anyone on the network without a key."""


def check_exposure(settings: ServiceSettings, environ: Mapping[str, str]) -> None:
    """A bundled service (a Bento, or its container, which binds every address) starts only with
    MLOPS_API_KEY set, or with MLOPS_ALLOW_UNAUTHENTICATED=true said out loud. (`mlops serve`
    checks its own bind address before it starts BentoML.)"""
    if settings.bundle_tag and not settings.api_key and environ.get(ALLOW_OPEN, "").lower() != "true":
        raise ExposedWithoutKey(
            "refusing to serve a bundled model without MLOPS_API_KEY: a container binds every address. "
            f"Set MLOPS_API_KEY (clients send `Authorization: Bearer <key>`), or {ALLOW_OPEN}=true to serve "
            "without one behind your own gateway"
        )


def bundled_model_tag() -> str | None:
    """MLOPS_BUNDLED_MODEL, or the value `mlops build` wrote into the Bento this code runs from.

    A container gets the variable from the image; `bentoml serve <bento>` does not set a Bento's
    variables before importing the service, so the Bento's own bento.yaml (next to `src/`) is read.
    """
    if tag := os.environ.get("MLOPS_BUNDLED_MODEL"):
        return tag
    manifest = PROJECT_ROOT.parent / "bento.yaml"
    if not manifest.is_file():
        return None
    import yaml

    envs = (yaml.safe_load(manifest.read_text()) or {}).get("envs") or []
    return next((str(e["value"]) for e in envs if e.get("name") == "MLOPS_BUNDLED_MODEL" and e.get("value")), None)


def settings_from_environment() -> ServiceSettings:
    """Read the model's settings, find the model and read its signature (not the model itself).

    MLOPS_MODEL_NAME names the model (default: the project's only configured one); its settings are
    the project's mlops.yaml layered with its models/<name>.yaml, or, for a model registered by an
    ad-hoc run, what its contract records.
    """
    from components.core.project import load_project

    project = load_project()
    api_key = os.environ.get("MLOPS_API_KEY") or None
    from components.core.workspace import Workspace

    if tag := bundled_model_tag():
        columns, output_type, meta, task = bundle_columns(Path(bentoml.models.get(tag).path))
        config = project.config_for(meta["name"]) if project.has_model(meta["name"]) else project.base()
        workspace = Workspace.at(config.home)
        predictions = workspace.predictions / meta["name"] if config.serving.prediction_log.enabled else None
        return ServiceSettings(
            meta["name"],
            columns,
            output_type,
            task,
            config.serving,
            predictions,
            api_key,
            config,
            tag,
            meta.get("id_column") or config.data.id_column,
        )
    from components.core.environment import workspace_environment
    from components.tracking import registry

    name = os.environ.get("MLOPS_MODEL_NAME") or project.resolve_name(None, "the service")
    config = project.config_for(name)
    workspace = Workspace.at(config.home)
    workspace_environment(workspace)
    predictions = workspace.predictions / name if config.serving.prediction_log.enabled else None
    client = registry.connect(workspace)
    _, columns, output_type, task = registry_signature(client, name)
    return ServiceSettings(
        name, columns, output_type, task, config.serving, predictions, api_key, config, None, config.data.id_column
    )


def _one_thread() -> None:
    """On the prediction thread: BLAS/OpenMP pools turn small batches into tens of ms with stalls
    (OpenMP's limit is per thread, so it is set on the thread that predicts)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _rows_frame(rows: list[Any], columns: tuple[Column, ...]) -> pd.DataFrame:
    """Validated rows as typed columns: numbers as float64 (null as NaN), the rest as objects.

    Plain lists would make pandas infer Arrow-backed strings that `coerce_rows` converts back.
    """
    data: dict[str, Any] = {}
    for column in columns:
        values = [getattr(row, column.name) for row in rows]
        if column.type in ("double", "float", "long", "integer"):
            data[column.name] = np.array([np.nan if v is None else v for v in values], dtype="float64")
        else:
            data[column.name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


@dataclass(frozen=True)
class Answer:
    """One request's share of a batch's predictions."""

    model: LoadedModel
    predictions: Predictions
    start: int
    end: int

    def body(self, request_id: str) -> dict[str, Any]:
        """The JSON answer: labels and probabilities (every class's, for multiclass), or numbers and intervals."""
        p, rows = self.predictions, slice(self.start, self.end)
        body: dict[str, Any] = {
            "request_id": request_id,
            "model_name": self.model.name,
            "model_version": self.model.version,
            "predictions": p.labels[rows],
        }
        if p.class_probabilities is not None:
            names = [str(c) for c in p.classes]
            body["probabilities"] = [dict(zip(names, row, strict=True)) for row in p.class_probabilities[rows]]
        elif p.classes:
            body["probabilities"] = p.probabilities[rows]
        elif p.lower is not None and p.upper is not None:
            body["intervals"] = [[low, high] for low, high in zip(p.lower[rows], p.upper[rows], strict=True)]
            body["interval_coverage"] = self.model.served.coverage
        return body


def _error(ctx: Any, status: int, message: str, request_id: str, **headers: str) -> JSONResponse:
    # BentoML applies the context's status to whatever the API returns.
    ctx.response.status_code = status
    return JSONResponse({"error": message, "request_id": request_id}, status_code=status, headers=headers)


def _validation_error_line(record: logging.LogRecord) -> str | None:
    from pydantic import ValidationError

    exc = exception_of(record)
    return str(exc)[:500] if isinstance(exc, ValidationError) else None


def create_service(settings: ServiceSettings) -> Any:
    """The BentoML service class for one model's signature."""
    # A request that fails validation is the client's 400, not a server traceback.
    quiet("validation errors", ["bentoml._internal.server.http_app"], _validation_error_line, level=logging.INFO)
    Row = row_model(settings.model_name, settings.columns, settings.id_column)
    Prediction = response_model(settings.model_name, _classes_hint(settings.output_type), settings.task)
    serving = settings.serving
    max_rows = serving.max_rows_per_request
    names = [c.name for c in settings.columns]
    id_column = settings.id_column if settings.id_column not in names else None
    metadata_app = FastAPI(title="metadata")

    @bentoml.service(
        name=SERVICE_NAME,
        workers=serving.workers,
        traffic={"timeout": serving.timeout_seconds + 5},
        logging={"access": {"enabled": serving.access_log}},
        metrics={"enabled": serving.metrics},
    )
    @bentoml.asgi_app(metadata_app, path="/")
    class PredictionService:
        """Predictions from the champion; see /metadata for which version answers."""

        if settings.bundle_tag:
            bundled = bentoml.models.BentoModel(settings.bundle_tag)

        def __init__(self) -> None:
            self.settings = settings
            check_exposure(settings, os.environ)
            if settings.bundle_tag:
                self.source: RegistrySource | BundleSource = BundleSource(Path(self.bundled.path)).start()
            else:
                from components.core.workspace import Workspace
                from components.tracking import registry

                assert settings.config is not None
                client = registry.connect(Workspace.at(settings.config.home))
                self.source = RegistrySource(
                    client, settings.model_name, settings.columns, serving.reload_seconds, settings.task
                )
                self.source.start()
            self.batcher = MicroBatcher(
                self._predict_batch,
                max_batch_rows=max(serving.max_batch_rows, max_rows),
                timeout=serving.timeout_seconds,
                max_queued_rows=max(serving.max_batch_rows, max_rows) * QUEUED_BATCHES,
                thread_setup=_one_thread,
            )
            log = serving.prediction_log
            self.log = (
                PredictionLog(
                    settings.predictions_dir,
                    flush_seconds=log.flush_seconds,
                    flush_rows=log.flush_rows,
                    max_pending_rows=log.max_pending_rows,
                )
                if settings.predictions_dir is not None
                else None
            )

        def __is_ready__(self) -> bool:
            return self.source.current is not None

        def _predict_batch(self, jobs: list[Job]) -> list[Any]:
            """On the prediction thread: one predict for all the jobs' rows, then split per job."""
            model = self.source.current
            if model is None:
                return [Overloaded("the model is still loading; retry shortly")] * len(jobs)
            try:
                return self._predict_together(model, jobs)
            except Exception:
                if len(jobs) == 1:
                    raise
            results: list[Any] = []
            for job in jobs:
                try:
                    results.extend(self._predict_together(model, [job]))
                except Exception as exc:  # noqa: BLE001 - this request's own failure
                    results.append(exc)
            return results

        def _predict_together(self, model: LoadedModel, jobs: list[Job]) -> list[Any]:
            rows = [row for job in jobs for row in job.rows]
            X = coerce_rows(_rows_frame(rows, settings.columns), model.served.schema)
            try:
                answer = predict_coerced(model.served.model, X, model.served.half_width)
            except ValueError as exc:  # scikit-learn's input checks, e.g. a value that overflows to infinity
                raise InputError(f"the model cannot score these values: {exc}") from exc
            if not answer.finite:
                raise InputError("the model cannot score these values: the answers are not finite")
            if self.log is not None:
                ids = [job.request_id for job in jobs for _ in job.rows]
                extra = {id_column: [getattr(row, id_column) for row in rows]} if id_column is not None else None
                self.log.append_batch(X, ids, model.version, answer.labels, answer.probabilities, extra)
            out: list[Any] = []
            start = 0
            for job in jobs:
                end = start + len(job.rows)
                out.append(Answer(model, answer, start, end))
                start = end
            return out

        @bentoml.api(route="/predict")
        async def predict(
            self,
            rows: Annotated[
                list[Row],  # type: ignore[valid-type]
                Field(
                    description=f"Rows to score, 1 to {max_rows} per request.",
                    json_schema_extra={"minItems": 1, "maxItems": max_rows},
                ),
            ],
            ctx: bentoml.Context,
        ) -> Prediction:  # type: ignore[valid-type]
            """Predicted class and probability for each row, with the model version that answered."""
            request_id = ctx.request.headers.get("x-request-id", "")
            if not rows:
                return _error(ctx, 400, "rows: send at least one row", request_id)
            if len(rows) > max_rows:
                return _error(ctx, 413, f"{len(rows)} rows exceed the limit of {max_rows} per request", request_id)
            try:
                answer: Answer = await self.batcher.submit(rows, request_id)
            except InputError as exc:
                return _error(ctx, 400, str(exc), request_id)
            except Overloaded as exc:
                return _error(ctx, 503, str(exc), request_id, **{"Retry-After": "1"})
            # The documented `Prediction`, serialized directly: BentoML's generic path (validate the
            # model, then stream it) costs a noticeable share of a small request's CPU.
            return Response(orjson.dumps(answer.body(request_id)), media_type="application/json")

        @metadata_app.get("/metadata")
        def metadata(self) -> dict[str, Any]:
            """Which model answers: name, version, run, training-data fingerprint, signature."""
            model = self.source.current
            stats = self.log.stats() if self.log is not None else None
            return {
                "ready": model is not None,
                **(model.describe() if model is not None else {"model_name": settings.model_name}),
                "reload": self.source.describe(),
                "batching": vars(self.batcher.stats),
                "prediction_log": None
                if stats is None
                else {"directory": str(settings.predictions_dir), **vars(stats)},
            }

        @bentoml.on_shutdown
        def close(self) -> None:
            self.source.stop()
            self.batcher.close()
            if self.log is not None:
                self.log.close()

    PredictionService.add_asgi_middleware(  # type: ignore[attr-defined]
        GuardMiddleware, api_key=settings.api_key, max_body_bytes=int(serving.max_body_mb * (1 << 20))
    )
    return PredictionService


def _classes_hint(output_type: str | None) -> list[Any]:
    """Example classes of the signature's output type (MLflow or numpy names), for the response schema."""
    kind = (output_type or "").lower()
    if "bool" in kind:
        return [True]
    if "int" in kind or kind == "long":
        return [0]
    if "float" in kind or "double" in kind:
        return [0.0]
    return ["label"]


def service_target() -> str:
    """The import string `bentoml serve` takes, relative to the project root."""
    return "serving.service:PredictionService"


_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """`serving.service:PredictionService` builds the class from the environment on first use."""
    if name != "PredictionService":
        raise AttributeError(name)
    if name not in _built:
        _built[name] = create_service(settings_from_environment())
    return _built[name]
