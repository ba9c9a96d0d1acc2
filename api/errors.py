"""Every error the API returns, in the contract's `{status_code, detail}` envelope.

This is the one place where an exception becomes an HTTP response: `response_for` maps it,
the app's exception handlers and the route class both call it, and `DOMAIN_ERRORS` is the one
registry of repository errors. A repository error missing from it is a 500 that a fast test
(tests/test_errors.py) catches before it ships.
"""

from __future__ import annotations

import json
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
from api.routing import allowed_methods
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

#: `Retry-After` in seconds (RFC 9110 §10.2.3 delay-seconds; a str, as a header value) of the
#: database-unavailable 500, `/ready`'s 503 and the 503s written below the app.
RETRY_AFTER_SECONDS: Final = "5"
#: Contract, "Errors": the detail of a database that cannot be reached.
DB_UNAVAILABLE_DETAIL: Final = "Database unavailable, retry shortly"
INTERNAL_DETAIL: Final = "Internal server error"
OVERLOADED_DETAIL: Final = "Service overloaded, retry shortly"
BODY_TIMEOUT_DETAIL: Final = "Request body not received in time"


class Overloaded(Exception):
    """The request cannot be served in time (api/admission.py): 503 with `Retry-After`
    (contract, "HTTP semantics": refused early, never answered late with a 500).

    `retry_after` is whole seconds, at least 1 (RFC 9110 §10.2.3 allows no fraction).
    """

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"overloaded, retry after {retry_after} s")
        self.retry_after = retry_after


class BodyTimeout(Exception):
    """The request body did not arrive within HTTP_BODY_TIMEOUT_SECONDS (api/body.py): 408
    with `Connection: close` (RFC 9110 §15.5.9: the server closes the connection; the rest of
    the body, if it ever comes, must not be parsed as the next request)."""


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
    """The envelope `{"status_code": int, "detail": str, **extra}` with that status and
    `headers` (contract, "Errors": every error is this JSON; `detail` is one string)."""
    return JSONResponse(
        {"status_code": status_code, "detail": detail, **extra},
        status_code=status_code,
        headers=dict(headers) if headers else None,
    )


def envelope_bytes(status_code: int, detail: str) -> bytes:
    """The envelope's bytes (compact UTF-8 JSON), for answers written below the ASGI app
    (api/http_server.py, where no JSONResponse can be sent)."""
    return json.dumps(
        {"status_code": status_code, "detail": detail}, separators=(",", ":")
    ).encode()


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
    """The DOMAIN_ERRORS answer for `exc` (logged if its spec says so); None if unregistered."""
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
    """500 without anything internal in it (contract, "Errors": no stack trace, SQL, driver or
    exception name); the exception and its traceback are logged, with the request id."""
    log.error("unhandled_error", exc_info=exc)
    return error_response(500, INTERNAL_DETAIL)


def _clean_msg(msg: str) -> str:
    """Pydantic's message without its "Value error, " prefix, which says nothing to a client."""
    return msg.removeprefix("Value error, ")


def _items(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors as the contract's `errors` items: `{"loc": [str|int], "msg": str,
    "type": str}`; `input` and `ctx` are left out, so a body never comes back in an answer."""
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
            "msg": _clean_msg(str(err.get("msg", ""))),
            "type": str(err.get("type", "value_error")),
        }
        for err in errors
    ]


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """400 when the body is not JSON (contract, "Endpoints": "not valid JSON: 400"), else 422
    with `errors` (contract, "Errors") and a `detail` naming the first field that failed."""
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return error_response(400, "Request body is not valid JSON")
    items = _items(errors)
    first = items[0] if items else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
    return error_response(422, f"Validation error: {where}: {first['msg']}", errors=items)


def response_for(exc: BaseException) -> JSONResponse:
    """The envelope response for any exception; never raises.

    AuthError: 401; RequestValidationError: 400 or 422; Overloaded: 503 + Retry-After;
    BodyTimeout: 408 + Connection: close;
    Starlette's HTTPException: its status, detail and headers; a RepositoryError registered
    in DOMAIN_ERRORS: its spec; anything else: a logged 500 (internal_error).
    """
    if isinstance(exc, AuthError):
        return unauthorized(exc)
    if isinstance(exc, RequestValidationError):
        return validation_response(exc)
    if isinstance(exc, Overloaded):
        return error_response(503, OVERLOADED_DETAIL, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, BodyTimeout):
        return error_response(408, BODY_TIMEOUT_DETAIL, headers={"Connection": "close"})
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return error_response(exc.status_code, detail, headers=exc.headers)
    if isinstance(exc, RepositoryError):
        mapped = _domain_error(exc)
        if mapped is not None:
            return mapped
    return internal_error(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Route Starlette's, FastAPI's and the repositories' errors through `response_for`, and
    give a 405 the `Allow` header of every route of its path (RFC 9110 §15.5.6)."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        response = response_for(exc)
        if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
            # Starlette lists the methods of the first route that matched the path only.
            response.headers["Allow"] = allowed_methods(request.app.router.routes, request.scope)
        return response

    for exc_class in (StarletteHTTPException, RequestValidationError, RepositoryError):
        app.add_exception_handler(exc_class, handle)


#: The error responses every task operation documents in OpenAPI (contract, "Service
#: endpoints": "every endpoint documents its error responses").
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
    408: {"description": "The body did not arrive within HTTP_BODY_TIMEOUT_SECONDS"},
    413: {"description": "The body is over 64 KiB"},
    503: {
        "description": "Overloaded: refused at once, retry after `Retry-After` seconds",
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
    },
    500: {
        "description": "Database unavailable (with Retry-After) or unexpected error",
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
    },
}
