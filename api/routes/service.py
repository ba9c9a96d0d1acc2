"""Service endpoints without authentication: `/health` (process up) and `/ready` (database)."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.errors import RETRY_AFTER_SECONDS, error_response
from api.lifecycle import is_draining
from api.routing import HTTPRoute
from api.settings import Settings
from repositories.errors import DatabaseUnavailable
from repositories.migrations import latest_version
from repositories.pool import TasksPool, detach
from repositories.service import schema_version

#: Contract, "Database faults": `/ready` answers 503 within 2 s whatever the database does.
READY_TIMEOUT_SECONDS: Final = 2.0

router = APIRouter(tags=["service"], route_class=HTTPRoute)


@cache
def _expected_version() -> int:
    """The newest migration's version number, read once."""
    return latest_version()  # the migration files do not change while the process runs


@router.get("/health", summary="The process is up (no database)")
async def health() -> dict[str, str]:
    """Always 200 `{"status": "ok"}`: the process answers; the database is not touched
    (contract, "Service endpoints": `/health`, process is up, no database)."""
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Database reachable and schema current",
    responses={503: {"description": "Not ready; `detail` says why"}},
)
async def ready(request: Request) -> Any:
    """200 `{"status": "ready", "schema_version": int}`, or 503 with the reason in `detail`.

    503 while the lifespan has not opened the pool yet ("Starting up"), when the
    database does not answer within min(2 s, DB_POOL_TIMEOUT) (with `Retry-After`), or when
    the schema is older than the newest migration. Contract, "Service endpoints" and
    "Database faults" (`/ready` 503 within its 2 s). Never raises for a database fault.
    503 "Shutting down" from the first SIGTERM/SIGINT on (the drain, api/lifecycle.py), so a
    balancer moves traffic away while the instance still serves what it gets.
    """
    if is_draining():
        return error_response(503, "Shutting down")
    settings: Settings = request.app.state.settings
    pool: TasksPool | None = getattr(request.app.state, "pool", None)
    if pool is None:
        return error_response(503, "Starting up")
    try:
        # A probe must answer before its own timeout, even while requests wait out
        # DB_POOL_TIMEOUT for a connection. The statement runs in a task of its own: the
        # timeout ends this wait, and the statement ends by its own deadline (never
        # cancelled: repositories/pool.py execute_bounded). Probes that arrive while one
        # runs share it, so a hammered /ready on a slow database holds one connection.
        probe: asyncio.Task[int] | None = getattr(request.app.state, "ready_probe", None)
        if probe is None or probe.done():
            probe = request.app.state.ready_probe = detach(schema_version(pool))
        async with asyncio.timeout(min(READY_TIMEOUT_SECONDS, settings.db_pool_timeout)):
            version = await asyncio.shield(probe)
    except (DatabaseUnavailable, TimeoutError):
        return error_response(
            503, "Database unavailable", headers={"Retry-After": RETRY_AFTER_SECONDS}
        )
    expected = _expected_version()
    if version < expected:
        return error_response(503, f"Schema version {version}, expected {expected}")
    return JSONResponse({"status": "ready", "schema_version": version})
