"""Start-up against the database: wait for it with backoff, migrate, check the route."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import psycopg
import structlog

from repositories.errors import DatabaseUnavailable, MigrationError
from repositories.migrations import migrate
from repositories.pool import (
    PreparedMode,
    Route,
    StatementTimeout,
    connection_kwargs,
    probe_route,
)
from repositories.service import SERVICE_Q

log = structlog.get_logger(__name__)

# Errors that waiting will not cure: the URL, the credentials or the certificate are wrong.
_PERMANENT: Final = (
    "certificate",
    "ssl error",
    "sslmode",
    "password authentication failed",
    "no pg_hba.conf entry",
    # Covers 'role "x" does not exist'. Not the bare word "role": PostgreSQL 16+ says
    # "remaining connection slots are reserved for roles with the SUPERUSER attribute"
    # when the server is full, which passes.
    "does not exist",
    "invalid dsn",
    "invalid connection option",
    "invalid integer value",
    "invalid port",
)


class DatabaseConfigError(RuntimeError):
    """The database refuses us for a reason that retrying cannot fix (bad URL, credentials
    or certificate; DB_PREPARED_STATEMENTS=on without a direct route). The CLI exits 2."""


def is_permanent(exc: BaseException) -> bool:
    """Whether waiting cannot cure `exc`: a psycopg.ProgrammingError (e.g. a malformed URL),
    or a message naming a bad URL, credential, role, database or certificate."""
    if isinstance(exc, psycopg.ProgrammingError):
        return True
    message = str(exc).lower()
    return any(marker in message for marker in _PERMANENT)


async def prepare_database(
    conninfo: str,
    *,
    startup_timeout: float,
    connect_timeout: int,
    prepared_statements: PreparedMode = "auto",
    statement_timeout: float = 5.0,
    apply_migrations: bool = True,
    pool_connections: int | None = None,
) -> list[int]:
    """Retry until the database answers (within `startup_timeout`), apply migrations (unless
    `apply_migrations` is False: `serve --no-migrate`), and check the route to the server;
    returns the migration versions applied (empty when none or not applying).

    Raises DatabaseConfigError when waiting cannot help: bad credentials or certificate, or
    `DB_PREPARED_STATEMENTS=on` over a connection the server does not confirm is direct (a
    transaction pooler would run one request's prepared statement for another: contract,
    "Database faults"), or, on a direct connection, `pool_connections` (DB_POOL_MAX times the
    workers) above the connections the server allows a client (max_connections less the
    reserved slots): such a pool could never fill, and would fail requests at peak instead
    of at start-up (issue: "pool sizes against max_connections"). Behind a pooler the
    server's limit is not the pooler's, so nothing is checked there. Raises
    DatabaseUnavailable after `startup_timeout` seconds.
    """
    deadline = time.monotonic() + startup_timeout
    delay = 0.25
    attempt = 0
    while True:
        attempt += 1
        try:
            applied: list[int] = []
            if apply_migrations:
                applied = await migrate(conninfo, connect_timeout=connect_timeout)
                log.info("schema_checked", applied=applied)  # once per deploy, not per worker
            route, slots = await check_route(
                conninfo, connect_timeout=connect_timeout, statement_timeout=statement_timeout
            )
        except MigrationError:
            raise
        except (psycopg.Error, StatementTimeout, TimeoutError) as exc:
            if is_permanent(exc):
                raise DatabaseConfigError(_first_line(exc)) from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnavailable(
                    f"database not reachable after {startup_timeout:g}s: {_first_line(exc)}"
                ) from exc
            log.warning(
                "database_waiting",
                attempt=attempt,
                retry_in=round(delay, 2),
                error=_first_line(exc),
            )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)
            continue
        log.info(
            "database_route",
            direct=route.direct,
            prepared_statements=prepared_statements,
            prepare=prepared_statements != "off" and route.direct,
            reason=route.reason,
        )
        if prepared_statements == "on" and not route.direct:
            raise DatabaseConfigError(
                "DB_PREPARED_STATEMENTS=on, but the server does not confirm a direct "
                f"connection ({route.reason}): behind a transaction pooler a prepared "
                "statement can run for another request; set DB_PREPARED_STATEMENTS=auto "
                "(prepares only where the connection is direct) or off"
            )
        if pool_connections is not None and slots is not None and pool_connections > slots:
            raise DatabaseConfigError(
                f"DB_POOL_MAX (x workers) asks for {pool_connections} connections, but the "
                f"server allows {slots} (max_connections less its reserved slots): lower "
                "DB_POOL_MAX or the workers, or raise max_connections"
            )
        return applied


async def check_route(
    conninfo: str, *, connect_timeout: int, statement_timeout: float
) -> tuple[Route, int | None]:
    """Whether a connection made like the pool's reaches PostgreSQL with no pooler between,
    and, when it does, how many connections the server allows a non-superuser client.

    Returns (`Route` (`direct`, and the `reason` for the log), the slots: max_connections
    less superuser_reserved_connections and, on PostgreSQL 16+, reserved_connections; None
    behind a pooler). `connect_timeout` is whole seconds (libpq), `statement_timeout` seconds
    for each probe statement. Raises psycopg.Error when the connection fails and
    StatementTimeout (or TimeoutError) when the probe does not answer in time.
    """
    kwargs = connection_kwargs(
        prepare_threshold=None, connect_timeout=connect_timeout, statement_timeout=statement_timeout
    )
    conn = await psycopg.AsyncConnection.connect(conninfo, **kwargs)
    try:
        route = await probe_route(conn, within=statement_timeout)
        if not route.direct:
            return route, None
        async with asyncio.timeout(statement_timeout):
            cur = await conn.execute(SERVICE_Q["connection_slots"])
            row = await cur.fetchone()
        return route, int(row[0]) if row else None
    finally:
        await conn.close()


def _first_line(exc: BaseException) -> str:
    # libpq's messages run over several lines (DETAIL, HINT); a start-up failure is one line.
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
