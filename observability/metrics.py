"""Prometheus metrics beyond the HTTP ones of prometheus-fastapi-instrumentator.

Served at `/metrics` (contract, "Service endpoints"); under `serve --workers N` the values
of the live workers are summed (observability/multiprocess.py).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

SQL_DURATION = Histogram(
    "tasks_db_statement_duration_seconds",
    "Time of one SQL statement, connection checkout included, by statement name.",
    ["statement"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
AUTH_FAILURES = Counter(
    "tasks_auth_failures_total",
    "Requests refused with 401 or 403, by reason.",
    ["reason"],
)

REQUESTS_REFUSED = Counter(
    "tasks_http_requests_refused_total",
    "Requests refused with 503 before reaching a route (api/admission.py), by reason.",
    ["reason"],
)


@functools.cache
def _sql_child(statement: str) -> Any:
    # `labels()` takes a lock and validates on every call; the names are a fixed set.
    return SQL_DURATION.labels(statement=statement)


def observe_sql(statement: str, seconds: float) -> None:
    """Record one statement's time in seconds, by its `-- name:` in sql/ (a bounded label)."""
    _sql_child(statement).observe(seconds)


def count_auth_failure(reason: str) -> None:
    """Count one 401 or 403 by `reason` (AuthError.reason or `user_mismatch`, a fixed set)."""
    AUTH_FAILURES.labels(reason=reason).inc()


# --- pool gauges ------------------------------------------------------------------------------
# Each worker has its own pool; under `serve --workers N` (multiprocess mode) `livesum` adds
# the live workers' values, so the gauges describe the whole service. Outside multiprocess
# mode `multiprocess_mode` is ignored.

POOL_SIZE = Gauge(
    "tasks_db_pool_size", "Connections in the pool (busy and idle).", multiprocess_mode="livesum"
)
POOL_IDLE = Gauge(
    "tasks_db_pool_idle", "Idle connections in the pool.", multiprocess_mode="livesum"
)
POOL_WAITING = Gauge(
    "tasks_db_pool_waiting", "Requests waiting for a connection.", multiprocess_mode="livesum"
)
POOL_MAX = Gauge("tasks_db_pool_max", "Configured maximum pool size.", multiprocess_mode="livesum")


def update_pool_gauges(stats: Mapping[str, int]) -> None:
    """Set the pool gauges from psycopg_pool's `get_stats()` (connection and request counts
    by psycopg_pool's names; a missing key counts as 0)."""
    POOL_SIZE.set(stats.get("pool_size", 0))
    POOL_IDLE.set(stats.get("pool_available", 0))
    POOL_WAITING.set(stats.get("requests_waiting", 0))
    POOL_MAX.set(stats.get("pool_max", 0))


def _forget_this_process() -> None:
    """In multiprocess mode, drop this worker's live gauges, so a stopped or restarted worker
    does not keep counting in the `livesum`."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


#: Every how many refreshes the reporter forgets workers that died (about every 5 s).
_SWEEP_EVERY = 5


async def pool_stats_reporter(pool: Any, *, interval: float = 1.0) -> None:
    """Refresh the pool gauges every `interval` seconds until cancelled (at shutdown); at
    start and every few refreshes, drop the live gauges of workers that died without a
    clean exit (observability.multiprocess.forget_dead_processes).

    `pool` is anything with psycopg_pool's `get_stats() -> dict[str, int]`. Returns only by
    cancellation, which it re-raises after dropping this worker's own live gauges.
    """
    from observability.multiprocess import forget_dead_processes

    try:
        for beat in itertools.count():
            if beat % _SWEEP_EVERY == 0:
                forget_dead_processes()
            update_pool_gauges(pool.get_stats())
            await asyncio.sleep(interval)
    finally:
        _forget_this_process()
