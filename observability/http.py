"""HTTP metrics for FastAPI (kept apart so that repositories never import FastAPI)."""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator, metrics

# Probes and scrapes would drown the traffic that matters; anchored so no route is caught by
# accident.
EXCLUDED_HANDLERS: Final = ["^/metrics$", "^/health$", "^/ready$"]
# Fine at the low end (one SQL round trip is a few ms), up to the pool timeout and beyond.
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def instrument_app(app: FastAPI) -> None:
    """`http_requests_total` and `http_request_duration_seconds` by handler (the route
    template), method and status; serves /metrics.

    Paths that match no route are counted under handler="none" rather than by raw path, so a
    scanner cannot blow up the label set. In multiprocess mode (PROMETHEUS_MULTIPROC_DIR set,
    `serve --workers N`) the instrumentator's /metrics handler collects every worker's files
    through prometheus_client's MultiProcessCollector.
    """
    instrumentator = Instrumentator(
        should_group_status_codes=False,
        should_ignore_untemplated=False,
        should_group_untemplated=True,
        excluded_handlers=EXCLUDED_HANDLERS,
    )
    instrumentator.add(metrics.requests())
    instrumentator.add(metrics.latency(buckets=LATENCY_BUCKETS))
    instrumentator.instrument(app).expose(app, include_in_schema=False, should_gzip=False)
