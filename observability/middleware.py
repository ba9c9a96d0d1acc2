"""Request ids, the one access line and the HTTP metrics of every request, in one pure ASGI layer.

One layer instead of three (request id, access log, prometheus-fastapi-instrumentator's
middleware): the route template comes from `scope["route"]`, which the router sets while
handling the request, instead of matching every route a second time; nothing is built per
request that is not used (no Request, Response or Info object, no empty `asyncio.gather`).
Streaming responses pass through untouched.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from typing import Any, Final

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("tasks_api.access")

REQUEST_ID_HEADER: Final = "x-request-id"
_SANE_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_FALLBACK_500: Final = b'{"status_code":500,"detail":"Internal server error"}'

# Probes and scrapes would drown the traffic that matters (route templates, exact).
EXCLUDED_HANDLERS: Final = frozenset({"/metrics", "/health", "/ready"})
# Fine at the low end (one SQL round trip is a few ms), up to the pool timeout and beyond.
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
LABELS: Final = ("handler", "method", "status")
# Defined once per process, so that every app built in it (tests build several) records into
# the same series. The names and labels are prometheus-fastapi-instrumentator's, which
# recorded them before this middleware did.
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route template, method and status.", LABELS
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency in seconds by route template, method and status.",
    LABELS,
    buckets=LATENCY_BUCKETS,
)


@functools.cache
def _http_children(handler: str, method: str, status: str) -> tuple[Any, Any]:
    # The two labelled children: `labels()` takes a lock and validates on every call.
    # Bounded: handlers are route templates or "none", methods are the few httptools parses,
    # statuses are ours.
    return HTTP_REQUESTS.labels(handler, method, status), HTTP_DURATION.labels(
        handler, method, status
    )


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is sane (1-128 of `A-Za-z0-9._:-`), else a new one
    (32 hex digits)."""
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


def _is_preflight(scope: Scope) -> bool:
    """A CORS preflight, answered by CORSMiddleware before routing (never counted, as when the
    instrumentator sat inside CORS): OPTIONS with Origin and Access-Control-Request-Method."""
    names = {name for name, _ in scope.get("headers", [])}
    return b"origin" in names and b"access-control-request-method" in names


def record_request(scope: Scope, status: int, seconds: float) -> None:
    """Count and time one request as `http_requests_total` / `http_request_duration_seconds`
    by handler (the route template; "none" for a path that matched no route, so a scanner
    cannot blow up the label set), method and status. /metrics, /health, /ready and CORS
    preflights are not recorded."""
    route = scope.get("route")
    handler = getattr(route, "path", None) or "none"
    method: str = scope["method"]
    if handler in EXCLUDED_HANDLERS or (
        handler == "none" and method == "OPTIONS" and _is_preflight(scope)
    ):
        return
    requests, duration = _http_children(handler, method, str(status))
    requests.inc()
    duration.observe(seconds)


class RequestContextMiddleware:
    """The outermost layer: binds `request_id` for every log line of the request, returns it as
    X-Request-ID, writes one access line (method, route template, status, duration_ms,
    user_id) and records the HTTP metrics. An exception that escapes everything below becomes
    the 500 envelope here (logged as `unhandled_error`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))
        id_header = (b"x-request-id", request_id.encode("ascii"))
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
                headers.append(id_header)
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
            seconds = time.perf_counter() - started
            record_request(scope, status, seconds)
            self._access_line(scope, status, seconds)
            structlog.contextvars.clear_contextvars()

    @staticmethod
    def _access_line(scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        state: dict[str, Any] = scope.get("state") or {}
        fields: dict[str, Any] = {
            "method": scope["method"],
            "route": getattr(route, "path", None) or "<unmatched>",
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        user_id = state.get("user_id")
        if user_id is not None:
            fields["user_id"] = user_id
        log.info("request", **fields)
