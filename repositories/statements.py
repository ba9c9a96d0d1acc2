"""The execution edge: one named statement on one pooled connection, within one deadline."""

from __future__ import annotations

import time
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from observability.metrics import observe_sql
from repositories.errors import DatabaseUnavailable
from repositories.pool import CONNECTION_FAILURES, StatementTimeout, TasksPool

#: One result row, by column name (psycopg's dict_row): immune to a reordered SELECT.
Row = dict[str, Any]


async def run_statement(
    pool: TasksPool,
    name: str,
    query: LiteralString,
    params: dict[str, Any],
    *,
    retry: bool = False,
) -> list[Row]:
    """Run `query` (the statement `name` of `sql/`, for metrics and errors) on a connection
    borrowed for exactly this statement; its rows as dicts, read by column name.

    The whole call, retry included, ends within DB_POOL_TIMEOUT + DB_STATEMENT_TIMEOUT
    seconds (contract, "Database faults"). Every failure of the database or the path to it
    (no connection in time, connection lost, protocol or prepared-statement errors, a
    statement cancelled at its deadline or by the server's statement_timeout) raises
    DatabaseUnavailable, which the API answers 500 + Retry-After. Other driver errors (e.g.
    psycopg.errors.UndefinedTable) propagate unchanged.

    `retry` is only for statements that are safe to run twice (reads): a connection that
    broke mid-statement gets one more chance on a fresh connection within the deadline.
    """
    deadline = time.monotonic() + pool.timeout + pool.statement_timeout
    attempts = 2 if retry else 1
    for attempt in range(attempts):
        started = time.perf_counter()
        try:
            rows = await pool.execute(query, params, deadline=deadline, row_factory=dict_row)
        except PoolTimeout as exc:
            raise DatabaseUnavailable("no database connection within the pool timeout") from exc
        except StatementTimeout as exc:
            raise DatabaseUnavailable(f"{name}: {exc}") from exc
        except psycopg.errors.QueryCanceled as exc:  # the server's statement_timeout
            raise DatabaseUnavailable(f"{name}: statement cancelled") from exc
        except CONNECTION_FAILURES as exc:
            if attempt + 1 < attempts and time.monotonic() < deadline:
                continue
            raise DatabaseUnavailable(f"{name}: {type(exc).__name__}") from exc
        observe_sql(name, time.perf_counter() - started)
        return rows
    raise AssertionError("unreachable")
