"""The service's own statements (readiness), kept apart from the task statements."""

from __future__ import annotations

from typing import Final

import psycopg

from repositories.pool import TasksPool
from repositories.queries import load
from repositories.statements import run_statement

#: Named statements of `sql/service.sql`.
SERVICE_Q: Final = load("service.sql")


async def schema_version(pool: TasksPool) -> int:
    """The highest applied migration version (0 for a database never migrated).

    Raises DatabaseUnavailable when the database does not answer within DB_POOL_TIMEOUT +
    DB_STATEMENT_TIMEOUT seconds (`run_statement`).
    """
    try:
        rows = await run_statement(
            pool, "schema_version", SERVICE_Q["schema_version"], {}, retry=True
        )
    except psycopg.errors.UndefinedTable:
        return 0  # never migrated: not ready, rather than a 500
    return int(rows[0]["version"])
