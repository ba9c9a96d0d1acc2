"""HTTP metrics for FastAPI (kept apart so that repositories never import FastAPI)."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator


def instrument_app(app: FastAPI) -> None:
    """Request count and latency by route template and status; serves /metrics."""
    Instrumentator(
        should_group_status_codes=False,
        should_ignore_untemplated=True,
        excluded_handlers=["/metrics", "/health", "/ready"],
    ).instrument(app).expose(app, include_in_schema=False, should_gzip=False)
