"""Dependencies of the task routes, as `Annotated` aliases (authentication: api/security.py)."""

from __future__ import annotations

import re
from typing import Annotated, Final

from fastapi import Depends, Path, Request

from api.binding import from_request
from repositories.errors import TaskNotFound
from repositories.tasks import TaskRepository

_TASK_ID: Final = re.compile(r"[1-9][0-9]{0,18}")
#: `tasks.id` is a PostgreSQL bigint: a larger id cannot exist, and must not reach the query.
MAX_TASK_ID: Final = 2**63 - 1


def task_id_of(raw: str) -> int:
    """The path's task id as an int in 1..2^63-1; raises TaskNotFound (404, never 422) else.

    Contract, "Endpoints": `abc`, `0`, `-1`, `1.5`, 25 digits… are simply not found.
    """
    if _TASK_ID.fullmatch(raw) is None or int(raw) > MAX_TASK_ID:
        raise TaskNotFound(0)
    return int(raw)


@from_request(lambda request: task_id_of(request.path_params["task_id"]))
async def parse_task_id(
    raw: Annotated[
        str,
        Path(
            alias="task_id",
            description="A positive 64-bit integer; anything else is 404",
            examples=["42"],
        ),
    ],
) -> int:
    """`task_id_of` the path's `task_id` (TaskNotFound for anything but 1..2^63-1)."""
    return task_id_of(raw)


@from_request()
async def tasks_repository(request: Request) -> TaskRepository:
    """The process's TaskRepository (`app.state.tasks`, built in the lifespan)."""
    repository: TaskRepository = request.app.state.tasks
    return repository


#: An endpoint parameter: the path's `task_id`, 1..2^63-1 (else 404).
TaskId = Annotated[int, Depends(parse_task_id)]
#: An endpoint parameter: the process's TaskRepository.
TasksDep = Annotated[TaskRepository, Depends(tasks_repository)]
