"""ASGI middleware in front of the service: request ids, body size limit and bearer-token auth."""

from __future__ import annotations

import hmac
import itertools
import json
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")  # fullmatch: no trailing newline
# Headers whose repetition makes a request ambiguous: which one the guard checked and which one the
# app reads could differ.
_SINGLE_HEADERS = (b"content-type", b"content-length", b"authorization", b"transfer-encoding")
# Open without a token: probes and the API's own description.
JSON_TYPES = frozenset({b"application/json", b""})
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/docs", "/docs.json", "/schema.json", "/"})


_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def _new_request_id() -> bytes:
    """A random per-process prefix and a counter: unique, and ~50x cheaper than uuid4 per request."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}".encode()


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A whole JSON response, in the two ASGI messages."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _answer(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_json(send, status, json.dumps({"error": message}).encode(), headers)


class BodyTooLarge(Exception):
    """A request body past the limit, found while reading it."""


async def read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The whole request body (None if the client went away); BodyTooLarge past `limit` bytes."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class GuardMiddleware:
    """Gives every request an id (X-Request-ID, echoed back); when `api_key` is set, answers 401 to
    any request outside `OPEN_PATHS` without `Authorization: Bearer <api_key>`; answers 415 to a
    body that is not JSON and 413 to one over `max_body_bytes`, before the app parses it."""

    def __init__(self, app: ASGIApp, *, api_key: str | None = None, max_body_bytes: int = 32 << 20) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("headers") or []
        headers = dict(raw)
        request_id = headers.get(REQUEST_ID_HEADER, b"")
        if len(headers) < len(raw):  # a header came more than once
            ids = [value for name, value in raw if name == REQUEST_ID_HEADER]
            if len(ids) > 1:
                request_id = b""  # which one? neither: the request gets an id of its own
            repeated = [name for name in _SINGLE_HEADERS if sum(1 for n, _ in raw if n == name) > 1]
            if repeated:
                shown = request_id if _VALID_REQUEST_ID.fullmatch(request_id) else _new_request_id()
                echo = [(REQUEST_ID_HEADER, shown)]
                await _answer(send, 400, f"repeated header(s): {b', '.join(repeated).decode()}", echo)
                return
        if not _VALID_REQUEST_ID.fullmatch(request_id):
            request_id = _new_request_id()
            scope["headers"] = [*(h for h in raw if h[0] != REQUEST_ID_HEADER), (REQUEST_ID_HEADER, request_id)]
        echo = [(REQUEST_ID_HEADER, request_id)]

        if self.api_key is not None and scope.get("path", "") not in OPEN_PATHS:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                await _answer(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer"), *echo])
                return

        if scope.get("method") in ("POST", "PUT", "PATCH"):
            media_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
            if media_type not in JSON_TYPES:
                await _answer(send, 415, "send the request body as application/json", echo)
                return
            declared = headers.get(b"content-length")
            if declared is not None:
                # The server stops reading at Content-Length: checking the header bounds the body.
                if not declared.isdigit() or int(declared) > self.max_body_bytes:
                    await _answer(send, 413, f"request body over {self.max_body_bytes} bytes", echo)
                    return
            else:
                bounded = await self._bounded_body(receive, send, echo)
                if bounded is None:
                    return
                receive = bounded

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *echo]
            await send(message)

        await self.app(scope, receive, send_with_id)

    async def _bounded_body(self, receive: Receive, send: Send, echo: list[tuple[bytes, bytes]]) -> Receive | None:
        """A chunked body (no Content-Length): read it up to the limit, then replay it to the app."""
        try:
            body = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            await _answer(send, 413, f"request body over {self.max_body_bytes} bytes", echo)
            return None
        if body is None:
            return None  # the client went away
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay
