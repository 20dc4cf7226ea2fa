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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import bentoml
from fastapi import FastAPI
from pydantic import Field
from starlette.responses import Response

from components.core.logs import exception_of, quiet
from serving.champion import bundle_columns, registry_signature
from serving.fastpath import PredictRoute, RouteState, predict_reply
from serving.guard import GuardMiddleware
from serving.runtime import ServiceRuntime, ServiceSettings
from serving.schema import response_model, row_model

logger = logging.getLogger("mlops.serving")

SERVICE_NAME = "mlops_prediction_service"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
    serving, max_rows = settings.serving, settings.serving.max_rows_per_request
    metadata_app = FastAPI(title="metadata")
    route = RouteState()

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
            self.runtime = ServiceRuntime(settings, Path(self.bundled.path) if settings.bundle_tag else None)
            route.runtime = self.runtime  # from here `PredictRoute` answers POST /predict

        def __is_ready__(self) -> bool:
            return self.runtime.source.current is not None

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
            return await _api_reply(self.runtime, rows, ctx, max_rows)

        @metadata_app.get("/metadata")
        def metadata(self) -> dict[str, Any]:
            """Which model answers: name, version, run, training-data fingerprint, signature."""
            return self.runtime.metadata()

        @bentoml.on_shutdown
        def close(self) -> None:
            route.release(self.runtime)
            self.runtime.close()

    _add_middlewares(PredictionService, settings, route)
    return PredictionService


def _add_middlewares(service: Any, settings: ServiceSettings, route: RouteState) -> None:
    """In front of BentoML's app, inside its metrics, tracing, access log and limits: the guard
    (request id, token, media type, body size), then the route that answers POST /predict."""
    serving = settings.serving
    service.add_asgi_middleware(
        GuardMiddleware, api_key=settings.api_key, max_body_bytes=int(serving.max_body_mb * (1 << 20))
    )
    service.add_asgi_middleware(
        PredictRoute,
        state=route,
        # Validated by the API's own input model, the one the OpenAPI document describes.
        parse=_rows_parser(service.apis["predict"].input_spec),
        max_rows=serving.max_rows_per_request,
        server_header=f"BentoML Service/{SERVICE_NAME}",
    )


def _rows_parser(input_model: Any) -> Callable[[bytes], list[Any]]:
    """The rows of a raw JSON body, validated by the API's input model (a pydantic ValidationError if refused)."""

    def parse(body: bytes) -> list[Any]:
        return list(input_model.model_validate_json(body).rows)

    return parse


async def _api_reply(runtime: ServiceRuntime, rows: list[Any], ctx: Any, max_rows: int) -> Response:
    """The API's answer, reached only while `PredictRoute` in front does not answer: the same reply."""
    reply = await predict_reply(runtime, rows, ctx.request.headers.get("x-request-id", ""), max_rows)
    ctx.response.status_code = reply.status  # BentoML applies the context's status to what the API returns
    headers = {name.decode(): value.decode() for name, value in reply.headers}
    return Response(reply.body, status_code=reply.status, media_type="application/json", headers=headers)


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
