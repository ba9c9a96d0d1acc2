"""Every error the API returns, in the contract's `{status_code, detail}` envelope.

This is the one place where an exception becomes an HTTP response: `response_for` maps it,
the app's exception handlers and the route class both call it, and `DOMAIN_ERRORS` is the one
registry of repository errors. A repository error missing from it is a 500 that a fast test
(tests/test_errors.py) catches before it ships.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import AuthError
from observability.metrics import count_auth_failure
from repositories.errors import (
    DatabaseUnavailable,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    PreconditionFailed,
    RepositoryError,
    TaskNotFound,
)

log = structlog.get_logger(__name__)

RETRY_AFTER_SECONDS: Final = "5"
DB_UNAVAILABLE_DETAIL: Final = "Database unavailable, retry shortly"
INTERNAL_DETAIL: Final = "Internal server error"


@dataclass(frozen=True, slots=True)
class DomainErrorSpec:
    """How one repository error is answered: status, client-facing detail, extra headers."""

    status_code: int
    detail: str
    headers: Mapping[str, str] = field(default_factory=dict)
    #: further members of the body (a 422's `errors`, contract "Errors")
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: the event logged when it happens, and its stdlib level (None: routine, not logged)
    log_event: str | None = None
    log_level: int = logging.ERROR


#: The one registry of handled domain errors (looked up along the exception's MRO).
DOMAIN_ERRORS: Final[dict[type[RepositoryError], DomainErrorSpec]] = {
    TaskNotFound: DomainErrorSpec(404, "Task not found"),
    # RFC 9110 §15.5.13; contract, "Conditional requests and safe retries".
    PreconditionFailed: DomainErrorSpec(
        412, "Precondition failed: the task is not at a version If-Match names"
    ),
    # IETF httpapi idempotency-key draft §2.7: a retry while the first request runs is 409.
    IdempotencyKeyInFlight: DomainErrorSpec(
        409,
        "A request with this Idempotency-Key is still being processed; retry shortly",
        headers={"Retry-After": "1"},
    ),
    # Same draft: a key reused with another payload is 422.
    IdempotencyKeyReused: DomainErrorSpec(
        422,
        "Idempotency-Key was already used for a request with another body",
        extra={
            "errors": [
                {
                    "loc": ["header", "Idempotency-Key"],
                    "msg": "already used for a request with another body",
                    "type": "idempotency_key_reused",
                }
            ]
        },
    ),
    DatabaseUnavailable: DomainErrorSpec(
        500,
        DB_UNAVAILABLE_DETAIL,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
        log_event="database_unavailable",
    ),
}


def error_response(
    status_code: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The envelope `{"status_code": int, "detail": str, **extra}` with that status."""
    return JSONResponse(
        {"status_code": status_code, "detail": detail, **extra},
        status_code=status_code,
        headers=dict(headers) if headers else None,
    )


def unauthorized(exc: AuthError) -> JSONResponse:
    """401 with `WWW-Authenticate: Bearer` (RFC 6750 §3); the reason goes to logs and metrics."""
    count_auth_failure(exc.reason)
    log.info("auth_failed", reason=exc.reason)
    return error_response(401, exc.detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden() -> JSONResponse:
    """403: a valid token whose `sub` is not the path's user (contract: 401, then 403)."""
    count_auth_failure("user_mismatch")
    log.info("auth_failed", reason="user_mismatch")
    return error_response(403, "Not allowed to access another user's tasks")


def _domain_error(exc: RepositoryError) -> JSONResponse | None:
    for cls in type(exc).__mro__:
        spec = DOMAIN_ERRORS.get(cls)
        if spec is not None:
            if spec.log_event is not None:
                log.log(
                    spec.log_level,
                    spec.log_event,
                    error=str(exc),
                    cause=type(exc.__cause__).__name__ if exc.__cause__ else None,
                )
            return error_response(spec.status_code, spec.detail, headers=spec.headers, **spec.extra)
    return None


def internal_error(exc: BaseException) -> JSONResponse:
    """500 without anything internal in it; the exception is logged with the request id."""
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
    """400 when the body is not JSON (contract: "not valid JSON: 400"), else 422 with `errors`."""
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return error_response(400, "Request body is not valid JSON")
    items = _items(errors)
    first = items[0] if items else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
    return error_response(422, f"Validation error: {where}: {first['msg']}", errors=items)


def response_for(exc: BaseException) -> JSONResponse:
    """The envelope response for any exception; unknown ones are a logged 500."""
    if isinstance(exc, AuthError):
        return unauthorized(exc)
    if isinstance(exc, RequestValidationError):
        return validation_response(exc)
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return error_response(exc.status_code, detail, headers=exc.headers)
    if isinstance(exc, RepositoryError):
        mapped = _domain_error(exc)
        if mapped is not None:
            return mapped
    return internal_error(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Route Starlette's, FastAPI's and the repositories' errors through `response_for`."""

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return response_for(exc)

    for exc_class in (StarletteHTTPException, RequestValidationError, RepositoryError):
        app.add_exception_handler(exc_class, handle)


ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    400: {"description": "The body is not valid JSON (RFC 8259 and I-JSON, RFC 7493)"},
    401: {
        "description": "Missing, malformed, expired or otherwise invalid bearer token",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: {"description": "The token's user is not the user in the path"},
    409: {
        "description": "A request with this Idempotency-Key is still being processed",
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
    },
    412: {"description": "If-Match names no current ETag of the task; nothing changed"},
    413: {"description": "The body is over 64 KiB"},
    500: {
        "description": "Database unavailable (with Retry-After) or unexpected error",
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
    },
}
