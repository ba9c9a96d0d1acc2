"""Fixtures: a real PostgreSQL (TEST_DATABASE_URL, or one started with pgserver), a fresh
database per test session, the app with its lifespan run, and an in-process HTTP client."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from tests.support import SECRET, create_database, drop_database, new_user_id


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A PostgreSQL server URL: TEST_DATABASE_URL if set, else a pgserver we start and stop."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    directory = tempfile.mkdtemp(prefix="tasks-api-pg-")
    server = pgserver.get_server(directory, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A database of this test session's own, so parallel sessions never share rows."""
    url = create_database(pg_server_url)
    try:
        yield url
    finally:
        drop_database(pg_server_url, url)


@pytest.fixture
def empty_database(pg_server_url: str) -> Iterator[str]:
    """An unmigrated database for one test alone, which it may break; dropped after."""
    url = create_database(pg_server_url, prefix="tasks_own")
    try:
        yield url
    finally:
        drop_database(pg_server_url, url)


def make_settings(database_url: str, **overrides: Any) -> Any:
    from api.settings import Settings

    values: dict[str, Any] = {
        "database_url": database_url,
        "better_auth_secret": SECRET,
        "log_format": "json",
        "db_pool_min": 1,
        "db_pool_max": 10,
        "db_pool_timeout": 5.0,
        "db_startup_timeout": 10.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    from api.app import create_app

    application = create_app(make_settings(database_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(loop_scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def user_id() -> str:
    """A user of this test alone: tests isolate their data by owner, as the service does."""
    return new_user_id()
