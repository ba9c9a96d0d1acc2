"""Every class of database failure becomes DatabaseUnavailable (500 + Retry-After), in time.

Driven through `TaskRepository._run`, the execution edge every repository method uses, on the
test server (directly on PostgreSQL over TCP, so the server-side statement_timeout is set).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, LiteralString

import psycopg
import pytest
import pytest_asyncio

from repositories.errors import DatabaseUnavailable
from repositories.pool import TasksPool, build_pool, detach
from repositories.statements import run_statement
from repositories.tasks import TaskRepository

STATEMENT_TIMEOUT = 0.5
POOL_TIMEOUT = 1.0


@pytest_asyncio.fixture
async def repo(database_url: str) -> AsyncIterator[tuple[TaskRepository, TasksPool]]:
    pool = build_pool(
        database_url,
        min_size=1,
        max_size=1,
        timeout=POOL_TIMEOUT,
        connect_timeout=5,
        statement_timeout=STATEMENT_TIMEOUT,
    )
    await pool.open(wait=True, timeout=10)
    try:
        yield TaskRepository(pool), pool
    finally:
        await pool.close()


async def _exec(pool: TasksPool, name: str, statement: LiteralString) -> list[dict[str, Any]]:
    """One statement through the service's execution edge (deadline, errors, discard)."""
    return await run_statement(pool, name, statement, {})


async def _pid(pool: TasksPool) -> int:
    return int((await _exec(pool, "pid", "SELECT pg_backend_pid() AS pid"))[0]["pid"])


async def test_a_slow_statement_is_cancelled_at_its_deadline(
    repo: tuple[TaskRepository, TasksPool],
) -> None:
    _, pool = repo
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        await _exec(pool, "sleep", "SELECT pg_sleep(5)")
    assert time.monotonic() - started < POOL_TIMEOUT + STATEMENT_TIMEOUT
    assert await _pid(pool)  # and the service goes on


async def test_the_client_deadline_holds_without_the_server_one(
    repo: tuple[TaskRepository, TasksPool],
) -> None:
    """As behind a pooler, where no server-side statement_timeout is set."""
    _, pool = repo
    await _exec(pool, "off", "SET statement_timeout = 0")
    before = await _pid(pool)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        await _exec(pool, "sleep", "SELECT pg_sleep(5)")
    assert time.monotonic() - started < POOL_TIMEOUT + STATEMENT_TIMEOUT
    assert await _pid(pool) != before, "a connection cancelled at a deadline was reused"


@pytest.mark.parametrize(
    "statement",
    ["EXECUTE _pg3_404", "DEALLOCATE _pg3_404", "PREPARE twice AS SELECT 1"],
)
async def test_prepared_statement_errors_are_unavailable_and_discard_the_connection(
    repo: tuple[TaskRepository, TasksPool], statement: str
) -> None:
    """What a pooler mixing up prepared statements produces: never a bare 500, and the
    connection (whose prepared statements psycopg no longer knows) is not reused."""
    _, pool = repo
    if statement.startswith("PREPARE"):
        await _exec(pool, "prepare", statement)  # type: ignore[arg-type]
    before = await _pid(pool)
    with pytest.raises(DatabaseUnavailable):
        await _exec(pool, "bad", statement)  # type: ignore[arg-type]
    assert await _pid(pool) != before


async def test_a_terminated_connection_is_unavailable_for_a_write(
    repo: tuple[TaskRepository, TasksPool],
) -> None:
    _, pool = repo
    with pytest.raises(DatabaseUnavailable):
        await _exec(pool, "suicide", "SELECT pg_terminate_backend(pg_backend_pid())")
    assert await _pid(pool)


async def test_a_caller_that_stops_waiting_never_cancels_the_statement(
    repo: tuple[TaskRepository, TasksPool], database_url: str
) -> None:
    """`/ready`'s way (`detach`, then `asyncio.shield`): its own timeout ends its wait at
    once, and the statement goes on to its own deadline. Cancelled inside psycopg's wait,
    psycopg would cancel it on the server first, waiting up to 5 + 5 s for a silent one
    (repositories/pool.py)."""
    _, pool = repo
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await asyncio.shield(detach(_exec(pool, "sleep", "SELECT pg_sleep(0.45)")))
    assert time.monotonic() - started < 0.4
    with psycopg.connect(database_url, autocommit=True) as admin:
        running = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(0.45)'"
            " AND state = 'active'"
        ).fetchone()
    assert running == (1,), "the statement was cancelled with its caller"
    await asyncio.sleep(0.5)
    assert await _pid(pool)  # it ended, and the connection came back
