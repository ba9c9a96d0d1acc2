"""The six task endpoints under /api/{user_id}/tasks. Routes hold no `try`: see api/errors.py.

Conditional requests (ETag, If-None-Match, If-Match, Idempotency-Key) are opt-in: without
those headers every endpoint answers as before, plus its ETag (api/conditional.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal
from urllib.parse import quote

from fastapi import APIRouter, Body, Query, Response, status

from api.conditional import (
    IdempotencyKey,
    IfMatch,
    IfNoneMatch,
    TagList,
    fingerprint,
    list_etag,
    task_etag,
)
from api.deps import TaskId, TasksDep
from api.errors import ERROR_RESPONSES
from api.security import AuthenticatedRoute, CurrentUser
from repositories.models import (
    TASK_ROW,
    TASK_ROWS,
    ErrorResponse,
    TaskComplete,
    TaskCreate,
    TaskPublic,
    TaskRow,
    TaskUpdate,
    ValidationErrorResponse,
)
from repositories.tasks import NewTask, TaskList


def _documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for `codes`: 404, 422 and 304 worded for these routes, any other
    from `api.errors.ERROR_RESPONSES` (KeyError for a code it does not have)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        if code == 404:
            out[code] = {"model": ErrorResponse, "description": "Task not found (or not yours)"}
        elif code == 422:
            out[code] = {"model": ValidationErrorResponse, "description": "Invalid input"}
        elif code == 304:
            out[code] = {
                "description": "Not Modified: an If-None-Match tag is current (no body)",
                "headers": _ETAG_HEADER,
            }
        else:
            out[code] = {"model": ErrorResponse, **ERROR_RESPONSES[code]}
    return out


_ETAG_HEADER: Final = {
    "ETag": {
        "description": "Strong entity tag of this representation",
        "schema": {"type": "string"},
    }
}
# Stored by a browser, but always revalidated (with the ETag): a poll never sees stale data.
_READ_CACHE_CONTROL: Final = "private, no-cache"

# Response headers in the OpenAPI document, so that generated clients know them.
_LIST_HEADERS: Final = {
    "X-Total-Count": {
        "description": "Number of tasks matching `status`, present only when `limit` is given",
        "schema": {"type": "integer", "minimum": 0},
    }
}
_CREATE_HEADERS: Final = {
    "Location": {
        "description": "Path of the new task: /api/{user_id}/tasks/{id}",
        "schema": {"type": "string"},
    }
}

# PUT and PATCH …/complete: the task with its new ETag, or why not (412: If-Match failed).
_CONDITIONAL_WRITE_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {"description": "The task", "headers": _ETAG_HEADER},
    **_documented(400, 404, 412, 422),
}

# The route functions carry their notes as comments, not docstrings: FastAPI publishes an
# endpoint's docstring as its OpenAPI description, and what clients read is the decorators'
# summary and responses (contract, "Service endpoints": `/openapi.json`).
router = APIRouter(
    prefix="/api/{user_id}/tasks",
    tags=["tasks"],
    route_class=AuthenticatedRoute,
    responses=_documented(401, 403, 413, 500, 503),
)


def _not_modified(etag: str) -> Response:
    """304 with the tag and no body (RFC 9110 §15.4.5)."""
    return Response(
        status_code=status.HTTP_304_NOT_MODIFIED,
        headers={"ETag": etag, "Cache-Control": _READ_CACHE_CONTROL},
    )


def _task_response(
    task: TaskRow, version: int, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The task as JSON with its ETag (and `headers`), serialised in one pydantic-core call.

    Returning a TaskPublic would make FastAPI dump it to a dict, validate that dict into a
    new TaskPublic (`response_model`), serialise it again and `json.dumps` the result: four
    passes for bytes this one pass produces identically (tests/test_tasks.py pins the body).
    The task was validated when it was read (repositories/tasks.py `_task`); the route's
    `response_model` still documents the body in OpenAPI."""
    return Response(
        TASK_ROW.dump_json(task),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": task_etag(task["id"], version), **(headers or {})},
    )


