"""Start-up against the database: wait for it with backoff, then migrate."""

from __future__ import annotations

import asyncio
import time
from typing import Final

import psycopg
import structlog

from repositories.errors import DatabaseUnavailable, MigrationError
from repositories.migrations import migrate

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
    """The database refuses us for a reason that retrying cannot fix."""


def is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, psycopg.ProgrammingError):
        return True
    message = str(exc).lower()
    return any(marker in message for marker in _PERMANENT)


async def prepare_database(
    conninfo: str,
    *,
    startup_timeout: float,
    connect_timeout: int,
    apply_migrations: bool = True,
) -> list[int]:
    """Retry until the database answers (within `startup_timeout`), then apply migrations.

    With `apply_migrations=False` only wait until it answers (`serve --no-migrate`); returns
    the versions applied (empty then).
    """
    deadline = time.monotonic() + startup_timeout
    delay = 0.25
    attempt = 0
    while True:
        attempt += 1
        try:
            if not apply_migrations:
                await _ping(conninfo, connect_timeout=connect_timeout)
                return []
            applied = await migrate(conninfo, connect_timeout=connect_timeout)
            log.info("schema_checked", applied=applied)  # once per deploy step, not per worker
            return applied
        except MigrationError:
            raise
        except psycopg.Error as exc:
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


async def _ping(conninfo: str, *, connect_timeout: int) -> None:
    async with await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, prepare_threshold=None, connect_timeout=connect_timeout
    ) as conn:
        await conn.execute("SELECT 1")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
