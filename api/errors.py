"""Every error the API returns, in the contract's `{status_code, detail}` envelope."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import AuthError
from observability.metrics import count_auth_failure
from repositories.errors import DatabaseUnavailable, TaskNotFound

log = structlog.get_logger(__name__)

RETRY_AFTER_SECONDS: Final = "5"
DB_UNAVAILABLE_DETAIL: Final = "Database unavailable, retry shortly"
INTERNAL_DETAIL: Final = "Internal server error"


class BodyTooLarge(Exception):
    """The request body is over the configured limit (64 KiB by default)."""


def error_response(
    status_code: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        {"status_code": status_code, "detail": detail, **extra},
        status_code=status_code,
        headers=dict(headers) if headers else None,
    )


def unauthorized(exc: AuthError) -> JSONResponse:
    count_auth_failure(exc.reason)
    log.info("auth_failed", reason=exc.reason)
    return error_response(401, exc.detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden() -> JSONResponse:
    count_auth_failure("user_mismatch")
    log.info("auth_failed", reason="user_mismatch")
    return error_response(403, "Not allowed to access another user's tasks")


def database_unavailable(exc: Exception) -> JSONResponse:
    log.error("database_unavailable", error=str(exc), cause=type(exc.__cause__).__name__)
    return error_response(500, DB_UNAVAILABLE_DETAIL, headers={"Retry-After": RETRY_AFTER_SECONDS})


def internal_error(exc: BaseException) -> JSONResponse:
    log.error("unhandled_error", exc_info=exc)
    return error_response(500, INTERNAL_DETAIL)


def _clean_msg(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _items(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
            "msg": _clean_msg(str(err.get("msg", ""))),
            "type": str(err.get("type", "value_error")),
        }
        for err in errors
    ]


def validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return error_response(400, "Request body is not valid JSON")
    items = _items(errors)
    first = items[0] if items else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
    return error_response(422, f"Validation error: {where}: {first['msg']}", errors=items)


def install_error_handlers(app: FastAPI) -> None:
    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return error_response(exc.status_code, detail, headers=exc.headers)

    async def request_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_response(exc)

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return error_response(404, "Task not found")

    async def db_unavailable(_: Request, exc: Exception) -> JSONResponse:
        return database_unavailable(exc)

    async def too_large(_: Request, exc: Exception) -> JSONResponse:
        return error_response(413, "Request body too large")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(TaskNotFound, not_found)
    app.add_exception_handler(DatabaseUnavailable, db_unavailable)
    app.add_exception_handler(BodyTooLarge, too_large)


ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    400: {"description": "The body is not valid JSON"},
    401: {
        "description": "Missing, malformed, expired or otherwise invalid bearer token",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: {"description": "The token's user is not the user in the path"},
    413: {"description": "The body is over 64 KiB"},
    500: {
        "description": "Database unavailable (with Retry-After) or unexpected error",
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
    },
}