def _if_match_versions(condition: TagList | None, task_id: int) -> list[int] | None:
    """The repository's `if_match`: None without If-Match or with `*`, else the listed
    versions whose tag is exactly this task's (TagList.task_versions)."""
    return None if condition is None else condition.task_versions(task_id)


@router.get(
    "",
    response_model=list[TaskPublic],
    summary="List the user's tasks",
    operation_id="listTasks",
    responses={
        200: {"description": "The tasks", "headers": {**_LIST_HEADERS, **_ETAG_HEADER}},
        **_documented(304, 422),
    },
)
async def list_tasks(
    user: CurrentUser,
    tasks: TasksDep,
    if_none_match: IfNoneMatch,
    status_: Annotated[Literal["all", "pending", "completed"], Query(alias="status")] = "all",
    sort: Annotated[Literal["created", "title"], Query()] = "created",
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    limit: Annotated[
        int | None, Query(ge=1, le=1000, description="Page size; adds X-Total-Count")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> Response:
    # `GET /api/{user_id}/tasks` (contract, "Endpoints"): 200, a JSON array of tasks (empty
    # for none) ordered by `sort`/`order` with ties by id, filtered by `status`; `limit`
    # (1-1000) and `offset` page it, and with `limit` `X-Total-Count` gives the filter's total.
    #
    # Carries the list's strong ETag and `Cache-Control: private, no-cache`; 304 without a
    # body when an If-None-Match tag is current (RFC 9110 §13.1.2, weak comparison). Errors
    # (401/403/422/500) come from the route class and api/errors.py; DatabaseUnavailable is
    # 500 + Retry-After.
    representation = (status_, sort, order, limit, offset)

    async def read(known: list[int]) -> tuple[TaskList, str]:
        listing = await tasks.list_tasks(
            user_id=user.sub,
            status=status_,
            sort=sort,
            order=order,
            limit=limit,
            offset=offset,
            known_versions=known,
        )
        return listing, list_etag(user.sub, listing.version, listing.since, representation)

    # Versions the client's tags name: when the list is still at one, the tasks are not read.
    listing, etag = await read(if_none_match.versions() if if_none_match is not None else [])
    if if_none_match is not None and if_none_match.matches_weakly(etag):
        return _not_modified(etag)
    if listing.items is None:  # the version was known, but from a tag of another list
        listing, etag = await read([])
    headers = {"ETag": etag, "Cache-Control": _READ_CACHE_CONTROL}
    if listing.total is not None:
        headers["X-Total-Count"] = str(listing.total)
    # Serialised in one pydantic-core call instead of FastAPI's validate-then-serialise of
    # every item: 20 % less CPU per list response (loadtest/bench_serialization.py).
    return Response(
        TASK_ROWS.dump_json(listing.items or []), media_type="application/json", headers=headers
    )


@router.post(
    "",
    response_model=TaskPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Create a task",
    operation_id="createTask",
    responses={
        201: {
            "description": "The created task",
            "headers": {**_CREATE_HEADERS, **_ETAG_HEADER},
        },
        **_documented(400, 409, 422),
        400: {
            "model": ErrorResponse,
            "description": "The body is not valid JSON (RFC 8259 and I-JSON, RFC 7493), or "
            "the Idempotency-Key is not 1-255 visible ASCII characters",
        },
        422: {
            "model": ValidationErrorResponse,
            "description": "Invalid input, or an Idempotency-Key already used with another body",
        },
    },
)
async def create_task(
    user: CurrentUser,
    tasks: TasksDep,
    body: TaskCreate,
    key: IdempotencyKey,
) -> Response:
    # `POST /api/{user_id}/tasks`: 201, the task, `Location` and its ETag; the first write
    # of a user also creates its users row (name and email from the token).
    #
    # With an Idempotency-Key (contract, "Conditional requests and safe retries"): a repeat
    # with the same body within 24 hours returns the stored 201 and creates nothing; the
    # repository raises IdempotencyKeyReused (422) for another body and IdempotencyKeyInFlight
    # (409 + Retry-After) while the first request runs.
    new = NewTask(user.sub, body.title, body.description, name=user.name, email=user.email)
    if key is None:
        created = await tasks.create_task(new)
        task, version = created.task, created.version
    else:
        once = await tasks.create_task_idempotent(new, key=key, fingerprint=fingerprint(body))
        task, version = once.task, once.version  # the stored response, also on a replay
    location = f"/api/{quote(user.sub, safe='')}/tasks/{task['id']}"
    return _task_response(task, version, status.HTTP_201_CREATED, {"Location": location})


@router.get(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Get one task",
    operation_id="getTask",
    responses={200: {"description": "The task", "headers": _ETAG_HEADER}, **_documented(304, 404)},
)
async def get_task(
    user: CurrentUser,
    tasks: TasksDep,
    task_id: TaskId,
    if_none_match: IfNoneMatch,
) -> Response:
    # `GET /api/{user_id}/tasks/{task_id}`: 200, the task, its ETag and `Cache-Control:
    # private, no-cache`; 304 without a body when an If-None-Match tag is current. Returns a
    # TaskPublic, or the 304 Response. TaskNotFound (404) for a missing task or another
    # user's (contract, "Endpoints").
    versioned = await tasks.get_task(user_id=user.sub, task_id=task_id)
    etag = task_etag(task_id, versioned.version)
    if if_none_match is not None and if_none_match.matches_weakly(etag):
        return _not_modified(etag)
    return _task_response(
        versioned.task, versioned.version, headers={"Cache-Control": _READ_CACHE_CONTROL}
    )


@router.put(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Update title and/or description",
    operation_id="updateTask",
    responses=_CONDITIONAL_WRITE_RESPONSES,
)
async def update_task(
    user: CurrentUser,
    tasks: TasksDep,
    task_id: TaskId,
    body: TaskUpdate,
    if_match: IfMatch,
) -> Response:
    # `PUT /api/{user_id}/tasks/{task_id}`: 200, the task and its ETag. Only the fields
    # present in the body change (`description: null` clears it); a change to nothing leaves
    # `updated_at` and the ETag alone (contract, "Endpoints"). With If-Match, PreconditionFailed
    # (412) unless a listed tag is current; TaskNotFound (404).
    changes = body.model_dump(include={"title", "description"}, exclude_unset=True)
    versioned = await tasks.update_task(
        user_id=user.sub,
        task_id=task_id,
        changes=changes,
        if_match=_if_match_versions(if_match, task_id),
    )
    return _task_response(versioned.task, versioned.version)


@router.patch(
    "/{task_id}/complete",
    response_model=TaskPublic,
    summary='Toggle completion, or set it with {"completed": bool}',
    operation_id="completeTask",
    responses=_CONDITIONAL_WRITE_RESPONSES,
)
async def complete_task(
    user: CurrentUser,
    tasks: TasksDep,
    task_id: TaskId,
    if_match: IfMatch,
    body: Annotated[TaskComplete | None, Body()] = None,
) -> Response:
    # `PATCH /api/{user_id}/tasks/{task_id}/complete`: 200, the task and its ETag. Without
    # a body, toggle atomically in one statement (concurrent toggles are never lost); with
    # `{"completed": bool}`, set it, idempotently (contract, "Endpoints"). With If-Match,
    # PreconditionFailed (412) unless a listed tag is current; TaskNotFound (404).
    versions = _if_match_versions(if_match, task_id)
    if body is None:
        versioned = await tasks.toggle_task(user_id=user.sub, task_id=task_id, if_match=versions)
    else:
        versioned = await tasks.set_task_completed(
            user_id=user.sub, task_id=task_id, completed=body.completed, if_match=versions
        )
    return _task_response(versioned.task, versioned.version)


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a task",
    operation_id="deleteTask",
    responses=_documented(404, 412),
)
async def delete_task(
    user: CurrentUser, tasks: TasksDep, task_id: TaskId, if_match: IfMatch
) -> Response:
    # `DELETE /api/{user_id}/tasks/{task_id}`: 204, empty body; a second DELETE is 404
    # (TaskNotFound). With If-Match, PreconditionFailed (412) unless a listed tag is current.
    await tasks.delete_task(
        user_id=user.sub, task_id=task_id, if_match=_if_match_versions(if_match, task_id)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
