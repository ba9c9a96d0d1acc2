"""Fixtures of the observability suites: databases of their own for servers we break."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import create_database, drop_database


@pytest.fixture
def own_database(pg_server_url: str) -> Iterator[str]:
    """A database for one test alone, which the test may break (drop tables, unmigrate)."""
    url = create_database(pg_server_url, prefix="tasks_obs")
    try:
        yield url
    finally:
        drop_database(pg_server_url, url)
