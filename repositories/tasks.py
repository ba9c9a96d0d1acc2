"""TaskRepository: every method is one owner-scoped SQL statement from `sql/tasks.sql`.

Rows come back as dicts (`psycopg.rows.dict_row`, on this module's cursors only) and are read
by column name, so a reordered SELECT cannot assign a value to the wrong field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, LiteralString

from repositories.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    PreconditionFailed,
    TaskNotFound,
)
from repositories.models import TASK_ROW, TASK_ROWS, TaskRow
from repositories.pool import TasksPool
from repositories.queries import LIST_STATEMENTS, Q
from repositories.statements import Row, run_statement

Status = Literal["all", "pending", "completed"]
Sort = Literal["created", "title"]
Order = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class NewTask:
    """What a POST creates: the owner's id (and the name and email its users row gets on its
    first write), the title and the description."""

    user_id: str
    title: str
    description: str | None
    name: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class VersionedTask:
    """A task and its version (`tasks.version`, from which the API makes its ETag)."""

    task: TaskRow
    version: int


@dataclass(frozen=True, slots=True)
class TaskList:
    """One representation of a user's list.

    `version` and `since` (the users row's `tasks_version` and `created_at`; 0 and None for a
    user who never wrote) identify the state of all the user's tasks. `items` is None when
    that version was one of `known_versions`: the tasks were not read.
    """

    items: list[TaskRow] | None
    total: int | None
    version: int
    since: datetime | None


@dataclass(frozen=True, slots=True)
class IdempotentCreate:
    """The answer to a POST with an Idempotency-Key: the task as first created, and whether
    this call created it (False: a replay of the stored response)."""

    task: TaskRow
    version: int
    created: bool


#: Rows validated in pydantic-core into plain TaskRow dicts: no model instance per row
#: (SQLModel's `__init__` and `__new__` were half of a list's row cost).
_VALIDATE_TASK: Final = TASK_ROW.validate_python
_VALIDATE_TASKS: Final = TASK_ROWS.validate_python


def _task(row: Row) -> TaskRow:
    """The task of a row (a dict of its columns; the statement's other columns, such as
    `version` or `list_version`, are dropped), validated: the routes serialise it as it is
    (api/routes/tasks.py), so this is the one check of what the database returned.
    Raises pydantic.ValidationError for a row that is not a task (a 500)."""
    task: TaskRow = _VALIDATE_TASK(row)
    return task


def _versioned(row: Row) -> VersionedTask:
    return VersionedTask(_task(row), int(row["version"]))


def _one(rows: list[Row], task_id: int) -> Row:
    """The statement's row; TaskNotFound when there is none (missing, or another user's)."""
    if not rows:
        raise TaskNotFound(task_id)
    return rows[0]


def _written(rows: list[Row], task_id: int) -> Row:
    """The row of a write guarded by If-Match: TaskNotFound, PreconditionFailed, or the row."""
    row = _one(rows, task_id)
    if not row["matched"]:
        raise PreconditionFailed(task_id)
    return row


class TaskRepository:
    """The task statements of `sql/tasks.sql`, one statement (one round trip) per method.

    `if_match` on the writes: None for no precondition (last write wins); else the versions
    the client's If-Match tags name, and the write happens only when the task is at one of
    them (an empty list never matches). Raises TaskNotFound, PreconditionFailed,
    IdempotencyKeyInFlight, IdempotencyKeyReused and DatabaseUnavailable.
    """

    def __init__(self, pool: TasksPool) -> None:
        self._pool = pool

    async def _run(
        self,
        name: str,
        params: dict[str, Any],
        *,
        query: LiteralString | None = None,
        retry: bool = False,
    ) -> list[Row]:
        """Run the statement `name` of `sql/tasks.sql` (or `query`, a variant composed from
        it) through `repositories.statements.run_statement` (deadline, errors, metrics)."""
        return await run_statement(
            self._pool, name, Q[name] if query is None else query, params, retry=retry
        )

    async def create_task(self, new: NewTask) -> VersionedTask:
        """Insert the task, and the owner's users row on its first write (contract,
        "Authentication and ownership"); the new task at version 1. Never retried (a write);
        raises DatabaseUnavailable."""
        rows = await self._run("create_task", _new_task(new))
        return _versioned(rows[0])

    async def create_task_idempotent(
        self, new: NewTask, *, key: str, fingerprint: bytes
    ) -> IdempotentCreate:
        """Create the task once per (user, key) within 24 hours (IETF httpapi
        idempotency-key draft); a repeat gets the stored response.

        Raises IdempotencyKeyInFlight while a request with the key runs (on any instance),
        IdempotencyKeyReused when the key's stored `fingerprint` is another one,
        DatabaseUnavailable. `fingerprint`: the request's SHA-256 (api.conditional).
        """
        params = {**_new_task(new), "key": key, "fingerprint": fingerprint}
        rows = await self._run("create_task_idempotent", params)
        row = rows[0]
        if not row["free"]:
            raise IdempotencyKeyInFlight(key)
        if bytes(row["fingerprint"]) != fingerprint:
            raise IdempotencyKeyReused(key)
        # The stored response: the task as it was created (version 1), whatever became of it.
        return IdempotentCreate(_task(row["response"]), 1, row["created"])

    async def get_task(self, *, user_id: str, task_id: int) -> VersionedTask:
        """Task `task_id` of `user_id` and its version. Raises TaskNotFound (missing or
        another user's), DatabaseUnavailable; retried once on a broken connection (a read)."""
        rows = await self._run("get_task", {"user_id": user_id, "task_id": task_id}, retry=True)
        return _versioned(_one(rows, task_id))

    async def list_tasks(
        self,
        *,
        user_id: str,
        status: Status = "all",
        sort: Sort = "created",
        order: Order = "asc",
        limit: int | None = None,
        offset: int = 0,
        known_versions: Sequence[int] = (),
    ) -> TaskList:
        """The user's tasks, and the filter's total when a page (`limit`) was asked for.

        When the list's version is in `known_versions` (from If-None-Match) the tasks are not
        read and `items` is None. `limit` None: every task; `offset` skips that many first.
        Raises DatabaseUnavailable; retried once on a broken connection (a read).
        """
        paged = limit is not None or offset > 0
        query = LIST_STATEMENTS[(status, sort, order, paged)]
        params: dict[str, Any] = {"user_id": user_id, "known": list(known_versions)}
        if paged:
            params |= {"limit": limit, "offset": offset}  # LIMIT NULL: no limit, only an offset
        rows = await self._run(
            "list_tasks_page" if paged else "list_tasks", params, query=query, retry=True
        )
        head = rows[0]
        version = int(head["list_version"])
        if version in known_versions:
            return TaskList(None, None, version, head["list_since"])
        # One call for all rows (`_task`'s check, in pydantic-core's loop).
        items: list[TaskRow] = _VALIDATE_TASKS([row for row in rows if row["id"] is not None])
        total = int(head["total"]) if limit is not None else None
        return TaskList(items, total, version, head["list_since"])

    async def update_task(
        self,
        *,
        user_id: str,
        task_id: int,
        changes: dict[str, str | None],
        if_match: Sequence[int] | None = None,
    ) -> VersionedTask:
        """Apply `changes` (only `title` and/or `description`; a None description clears it);
        a no-op leaves updated_at and the version alone (contract, "Endpoints").

        Returns the task as it now is. Raises TaskNotFound, PreconditionFailed (If-Match not
        met, nothing written), DatabaseUnavailable.
        """
        rows = await self._run(
            "update_task",
            _one_task(
                user_id,
                task_id,
                if_match,
                set_title="title" in changes,
                title=changes.get("title"),
                set_description="description" in changes,
                description=changes.get("description"),
            ),
        )
        return _versioned(_written(rows, task_id))

    async def toggle_task(
        self, *, user_id: str, task_id: int, if_match: Sequence[int] | None = None
    ) -> VersionedTask:
        """Flip `completed` in one UPDATE, so concurrent toggles are never lost (contract,
        "Endpoints"); the task as it now is. Raises TaskNotFound, PreconditionFailed,
        DatabaseUnavailable."""
        rows = await self._run("toggle_task", _one_task(user_id, task_id, if_match))
        return _versioned(_written(rows, task_id))

    async def set_task_completed(
        self,
        *,
        user_id: str,
        task_id: int,
        completed: bool,
        if_match: Sequence[int] | None = None,
    ) -> VersionedTask:
        """Set `completed`; idempotent: updated_at and the version move only when the state
        changes (contract, "Endpoints"). Raises TaskNotFound, PreconditionFailed,
        DatabaseUnavailable."""
        rows = await self._run(
            "set_task_completed", _one_task(user_id, task_id, if_match, completed=completed)
        )
        return _versioned(_written(rows, task_id))

    async def delete_task(
        self, *, user_id: str, task_id: int, if_match: Sequence[int] | None = None
    ) -> None:
        """Delete the task. Raises TaskNotFound (also for a second DELETE), PreconditionFailed,
        DatabaseUnavailable."""
        rows = await self._run("delete_task", _one_task(user_id, task_id, if_match))
        _written(rows, task_id)


def _new_task(new: NewTask) -> dict[str, Any]:
    """The create statements' parameters (`dataclasses.asdict` copies each value deeply:
    5 % of a create's own work)."""
    return {"user_id": new.user_id, "title": new.title, "description": new.description,
            "name": new.name, "email": new.email}  # fmt: skip


def _one_task(
    user_id: str, task_id: int, if_match: Sequence[int] | None, **extra: Any
) -> dict[str, Any]:
    """The parameters of a statement on one task of one user: owner, id, the If-Match
    versions (None: no precondition) and the statement's own `extra` values."""
    versions = None if if_match is None else list(if_match)
    return {"user_id": user_id, "task_id": task_id, "if_match": versions, **extra}
