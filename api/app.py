"""The FastAPI application: create_app() and its lifespan (database, pool, JWKS)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from api.admission import AdmissionControl
from api.auth import JWKSCache, TokenVerifier
from api.body import BodyDeadlineMiddleware
from api.cors import JSONCORSMiddleware
from api.errors import install_error_handlers
from api.routes.docs import router as docs_router
from api.routes.service import router as service_router
from api.routes.tasks import router as tasks_router
from api.routing import HTTPRoute
from api.settings import Settings, check_auth_configured, get_settings
from observability.http import instrument_app
from observability.logging import configure_logging
from observability.metrics import pool_stats_reporter
from observability.middleware import RequestContextMiddleware
from repositories.database import prepare_database
from repositories.pool import build_pool
from repositories.tasks import TaskRepository

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open what requests need, yield while serving, close it all on shutdown.

    Takes the app built by `create_app` (`app.state.settings` and `.verifier` set). Sets
    `app.state.pool` (a `TasksPool`) and `app.state.tasks` (a `TaskRepository`); `/ready`
    answers 503 "Starting up" until they exist. With MIGRATE_ON_START it first waits for the
    database and migrates (`prepare_database`). With DB_POOL_MIN > 0 the pool's first
    connections are waited for, at most max(DB_STARTUP_TIMEOUT, 1) seconds. The JWKS is
    fetched in the background, so a slow or absent JWKS never delays start (contract,
    "Authentication and ownership": the service stays up when the JWKS cannot be fetched).

    Raises what `prepare_database` raises (DatabaseConfigError, DatabaseUnavailable,
    MigrationError) and psycopg_pool.PoolTimeout when the pool cannot open in time; uvicorn
    then reports a failed start-up.
    """
    settings: Settings = app.state.settings
    assert settings.database_url is not None, "resolved by the CLI or the caller"
    if settings.migrate_on_start:
        # `tasks-api serve` has already waited, migrated and checked the route once for all
        # its workers and sets MIGRATE_ON_START=false for them; this is for an app run by
        # other means (tests, `uvicorn api.app:create_app --factory`).
        await prepare_database(
            settings.database_url,
            startup_timeout=settings.db_startup_timeout,
            connect_timeout=settings.db_connect_timeout,
            prepared_statements=settings.db_prepared_statements,
            statement_timeout=settings.db_statement_timeout,
            pool_connections=settings.db_pool_max,
        )
    pool = build_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout,
        connect_timeout=settings.db_connect_timeout,
        prepared_statements=settings.db_prepared_statements,
        statement_timeout=settings.db_statement_timeout,
    )
    await pool.open(wait=settings.db_pool_min > 0, timeout=max(settings.db_startup_timeout, 1.0))
    app.state.pool = pool
    app.state.tasks = TaskRepository(pool)
    jwks: JWKSCache | None = app.state.verifier.jwks
    warm: asyncio.Task[None] | None = None
    if jwks is not None:
        warm = asyncio.create_task(jwks.refresh(force=True))  # warm the cache, never block start
    reporter = asyncio.create_task(pool_stats_reporter(pool))
    # Everything built so far (modules, the app, OpenAPI, pydantic schemas, the pool) lives as
    # long as the process: out of the collector's sight, a full collection scans only what
    # requests made. Without it the requests' objects that were in flight at a young
    # collection reached the old generation fast enough to set off a full collection about
    # once a second under load, each scanning the whole heap for 60-70 ms with the event loop
    # stopped: every request in flight waited (p99 of a GET 50-70 ms against 6 ms for the
    # ceiling app; loadtest/README.md, "Capacity"). Python's gc.freeze() documentation.
    # Start-up's own garbage is collected first, so that none of it is kept for good.
    gc.collect()
    gc.freeze()
    log.info(
        "service_ready",
        pool_min=settings.db_pool_min,
        pool_max=settings.db_pool_max,
        prepared_statements=settings.db_prepared_statements,
        jwks=jwks.url if jwks else None,
    )
    try:
        yield
    finally:
        reporter.cancel()
        if warm is not None:
            warm.cancel()
        if jwks is not None:
            await jwks.aclose()
        await pool.close()
        log.info("service_stopped")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The Tasks API as an ASGI app; `settings` default to the environment's (`get_settings`).

    Builds the token verifier (HS256/384/512 with BETTER_AUTH_SECRET, and/or the JWKS), the
    routes, the error handlers and the middleware stack; opens nothing (that is `lifespan`).
    Also uvicorn's factory (`api.app:create_app`, `--factory`) in every worker.

    Raises ConfigError when no token could ever verify or the secret is shorter than
    RFC 7518 §3.2 allows (`check_auth_configured`), and when the environment is invalid.
    """
    settings = settings or get_settings()
    check_auth_configured(settings)
    configure_logging(level=settings.log_level, fmt=settings.effective_log_format.value)

    app = FastAPI(
        title="Tasks API",
        version="1.0.0",
        summary="Multi-user tasks for a Next.js + Better Auth frontend.",
        lifespan=lifespan,
        docs_url=None,  # served offline by api/routes/docs.py
        redoc_url=None,  # ReDoc's bundle loads its logo from a CDN: not offline
        # Contract, "HTTP semantics": a trailing slash is served as the path without it
        # (api/routing.py), never redirected.
        redirect_slashes=False,
    )
    # Routes added on the app itself (/metrics) answer HEAD and a trailing slash too.
    app.router.route_class = HTTPRoute
    app.state.settings = settings
    jwks_url = settings.jwks_url
    app.state.verifier = TokenVerifier(
        secret=settings.better_auth_secret.get_secret_value()
        if settings.better_auth_secret
        else None,
        jwks=JWKSCache(
            jwks_url,
            min_refresh=settings.jwks_min_refresh_seconds,
            timeout=settings.jwks_fetch_timeout,
        )
        if jwks_url
        else None,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway=settings.jwt_leeway_seconds,
    )
    install_error_handlers(app)
    app.include_router(service_router)
    app.include_router(tasks_router)
    app.include_router(docs_router)

    # Outermost first: request id and access line, then CORS, then the body deadline, then
    # admission control, then metrics (added last below).
    # The body size limit sits on the routes that take a body (api/body.py).
    instrument_app(app)
    # Overload is refused here, inside CORS (so a browser can read the 503) and before the
    # metrics middleware and the routes spend anything on it (api/admission.py).
    app.add_middleware(
        AdmissionControl,
        max_in_flight=settings.effective_max_concurrent_requests,
        timeout=settings.effective_admission_timeout,
    )
    # Outside admission control (and inside CORS and the request id, which its 408 gets): a
    # body is read whole, under HTTP_BODY_TIMEOUT_SECONDS, before the request takes a slot, so
    # stalled or trickled bodies cannot lock other users out (api/body.py).
    app.add_middleware(BodyDeadlineMiddleware)
    app.add_middleware(
        JSONCORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        # Conditional requests and safe retries (contract): the three request headers, and
        # ETag readable from script.
        allow_headers=[
            "Authorization",
            "Content-Type",
            "X-Request-ID",
            "If-Match",
            "If-None-Match",
            "Idempotency-Key",
        ],
        expose_headers=["X-Request-ID", "X-Total-Count", "Location", "Retry-After", "ETag"],
        allow_credentials=False,
        max_age=600,
    )
    app.add_middleware(RequestContextMiddleware)
    return app
