"""Every class of database failure becomes DatabaseUnavailable (500 + Retry-After), in time.

Driven through `TaskRepository._run`, the execution edge every repository method uses, on the
test server (directly on PostgreSQL over TCP, so the server-side statement_timeout is set).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from repositories.errors import DatabaseUnavailable
from repositories.pool import TasksPool, build_pool
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


async def _pid(repository: TaskRepository) -> int:
    return int((await repository._run("pid", "SELECT pg_backend_pid()", {}))[0][0])


async def test_a_slow_statement_is_cancelled_at_its_deadline(
    repo: tuple[TaskRepository, TasksPool],
) -> None:
    repository, _ = repo
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        await repository._run("sleep", "SELECT pg_sleep(5)", {})
    assert time.monotonic() - started < POOL_TIMEOUT + STATEMENT_TIMEOUT
    assert await _pid(repository)  # and the service goes on


async def test_the_client_deadline_holds_without_the_server_one(
    repo: tuple[TaskRepository, TasksPool],
) -> None:
    """As behind a pooler, where no server-side statement_timeout is set."""
    repository, _ = repo
    await repository._run("off", "SET statement_timeout = 0", {})
    before = await _pid(repository)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        await repository._run("sleep", "SELECT pg_sleep(5)", {})
    assert time.monotonic() - started < POOL_TIMEOUT + STATEMENT_TIMEOUT
    assert await _pid(repository) != before, "a connection cancelled at a deadline was reused"


@pytest.mark.parametrize(
    "statement",
    ["EXECUTE _pg3_404", "DEALLOCATE _pg3_404", "PREPARE twice AS SELECT 1"],
)
async def test_prepared_statement_errors_are_unavailable_and_discard_the_connection(
    repo: tuple[TaskRepository, TasksPool], statement: str
) -> None:
    """What a pooler mixing up prepared statements produces: never a bare 500, and the
    connection (whose prepared statements psycopg no longer knows) is not reused."""
    repository, _ = repo
    if statement.startswith("PREPARE"):
        await repository._run("prepare", statement, {})  # type: ignore[arg-type]
    before = await _pid(repository)
    with pytest.raises(DatabaseUnavailable):
        await repository._run("bad", statement, {})  # type: ignore[arg-type]
    assert await _pid(repository) != before


async def test_a_terminated_connection_is_unavailable_for_a_write(
    repo: tuple[TaskRepository, TasksPool],
) -> None:
    repository, _ = repo
    with pytest.raises(DatabaseUnavailable):
        await repository._run("suicide", "SELECT pg_terminate_backend(pg_backend_pid())", {})
    assert await _pid(repository)
