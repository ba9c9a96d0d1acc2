"""Dependencies of the routes, as `Annotated` aliases."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Final

from fastapi import Depends, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Message, Receive

from api.auth import AuthError, Principal, TokenVerifier, bearer_token
from api.errors import BodyTooLarge, error_response, forbidden, internal_error, unauthorized
from api.settings import Settings
from repositories.errors import DatabaseUnavailable, TaskNotFound
from repositories.tasks import TaskRepository

# Documents the bearer scheme in OpenAPI; the check itself runs in AuthenticatedRoute.
bearer_scheme: Final = HTTPBearer(auto_error=False, bearerFormat="JWT")

_HANDLED: Final = (
    StarletteHTTPException,
    RequestValidationError,
    TaskNotFound,
    DatabaseUnavailable,
    BodyTooLarge,
)
_TASK_ID: Final = re.compile(r"[1-9][0-9]{0,18}")
MAX_TASK_ID: Final = 2**63 - 1


class _LimitedReceive:
    """Counts body bytes as they arrive (chunked bodies have no Content-Length to check)."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._seen = 0
        self.exceeded = False

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._limit:
                self.exceeded = True
                raise BodyTooLarge()
        return message


def _treat_body_as_json(request: Request) -> None:
    """Every body is read as JSON, whatever its Content-Type: not JSON is 400, wrong shape 422."""
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type.lower():
        request.scope["headers"] = [
            (k, b"application/json" if k == b"content-type" else v)
            for k, v in request.scope["headers"]
        ]
        request._headers = Headers(scope=request.scope)


class AuthenticatedRoute(APIRoute):
    """Authenticates before anything else of the request is looked at.

    FastAPI parses the JSON body before it runs dependencies; doing the token and ownership
    checks here keeps the contract's order (401, then 403, then 404/422) for every input.
    Errors raised anywhere below also become envelope responses here, so they pass back
    through CORS and carry their headers.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            verifier: TokenVerifier = request.app.state.verifier
            declared = request.headers.get("content-length")
            if (
                declared is not None
                and declared.isdigit()
                and int(declared) > settings.max_body_bytes
            ):
                return error_response(413, "Request body too large")
            try:
                principal = await verifier.verify(
                    bearer_token(request.headers.get("authorization"))
                )
            except AuthError as exc:
                return unauthorized(exc)
            request.state.user_id = principal.sub
            if request.path_params.get("user_id") != principal.sub:
                return forbidden()
            request.state.principal = principal
            _treat_body_as_json(request)
            receive = _LimitedReceive(request.receive, settings.max_body_bytes)
            request._receive = receive
            try:
                return await handler(request)
            except Exception as exc:
                # FastAPI wraps errors of body reading in a 400: an oversized body is a 413.
                if receive.exceeded:
                    return error_response(413, "Request body too large")
                if isinstance(exc, _HANDLED):
                    raise  # mapped to the envelope by the app's exception handlers
                return internal_error(exc)

        return authenticated


async def current_user(
    request: Request,
    user_id: Annotated[
        str, Path(description="The Better Auth user id; must equal the token's sub")
    ],
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> Principal:
    principal: Principal = request.state.principal
    return principal


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
    """Parse the id ourselves: an id that cannot exist is simply not found (404), never 422."""
    if _TASK_ID.fullmatch(raw) is None or int(raw) > MAX_TASK_ID:
        raise TaskNotFound(0)
    return int(raw)


async def tasks_repository(request: Request) -> TaskRepository:
    repository: TaskRepository = request.app.state.tasks
    return repository


CurrentUser = Annotated[Principal, Depends(current_user)]
TaskId = Annotated[int, Depends(parse_task_id)]
TasksDep = Annotated[TaskRepository, Depends(tasks_repository)]
