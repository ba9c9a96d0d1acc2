"""The psycopg connection pool: one per process, opened and closed in the app's lifespan."""

from __future__ import annotations

from time import monotonic
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from psycopg_pool.pool_async import AddConnection, MaintenanceTask


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


class TasksPool(AsyncConnectionPool[AsyncConnection[Any]]):
    """The pool, minus one delay: a connection that fails its check is replaced at once.

    psycopg_pool 3.3 sleeps with backoff (1 s, then 2 s, 4 s…) after each connection that
    fails the checkout check. When Neon suspends (or the server restarts) every idle
    connection is dead at once, so the first request after it slept through one delay per
    dead connection and ran out of DB_POOL_TIMEOUT. Dead connections are discarded back to
    back instead; waiting for a new one still honours the request's deadline.
    """

    # Reconnection backs off 1 s, 2 s, 4 s… without a ceiling: after a one-minute outage
    # the next attempt could be a minute away. Attempts keep their backoff, capped here.
    MAX_RECONNECT_DELAY = 2.0

    async def schedule_task(self, task: MaintenanceTask, delay: float) -> None:
        if isinstance(task, AddConnection):
            delay = min(delay, self.MAX_RECONNECT_DELAY)
        await super().schedule_task(task, delay)

    async def _getconn_with_check_loop(self, deadline: float) -> AsyncConnection[Any]:
        while True:
            conn = await self._getconn_unchecked(deadline - monotonic())
            try:
                await self._check_connection(conn)
            except Exception:
                await self._putconn(conn, from_getconn=True)
                if monotonic() >= deadline:
                    raise PoolTimeout() from None
                continue
            except BaseException:
                await self._putconn(conn, from_getconn=True)
                raise
            return conn


def build_pool(
    conninfo: str,
    *,
    min_size: int,
    max_size: int,
    timeout: float,
    prepare_threshold: int | None,
    connect_timeout: int,
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    return TasksPool(
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
