"""Request bodies: the size limit (413) and the one strict JSON parse (400 / 422).

Contract, "Endpoints" and "HTTP semantics": every body is read as JSON whatever its
Content-Type; a body that is not I-JSON (RFC 7493: no NaN/Infinity, no duplicate member
names) is 400; valid JSON of the wrong shape is 422; a body over `max_body_bytes` is 413; a body
that does not arrive within HTTP_BODY_TIMEOUT_SECONDS is 408 (`BodyDeadlineMiddleware`).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Coroutine
from typing import Any, Final

import structlog
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.binding import Binding
from api.errors import BodyTimeout, error_response, response_for
from api.routing import HTTPRoute

log = structlog.get_logger(__name__)

#: The 413 envelope, prebuilt: it is written below FastAPI, where no exception handler runs.
TOO_LARGE_DETAIL: Final = "Request body too large"
#: FastAPI's detail for a body it could not read (fastapi.routing.get_request_handler).
UNREADABLE_BODY_DETAIL: Final = "There was an error parsing the body"
_JSON_CONTENT_TYPE: Final = b"application/json"


def _reject_constant(name: str) -> Any:
    """`parse_constant` hook: Python's json accepts NaN and ±Infinity, JSON does not."""
    raise ValueError(f"{name} is not a JSON number (RFC 8259 §6)")


def _finite(text: str) -> float:
    """`parse_float` hook: a number beyond IEEE 754 double (1e400) is not I-JSON (RFC 7493
    §2.2); Python's json would make it infinity."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range for a JSON number (RFC 7493 §2.2)")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook`: Python's json keeps the last of duplicate names, I-JSON refuses."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name (RFC 7493 §2.3)")
    return obj


# Built once: `json.loads` with hooks builds a new JSONDecoder on every call.
_DECODER: Final = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite, object_pairs_hook=_unique_members
)


def loads_strict(data: bytes | str) -> Any:
    """Parse I-JSON (RFC 7493): JSON without NaN/Infinity and without duplicate member names.

    `data` is the body, which must be UTF-8 (RFC 7493 §2.1; `json.loads` would also guess
    UTF-16/32); returns the value as `json.loads` would (dict, list, str, int, float, bool
    or None). Raises `ValueError` (a `json.JSONDecodeError` for syntax, UnicodeDecodeError
    for another encoding) for anything else, which FastAPI turns into its `json_invalid`
    validation error and `api/errors.py` into 400.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return _DECODER.decode(text)


class StrictJSONRequest(Request):
    """A request whose `json()` is `loads_strict` (the only way FastAPI parses a body)."""

    async def json(self) -> Any:
        """The body parsed by `loads_strict`, once per request (cached like Starlette's).

        Raises json.JSONDecodeError for a body that is not I-JSON, whatever the cause.
        """
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = loads_strict(body)
            except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
                # FastAPI maps json.JSONDecodeError to its `json_invalid` error (our 400).
                raise json.JSONDecodeError(str(exc), body.decode("utf-8", "replace"), 0) from exc
        return self._json


class JSONBodyRoute(HTTPRoute):
    """Every body of this route is limited in size (`BodySizeLimitMiddleware`, before any
    other check, as the route is matched) and parsed by `loads_strict`, whatever its
    Content-Type (contract, "Endpoints": a body that is not valid JSON is 400)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = BodySizeLimitMiddleware(self.app)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a StrictJSONRequest whose Content-Type is JSON; for a
        valid request of a route `Binding.of` describes, the endpoint called directly.

        FastAPI reads a body as JSON only when the Content-Type says so; a `text/plain` body
        would otherwise reach validation as raw bytes (a 422 instead of the contract's 400).
        """
        handler = super().get_route_handler()
        binding = Binding.of(self)

        body_required = self.body_field is not None and self.body_field.field_info.is_required()
        takes_body = self.body_field is not None

        async def strict_json(request: Request) -> Response:
            scope = request.scope
            scope["headers"] = [
                (k, _JSON_CONTENT_TYPE if k == b"content-type" else v) for k, v in scope["headers"]
            ]
            strict = StrictJSONRequest(scope, request.receive)
            if takes_body:
                await _check_presence(strict, required=body_required)
            if binding is not None:
                # Valid requests skip FastAPI's per-request solving (api/binding.py); any
                # other goes to FastAPI's handler, which answers it as it always has.
                values = await binding.bind(strict)
                if values is not None:
                    return await binding.call(values)
            return await handler(strict)

        return strict_json


