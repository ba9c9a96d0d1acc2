"""The checkout check only where it is needed (issue 13; HikariCP's aliveBypassWindowMs).

A connection returned within the last CHECK_BYPASS_SECONDS whose socket has nothing unread
is handed out without the check's round trip: one round trip per request in steady state.
A connection idle longer is checked, and one whose backend was terminated meanwhile (Neon's
suspend, pg_terminate_backend) is noticed from its socket even inside the window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio

import repositories.pool as pool_module
from repositories.pool import CHECK_BYPASS_SECONDS, TasksPool, build_pool


@pytest_asyncio.fixture
async def one_connection(database_url: str) -> AsyncIterator[TasksPool]:
    pool = build_pool(database_url, min_size=1, max_size=1, timeout=5.0, connect_timeout=5)
    await pool.open(wait=True, timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every checkout check (the empty statement) the pool runs, in order."""
    seen: list[str] = []
    real = pool_module.execute_bounded

    async def counting(conn: Any, query: Any, params: Any, **kwargs: Any) -> Any:
        if query == "":
            seen.append("check")
        return await real(conn, query, params, **kwargs)

    monkeypatch.setattr(pool_module, "execute_bounded", counting)
    return seen


async def _pid(pool: TasksPool) -> int:
    rows = await pool.execute("SELECT pg_backend_pid()", {}, deadline=time.monotonic() + 10)
    return int(rows[0][0])


async def test_steady_state_is_one_round_trip_per_statement(
    one_connection: TasksPool, checks: list[str]
) -> None:
    await _pid(one_connection)  # a new connection: checked once
    checks.clear()
    for _ in range(20):
        await _pid(one_connection)
    assert checks == [], "a connection used a moment ago was checked again"
    await asyncio.sleep(CHECK_BYPASS_SECONDS + 0.2)
    await _pid(one_connection)
    assert checks == ["check"], "a connection idle past the window was not checked"


async def test_a_terminated_connection_is_replaced_even_inside_the_window(
    one_connection: TasksPool, checks: list[str], database_url: str
) -> None:
    for _ in range(3):
        before = await _pid(one_connection)
        used_at = time.monotonic()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (before,))
            while admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (before,)
            ).fetchone():
                await asyncio.sleep(0.01)
        assert time.monotonic() - used_at < CHECK_BYPASS_SECONDS, "too slow to test the window"
        after = await _pid(one_connection)  # no error: the dead connection was not handed out
        assert after != before
    assert checks, "the dead connection was not checked"


async def test_a_statement_runs_in_the_callers_task(one_connection: TasksPool) -> None:
    """No task per statement in steady state: the deadline is a timer, not a task of its own
    (repositories/pool.py execute_bounded). A task cost two more turns of the event loop per
    statement, 12 % of the toggle's throughput at c=10 (loadtest/README.md)."""
    await _pid(one_connection)  # the connection is fresh from now on
    loop = asyncio.get_running_loop()
    created: list[object] = []
    previous = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        created.append(coro)
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        for _ in range(10):
            await _pid(one_connection)
    finally:
        loop.set_task_factory(previous)
    assert created == [], f"{len(created)} task(s) for 10 statements"
