"""POST /predict answered in one ASGI step, in front of BentoML's generic API layer.

BentoML's API layer (request object, serde, input model, context, response background tasks)
costs about as much per request as the compiled model itself. `PredictRoute` sits behind
`GuardMiddleware` (request id, token, media type and body size are checked before it) and inside
BentoML's own middlewares (metrics, tracing, access log, timeout, concurrency limit), and answers
`POST /predict` from the raw body: one validation by the API's own input model (the one the
OpenAPI document describes, so the same 400 details), the micro-batcher, one orjson answer.
Every other request, and /predict before the runtime exists, goes on to BentoML.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from components.inference.scoring import InputError
from serving.batching import Overloaded
from serving.guard import ASGIApp, Receive, Scope, Send, read_body, send_json

logger = logging.getLogger("mlops.serving")

Headers = list[tuple[bytes, bytes]]


@dataclass
class Reply:
    """A status, a JSON body and extra headers."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=list)


def error(status: int, message: str, request_id: str, **headers: str) -> Reply:
    """An error answer naming the request."""
    body = orjson.dumps({"error": message, "request_id": request_id})
    return Reply(status, body, [(k.lower().encode(), v.encode()) for k, v in headers.items()])


async def predict_reply(runtime: Any, rows: list[Any], request_id: str, max_rows: int) -> Reply:
    """One request's answer: its rows' predictions, or the error that says why there are none."""
    if not rows:
        return error(400, "rows: send at least one row", request_id)
    if len(rows) > max_rows:
        return error(413, f"{len(rows)} rows exceed the limit of {max_rows} per request", request_id)
    try:
        answer = await runtime.batcher.submit(rows, request_id)
    except InputError as exc:
        return error(400, str(exc), request_id)
    except Overloaded as exc:
        return error(503, str(exc), request_id, **{"Retry-After": "1"})
    return Reply(200, orjson.dumps(answer.body(request_id)))


def validation_reply(exc: ValidationError) -> Reply:
    """The 400 BentoML answers to a body its input model refuses, with pydantic's located errors."""
    detail = exc.errors(include_context=False, include_input=False, include_url=False)
    body = {"error": f"{exc.error_count()} validation error for {exc.title}", "detail": detail}
    return Reply(400, orjson.dumps(body, default=str))


@dataclass
class RouteState:
    """The service instance's runtime, set when the instance is built (the route exists before it)."""

    runtime: Any = None

    def release(self, runtime: Any) -> None:
        """A closing instance hands its requests back to BentoML (a newer instance keeps its own)."""
        if self.runtime is runtime:
            self.runtime = None


class PredictRoute:
    """Answers `POST <path>` from the raw body once `state.runtime` is set; passes everything else on.

    `parse` turns the body into rows or raises pydantic's ValidationError.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: RouteState,
        parse: Callable[[bytes], list[Any]],
        max_rows: int,
        server_header: str,
        path: str = "/predict",
    ) -> None:
        self.app = app
        self.state = state
        self.parse = parse
        self.max_rows = max_rows
        self.path = path
        self.server = (b"server", server_header.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.state.runtime
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST" or runtime is None:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)  # GuardMiddleware, in front, has bounded its size
        if body is None:
            return  # the client went away
        request_id = _request_id(scope)
        reply = await self._reply(runtime, body, request_id)
        await send_json(send, reply.status, reply.body, [self.server, *reply.headers])

    async def _reply(self, runtime: Any, body: bytes, request_id: str) -> Reply:
        try:
            rows = self.parse(body)
        except ValidationError as exc:
            logger.info("POST %s refused (request %s): %s", self.path, request_id, str(exc)[:500])
            return validation_reply(exc)
        try:
            return await predict_reply(runtime, rows, request_id, self.max_rows)
        except Exception:
            logger.exception("POST %s failed (request %s)", self.path, request_id)
            return error(500, "An unexpected error has occurred, please check the server log.", request_id)


def _request_id(scope: Scope) -> str:
    # GuardMiddleware, in front, has put a valid id in the headers.
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            return str(value.decode("latin-1"))
    return ""
