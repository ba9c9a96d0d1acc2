"""Domain errors raised by repositories; mapped to HTTP in one place, `api/errors.py`.

Each class here that reaches a request must be in `api.errors.DOMAIN_ERRORS` (or subclass one
that is); tests/test_errors.py fails otherwise.
"""

from __future__ import annotations


class RepositoryError(Exception):
    """Base of every error a repository raises; its message is for logs, never for clients."""


class TaskNotFound(RepositoryError):
    """No task `task_id` of this user: 404 "Task not found" (contract, "Endpoints": a task of
    another user is indistinguishable from a missing one). `task_id` 0 stands for a path
    value that is not a task id at all (api/deps.py)."""

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
    """The database could not be reached in time (pool timeout, dropped connection, outage,
    statement deadline): 500 "Database unavailable, retry shortly" with `Retry-After`
    (contract, "Errors" and "Database faults"). The driver's error is its `__cause__`."""


class MigrationError(RepositoryError):
    """The schema cannot be brought to the expected version (e.g. an edited applied
    migration); raised at start-up and by `tasks-api migrate`, not during requests."""
