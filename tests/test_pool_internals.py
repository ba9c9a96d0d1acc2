"""The psycopg_pool internals `repositories/pool.py` overrides are still there, as written.

`TasksPool` overrides private methods of psycopg_pool 3.3 (see its docstring for what
upstream would need so that the override can go). pyproject.toml bounds psycopg-pool to
3.3.x; this test, which needs no server, fails when a release renames one of those methods,
changes its parameters, or stops calling it from where the override relies on it.
"""

from __future__ import annotations

import inspect

import psycopg
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.pool_async import AddConnection, MaintenanceTask

from repositories.pool import TasksPool


def _params(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_overridden_methods_keep_their_names_and_parameters() -> None:
    assert _params(AsyncConnectionPool._getconn_with_check_loop) == ["self", "deadline"]
    assert _params(AsyncConnectionPool._getconn_unchecked) == ["self", "timeout"]
    assert _params(AsyncConnectionPool._putconn) == ["self", "conn", "from_getconn"]
    assert _params(AsyncConnectionPool.schedule_task) == ["self", "task", "delay"]
    assert _params(AsyncConnectionPool.putconn) == ["self", "conn"]
    assert issubclass(AddConnection, MaintenanceTask)
    init = inspect.signature(AsyncConnectionPool.__init__).parameters
    assert {"configure", "kwargs", "reconnect_timeout", "max_idle", "max_lifetime"} <= set(init)


def test_the_pool_still_calls_what_is_overridden() -> None:
    # getconn goes through the check loop TasksPool replaces…
    assert "self._getconn_with_check_loop(" in inspect.getsource(AsyncConnectionPool.getconn)
    # …reconnection attempts are scheduled through schedule_task as AddConnection tasks…
    add = inspect.getsource(AsyncConnectionPool._add_connection)
    assert "self.schedule_task(" in add and "AddConnection(" in add
    # …and a connection handed back while a statement is still ACTIVE is closed, not reused
    # (an interrupted checkout check relies on it).
    assert "TransactionStatus.ACTIVE" in inspect.getsource(AsyncConnectionPool._reset_connection)


def test_the_pool_overrides_resolve_to_tasks_pool() -> None:
    for name in ("_getconn_with_check_loop", "schedule_task", "putconn"):
        assert name in TasksPool.__dict__, name


def test_psycopg_connection_api_the_pool_uses() -> None:
    assert "timeout" in inspect.signature(psycopg.AsyncConnection.cancel_safe).parameters
    assert isinstance(psycopg.ConnectionInfo.backend_pid, property)
    assert isinstance(psycopg.ConnectionInfo.port, property)
    assert "prepare" in inspect.signature(psycopg.AsyncConnection.execute).parameters
