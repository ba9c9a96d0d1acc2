"""The psycopg connection pool: one per process, opened and closed in the app's lifespan."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


def connection_kwargs(
    *, prepare_threshold: int | None, connect_timeout: int, application_name: str = "tasks-api"
) -> dict[str, Any]:
    """Per-connection settings. Autocommit: every repository call is a single statement."""
    return {
        "autocommit": True,
        "prepare_threshold": prepare_threshold,
        "connect_timeout": connect_timeout,
        "application_name": application_name,
    }


def build_pool(
    conninfo: str,
    *,
    min_size: int,
    max_size: int,
    timeout: float,
    prepare_threshold: int | None,
    connect_timeout: int,
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        name="tasks-api",
        # A connection dropped while idle (Neon suspend, pg_terminate_backend, restart) is
        # noticed at checkout and replaced, instead of failing the request that drew it.
        check=AsyncConnectionPool.check_connection,
        # Neon closes idle connections when it suspends; don't keep more than needed.
        max_idle=300.0,
        max_lifetime=1800.0,
        # Keep trying to reconnect through an outage; requests fail fast meanwhile.
        reconnect_timeout=3600.0,
        kwargs=connection_kwargs(
            prepare_threshold=prepare_threshold, connect_timeout=connect_timeout
        ),
    )