async def _check_presence(request: StrictJSONRequest, *, required: bool) -> None:
    """An empty body is not JSON: 400 where a body is required (POST, PUT); where it is
    optional (PATCH …/complete: no body toggles) only a missing body means "no body", and
    JSON `null` is valid JSON of the wrong shape (422), never a toggle a retry would undo.

    Raises RequestValidationError (`json_invalid`: 400; `model_type`: 422), and HTTPException
    400 when the client leaves before the body is complete, as FastAPI's handler answers a
    body it cannot read (never ClientDisconnect, which would be a logged 500).
    """
    try:
        raw = await request.body()
    except ClientDisconnect as exc:
        raise HTTPException(400, UNREADABLE_BODY_DETAIL) from exc
    if not raw.strip():
        if required:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body",), "msg": "empty body", "input": ""}]
            )
        return
    try:
        value = await request.json()
    except json.JSONDecodeError:
        return  # FastAPI's handler parses again and answers its `json_invalid` (400)
    if value is None:
        raise RequestValidationError(
            [{"type": "model_type", "loc": ("body",), "msg": "Input should be an object"}]
        )


class BodyTooLarge(Exception):
    """Raised from `receive` once a streamed (chunked) body passes the limit. Whatever the app
    does with it, BodySizeLimitMiddleware answers 413 (the app's own answer is dropped)."""


async def _no_body() -> Message:
    """`receive` for a response that reads nothing (Starlette's Response never calls it)."""
    return {"type": "http.disconnect"}


class BodySizeLimitMiddleware:
    """413 for a body over `max_bytes`, declared (Content-Length) or streamed (chunked).

    Pure ASGI, so memory never holds more than the limit plus one chunk. A declared length is
    refused at once (before authentication); a streamed body is counted as it is read, and
    whatever the app answers after the limit is passed is replaced by the 413. Without
    `max_bytes` (bytes) the limit is the app's `settings.max_body_bytes` (MAX_BODY_BYTES,
    64 KiB; contract, "Endpoints": "A body over 64 KiB: 413"). The 413 carries
    `Connection: close`: the rest of an unread body must not be parsed as the next request.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes: int = self.max_bytes or scope["app"].state.settings.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > max_bytes:
                    await self._too_large(scope, send)
                    return
                break
        seen = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    exceeded = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._too_large(scope, send)
                return  # the app's own answer to a cut-off body is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await self._too_large(scope, send)

    @staticmethod
    async def _too_large(scope: Scope, send: Send) -> None:
        """Write the 413 envelope (`api.errors.error_response`) as a whole response."""
        response = error_response(413, TOO_LARGE_DETAIL, headers={"Connection": "close"})
        await response(scope, _no_body, send)


class BodyDeadlineMiddleware:
    """Reads a request's whole body before the app (and admission control) sees the request,
    within `timeout` seconds from the end of the head; later is 408 (`api.errors.BodyTimeout`,
    `Connection: close`).

    Contract, "HTTP semantics": idle and slow connections never delay other clients. Placed
    OUTSIDE AdmissionControl (api/app.py), so a body that never arrives (or trickles in) holds
    none of its MAX_CONCURRENT_REQUESTS slots: 20 stalled `Content-Length: 1000` bodies used to
    lock every other user out with 503s for as long as their sockets stayed open.

    Shapes: `timeout` in seconds (HTTP_BODY_TIMEOUT_SECONDS, default the app's settings);
    `max_bytes` in bytes (MAX_BODY_BYTES, default the app's settings). Only requests that
    declare a body (Content-Length > 0, or Transfer-Encoding) are read here. A declared length
    over `max_bytes` is not read: BodySizeLimitMiddleware answers it 413 before authentication,
    as before. A streamed body is held up to `max_bytes` plus one chunk, then handed on with
    the rest unread, so the route's limit answers 413 at once. The body is replayed to the app
    as the messages received (chunked bodies keep their chunks); a client that leaves while
    sending is handed on as the `http.disconnect` it was.
    """

    def __init__(
        self, app: ASGIApp, *, timeout: float | None = None, max_bytes: int | None = None
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _declares_body(scope["headers"]):
            await self.app(scope, receive, send)
            return
        settings = scope["app"].state.settings
        timeout: float = self.timeout or settings.http_body_timeout_seconds
        max_bytes: int = self.max_bytes or settings.max_body_bytes
        length = _content_length(scope["headers"])
        if length is not None and length > max_bytes:
            await self.app(scope, receive, send)  # the route's 413, without reading
            return
        messages: list[Message] = []
        seen = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await receive()
                    messages.append(message)
                    if message["type"] != "http.request":
                        break  # http.disconnect: the app sees it as before
                    seen += len(message.get("body", b""))
                    if not message.get("more_body", False) or seen > max_bytes:
                        break
        except TimeoutError:
            log.info("http_body_timeout", received_bytes=seen, timeout_seconds=timeout)
            await response_for(BodyTimeout())(scope, receive, send)
            return
        replay = iter(messages)

        async def replayed_receive() -> Message:
            for message in replay:
                return message
            return await receive()  # past the limit, or the disconnect again

        await self.app(scope, replayed_receive, send)


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """True when the head announces a body: Transfer-Encoding, or a Content-Length that is not
    0 (RFC 9112 §6.3: without either, a request has no body)."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared Content-Length in bytes, or None (absent, or not a number)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
