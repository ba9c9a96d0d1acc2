"""The /metrics endpoint for FastAPI (kept apart so that repositories never import FastAPI).

The HTTP metrics themselves are recorded by observability.middleware.RequestContextMiddleware.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator

from observability.middleware import HTTP_DURATION, HTTP_REQUESTS

__all__ = ["HTTP_DURATION", "HTTP_REQUESTS", "instrument_app"]


def instrument_app(app: FastAPI) -> None:
    """Serve /metrics (Prometheus text format, not in the OpenAPI schema, never gzipped).

    `http_requests_total` and `http_request_duration_seconds` (by handler = route template,
    method, status) are recorded by RequestContextMiddleware, which the app installs. In
    multiprocess mode (PROMETHEUS_MULTIPROC_DIR set, `serve --workers N`) the handler collects
    every worker's files through prometheus_client's MultiProcessCollector (the
    instrumentator's `expose`, of which only the endpoint is used: its middleware matched
    every route a second time per request).
    """
    Instrumentator().expose(app, include_in_schema=False, should_gzip=False)
