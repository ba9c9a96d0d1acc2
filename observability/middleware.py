"""Request ids and the one access line per request (pure ASGI, so streaming is untouched)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("tasks_api.access")

REQUEST_ID_HEADER: Final = "x-request-id"
_SANE_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_FALLBACK_500: Final = b'{"status_code":500,"detail":"Internal server error"}'


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is sane (bounded length and charset), else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            try:
                candidate = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if _SANE_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Last resort: everything under the router already answers in the envelope.
            log.error("unhandled_error", exc_info=exc)
            status = 500
            if not response_started:
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send_with_id({"type": "http.response.body", "body": _FALLBACK_500})
        finally:
            self._access_line(scope, status, started)
            structlog.contextvars.clear_contextvars()

    @staticmethod
    def _access_line(scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        state: dict[str, Any] = scope.get("state") or {}
        fields: dict[str, Any] = {
            "method": scope["method"],
            "route": getattr(route, "path", None) or "<unmatched>",
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        user_id = state.get("user_id")
        if user_id is not None:
            fields["user_id"] = user_id
        log.info("request", **fields)
