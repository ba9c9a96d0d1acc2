"""Domain errors raised by repositories and mapped to HTTP in `api/errors.py`."""

from __future__ import annotations


class RepositoryError(Exception):
    """Base of every error a repository raises."""


class TaskNotFound(RepositoryError):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class PreconditionFailed(RepositoryError):
    """If-Match named none of the task's current versions; nothing was written (RFC 9110
    §13.1.1)."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id}: If-Match not met")
        self.task_id = task_id


class IdempotencyKeyInFlight(RepositoryError):
    """A request with the same Idempotency-Key (same user) is still running."""


class IdempotencyKeyReused(RepositoryError):
    """The Idempotency-Key was used, within 24 hours, for a request with another body."""


class DatabaseUnavailable(RepositoryError):
    """The database could not be reached in time (pool timeout, dropped connection, outage)."""


class MigrationError(RepositoryError):
    """The schema cannot be brought to the expected version (e.g. an edited applied migration)."""
