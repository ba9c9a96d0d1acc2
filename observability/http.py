"""HTTP metrics for FastAPI (kept apart so that repositories never import FastAPI)."""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info

# Probes and scrapes would drown the traffic that matters; anchored so no route is caught by
# accident.
EXCLUDED_HANDLERS: Final = ["^/metrics$", "^/health$", "^/ready$"]
# Fine at the low end (one SQL round trip is a few ms), up to the pool timeout and beyond.
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
LABELS: Final = ("handler", "method", "status")

# Defined once per process, so that every app built in it (tests build several) records into
# the same series; the instrumentator's own metric factories would silently skip all but one.
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route template, method and status.", LABELS
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency in seconds by route template, method and status.",
    LABELS,
    buckets=LATENCY_BUCKETS,
)


def _record(info: Info) -> None:
    labels = (info.modified_handler, info.method, info.modified_status)
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_DURATION.labels(*labels).observe(info.modified_duration)


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
    instrumentator.add(_record)
    instrumentator.instrument(app).expose(app, include_in_schema=False, should_gzip=False)
