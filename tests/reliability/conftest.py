"""Fixtures of the reliability suites: private PostgreSQL instances the tests may stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.pg import PgInstance, can_run_servers, private_postgres
from tests.support import require


@pytest.fixture
def private_pg() -> Iterator[PgInstance]:
    """A started PostgreSQL of this test alone, on a free loopback port."""
    ok, why = can_run_servers()
    require(ok, why)
    with private_postgres() as instance:
        yield instance
