"""A running service for the fuzz suites, on a database of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import running_service, service_env


@pytest.fixture(scope="module")
def service_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = Path(tmp_path_factory.mktemp("fuzz")) / "service.log"
    env = service_env(database_url, DB_POOL_MIN="1", DB_POOL_MAX="5", LOG_LEVEL="WARNING")
    with running_service(env, log_path=log) as (base, _):
        yield base
