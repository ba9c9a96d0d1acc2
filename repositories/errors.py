"""Domain errors raised by repositories and mapped to HTTP in `api/errors.py`."""

from __future__ import annotations


class RepositoryError(Exception):
    """Base of every error a repository raises."""


class TaskNotFound(RepositoryError):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class DatabaseUnavailable(RepositoryError):
    """The database could not be reached in time (pool timeout, dropped connection, outage)."""


class MigrationError(RepositoryError):
    """The schema cannot be brought to the expected version (e.g. an edited applied migration)."""
