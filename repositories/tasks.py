"""TaskRepository: every method is one owner-scoped SQL statement from `sql/tasks.sql`."""

from __future__ import annotations

import time
from typing import Any, Literal, LiteralString

import psycopg
from psycopg_pool import PoolTimeout

from observability.metrics import observe_sql
from repositories.errors import DatabaseUnavailable, TaskNotFound
from repositories.models import TASK_COLUMNS, TaskPublic
from repositories.pool import CONNECTION_FAILURES, StatementTimeout, TasksPool
from repositories.queries import LIST_STATEMENTS, Q

Status = Literal["all", "pending", "completed"]
Sort = Literal["created", "title"]
Order = Literal["asc", "desc"]
Row = tuple[Any, ...]


def _task(row: Row) -> TaskPublic:
    # Rows come from our own typed columns; FastAPI validates the response model on the way out.
    return TaskPublic.model_construct(**dict(zip(TASK_COLUMNS, row, strict=True)))


class TaskRepository:
    def __init__(self, pool: TasksPool) -> None:
        self._pool = pool

    async def _run(
        self,
        name: str,
        query: LiteralString,
        params: dict[str, Any],
        *,
        retry: bool = False,
    ) -> list[Row]:
        """Borrow a connection for exactly one statement; translate driver errors at this edge.

        The whole call, retry included, ends within DB_POOL_TIMEOUT + DB_STATEMENT_TIMEOUT
        seconds (contract, "Database faults"). Every failure of
        the database or the path to it (no connection in time, connection lost, protocol or
        prepared-statement errors, a statement cancelled at its deadline) raises
        DatabaseUnavailable, which the API answers 500 + Retry-After.

        `retry` is only for statements that are safe to run twice (reads): a connection that
        broke mid-statement gets one more chance on a fresh connection within the deadline.
        """
        pool = self._pool
        deadline = time.monotonic() + pool.timeout + pool.statement_timeout
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                rows = await pool.execute(query, params, deadline=deadline)
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

    async def create_task(
        self,
        *,
        user_id: str,
        title: str,
        description: str | None,
        name: str | None = None,
        email: str | None = None,
    ) -> TaskPublic:
        rows = await self._run(
            "create_task",
            Q["create_task"],
            {
                "user_id": user_id,
                "title": title,
                "description": description,
                "name": name,
                "email": email,
            },
        )
        return _task(rows[0])

    async def get_task(self, *, user_id: str, task_id: int) -> TaskPublic:
        rows = await self._run(
            "get_task", Q["get_task"], {"user_id": user_id, "task_id": task_id}, retry=True
        )
        if not rows:
            raise TaskNotFound(task_id)
        return _task(rows[0])

    async def list_tasks(
        self,
        *,
        user_id: str,
        status: Status = "all",
        sort: Sort = "created",
        order: Order = "asc",
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[TaskPublic], int | None]:
        """The user's tasks, and the filter's total when a page (`limit`) was asked for."""
        paged = limit is not None or offset > 0
        query = LIST_STATEMENTS[(status, sort, order, paged)]
        params: dict[str, Any] = {"user_id": user_id}
        if not paged:
            rows = await self._run("list_tasks", query, params, retry=True)
            return [_task(row) for row in rows], None
        params |= {"limit": limit, "offset": offset}  # LIMIT NULL: no limit, only an offset
        rows = await self._run("list_tasks_page", query, params, retry=True)
        total = int(rows[0][0]) if rows else 0
        tasks = [_task(row[1:]) for row in rows if row[1] is not None]
        return tasks, total if limit is not None else None

    async def update_task(
        self, *, user_id: str, task_id: int, changes: dict[str, str | None]
    ) -> TaskPublic:
        """Apply `changes` (only `title` and/or `description`); a no-op leaves updated_at alone."""
        rows = await self._run(
            "update_task",
            Q["update_task"],
            {
                "user_id": user_id,
                "task_id": task_id,
                "set_title": "title" in changes,
                "title": changes.get("title"),
                "set_description": "description" in changes,
                "description": changes.get("description"),
            },
        )
        if not rows:
            raise TaskNotFound(task_id)
        return _task(rows[0])

    async def toggle_task(self, *, user_id: str, task_id: int) -> TaskPublic:
        rows = await self._run(
            "toggle_task", Q["toggle_task"], {"user_id": user_id, "task_id": task_id}
        )
        if not rows:
            raise TaskNotFound(task_id)
        return _task(rows[0])

    async def set_task_completed(
        self, *, user_id: str, task_id: int, completed: bool
    ) -> TaskPublic:
        rows = await self._run(
            "set_task_completed",
            Q["set_task_completed"],
            {"user_id": user_id, "task_id": task_id, "completed": completed},
        )
        if not rows:
            raise TaskNotFound(task_id)
        return _task(rows[0])

    async def delete_task(self, *, user_id: str, task_id: int) -> None:
        rows = await self._run(
            "delete_task", Q["delete_task"], {"user_id": user_id, "task_id": task_id}
        )
        if not rows:
            raise TaskNotFound(task_id)

    async def schema_version(self) -> int:
        """The applied schema version; raises DatabaseUnavailable when the database is not there."""
        try:
            rows = await self._run("ping", Q["ping"], {}, retry=True)
        except psycopg.errors.UndefinedTable:
            return 0  # never migrated: not ready, rather than a 500
        return int(rows[0][0])
