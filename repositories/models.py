"""SQLModel tables and the request/response schemas of the Tasks API."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainSerializer,
    StrictBool,
    TypeAdapter,
)
from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel
from typing_extensions import TypedDict

# Contract, "Endpoints": lengths in Unicode code points (Python's len of a str).
TITLE_MAX = 200
DESCRIPTION_MAX = 1000
_ALLOWED_CONTROLS = {"\t", "\n"}


def _check_text(value: str, *, field: str) -> str:
    # Cc covers NUL, the other C0 controls, DEL and C1 (contract: control characters but tab
    # and newline are 422); Cs is a lone surrogate, which JSON's \ud800 escapes can carry
    # and which no UTF-8 column can store.
    for ch in value:
        if ch in _ALLOWED_CONTROLS:
            continue
        category = unicodedata.category(ch)
        if category == "Cc":
            raise ValueError(f"{field} must not contain control characters")
        if category == "Cs":
            raise ValueError(f"{field} must be valid Unicode (lone surrogate)")
    return value


def clean_title(value: str) -> str:
    """The title with leading and trailing white space stripped (contract, "Endpoints").

    Raises ValueError (a 422 through pydantic) when the result is empty, longer than
    TITLE_MAX code points, or holds a control character other than tab and newline or a
    lone surrogate.
    """
    value = _check_text(value.strip(), field="title")
    if len(value) < 1:
        raise ValueError("title must not be empty or only white space")
    if len(value) > TITLE_MAX:
        raise ValueError(f"title must be at most {TITLE_MAX} characters")
    return value


def clean_description(value: str) -> str:
    """The description unchanged (white space kept). Raises ValueError (a 422) when it is
    longer than DESCRIPTION_MAX code points or holds a control character other than tab and
    newline or a lone surrogate (contract, "Endpoints")."""
    value = _check_text(value, field="description")
    if len(value) > DESCRIPTION_MAX:
        raise ValueError(f"description must be at most {DESCRIPTION_MAX} characters")
    return value


# --- tables -----------------------------------------------------------------------------------


class User(SQLModel, table=True):
    """Reference row for a Better Auth user; created on the user's first write."""

    __tablename__ = "users"

    id: str = Field(sa_column=Column(Text, primary_key=True))
    name: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    email: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    #: bumped by every statement that really changes one of the user's tasks: the list's ETag
    tasks_version: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )


class Task(SQLModel, table=True):
    """A user's task, the `tasks` table. `sql/migrations` makes the schema; this class
    mirrors it, and tests/test_schema.py compares the two."""

    __tablename__ = "tasks"
    __table_args__ = (
        # Leads with user_id: every list variant is a range scan of one user's rows.
        Index("ix_tasks_user_completed_created", "user_id", "completed", "created_at", "id"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, primary_key=True, autoincrement=True),
    )
    user_id: str = Field(
        sa_column=Column(Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    title: str = Field(sa_column=Column(Text, nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    completed: bool = Field(default=False, nullable=False)
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    updated_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    # sort=title's key: the title after Unicode full case folding, compared by code point
    # (migration 0002); written by the database, never by the service.
    title_key: str | None = Field(
        default=None,
        sa_column=Column(
            Text(collation="C"),
            Computed("task_title_key(title)", persisted=True),
            nullable=False,
        ),
    )
    #: bumped when a value really changes: the task's ETag, compared with If-Match in SQL
    version: int = Field(
        default=1, sa_column=Column(BigInteger, nullable=False, server_default="1")
    )


class IdempotencyKey(SQLModel, table=True):
    """A POST's Idempotency-Key, its request fingerprint and its response, kept 24 hours."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # The inserting statement deletes expired keys oldest first, a few at a time.
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    user_id: str = Field(
        sa_column=Column(
            Text, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    key: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    fingerprint: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    task_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    status_code: int = Field(sa_column=Column(SmallInteger, nullable=False))
    response: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


# --- request / response schemas ---------------------------------------------------------------


def _title_not_null(value: Any) -> Any:
    # Contract, "Endpoints": PUT `title: null` is 422, while an omitted title is unchanged.
    if value is None:
        raise ValueError("title cannot be null")
    return value


Title = Annotated[str, AfterValidator(clean_title)]
"""A title: white space stripped, then 1-200 code points without control characters."""

Description = Annotated[str, AfterValidator(clean_description)]
"""A description: at most 1000 code points, no control characters but tab and newline."""


class TaskCreate(SQLModel):
    """Body of POST. Unknown fields (id, user_id, completed, timestamps…) are ignored."""

    title: Title = Field(description="1-200 Unicode code points after trimming white space")
    description: Description | None = Field(default=None, description="At most 1000 code points")


class TaskUpdate(SQLModel):
    """Body of PUT. An omitted field is unchanged; `description: null` clears it."""

    # Omitted is allowed (None by default, never validated); an explicit null is 422.
    title: Annotated[Title | None, BeforeValidator(_title_not_null)] = Field(
        default=None, description="1-200 code points; null is rejected"
    )
    description: Description | None = Field(default=None, description="At most 1000 code points")


class TaskComplete(SQLModel):
    """Optional body of PATCH …/complete: set the state instead of toggling it."""

    completed: StrictBool


# The response schemas below carry comments, not docstrings: pydantic publishes a class's
# docstring as its JSON Schema description, which would change /openapi.json and, through
# api.conditional.REPRESENTATION, every ETag.


def utc_isoformat(value: datetime) -> str:
    """A timestamp as the API writes it (contract, "Endpoints": ISO 8601 in UTC with an
    offset), whatever the session's time zone: e.g. `2026-11-30T13:00:00.123456+00:00`."""
    return value.astimezone(UTC).isoformat()


#: A timestamp written by `utc_isoformat`.
UTCTimestamp = Annotated[datetime, PlainSerializer(utc_isoformat, return_type=str)]


# A task as the API returns it (contract, "Endpoints"): the schema OpenAPI documents.
class TaskPublic(SQLModel):
    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    created_at: UTCTimestamp
    updated_at: UTCTimestamp


class TaskRow(TypedDict):
    """TaskPublic as a plain dict: what the repository reads from a row and the routes
    serialise, in pydantic-core alone (no model instance: a 20-task list costs 44 µs against
    92 µs through TaskPublic instances). Same fields in the same order, same JSON bytes;
    tests/test_tasks.py pins both. Validating a row drops its other columns."""

    id: int
    user_id: str
    title: str
    description: str | None
    completed: bool
    created_at: UTCTimestamp
    updated_at: UTCTimestamp


#: TaskRow's validation (rows in) and serialisation (JSON out), for one and for a list.
TASK_ROW: Final = TypeAdapter(TaskRow)
TASK_ROWS: Final = TypeAdapter(list[TaskRow])


# Every error body (contract, "Errors"): {"status_code": int, "detail": str}.
class ErrorResponse(SQLModel):
    status_code: int
    detail: str


# One problem of a 422: where (e.g. ["body", "title"]), the message, pydantic's type.
class ValidationErrorItem(SQLModel):
    loc: list[str | int]
    msg: str
    type: str


# The 422 body: the error shape plus `errors` (contract, "Errors").
class ValidationErrorResponse(ErrorResponse):
    errors: list[ValidationErrorItem]


# TaskPublic's fields: the columns `repositories.tasks._task` reads, by name, from a row.
TASK_COLUMNS = ("id", "user_id", "title", "description", "completed", "created_at", "updated_at")
