"""Through PgBouncer 1.18 in transaction mode, as Neon's pooled endpoint runs it.

PgBouncer before 1.21 does not track protocol-level prepared statements: a statement
prepared on one server connection is missing on the next (or clashes with another
client's of the same name). The service therefore turns them off for a pooler URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.settings import Settings
from tests.reliability.load import run_load
from tests.reliability.pg import (
    PgBouncer,
    PgInstance,
    can_run_servers,
    pgbouncer_bin,
    private_postgres,
)
from tests.support import read_json_log, require, running_service, service_env

POOL_SIZE = 3  # server connections PgBouncer keeps for the service's ten client connections


@pytest.fixture(scope="module")
def bouncer() -> Iterator[tuple[PgInstance, PgBouncer]]:
    ok, why = can_run_servers()
    require(ok, why)
    require(pgbouncer_bin() is not None, "pgbouncer not installed (scripts/ci/setup-pgbouncer.sh)")
    with private_postgres() as pg:
        pgb = PgBouncer(backend_port=pg.port, pool_size=POOL_SIZE)
        try:
            pgb.start()
            yield pg, pgb
        finally:
            pgb.stop()


def _pooler_url(pgb: PgBouncer, db: str) -> str:
    # A Neon-style `-pooler` host name; `hostaddr` keeps it on loopback without DNS.
    return f"postgresql://postgres@ep-tasks-pooler.localhost:{pgb.port}/{db}?hostaddr=127.0.0.1"


def _plain_url(pgb: PgBouncer, db: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{pgb.port}/{db}"


def _ready_event(log: Path) -> dict[str, object]:
    return next(e for e in read_json_log(log, strict=False) if e.get("event") == "service_ready")


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_concurrent_load_through_pgbouncer_has_no_errors(
    bouncer: tuple[PgInstance, PgBouncer], tmp_path: Path, mode: str
) -> None:
    pg, pgb = bouncer
    db = pg.create_database(f"pgb_{mode}")
    url = _pooler_url(pgb, db) if mode == "auto" else _plain_url(pgb, db)
    assert Settings(_env_file=None, database_url=url).uses_pooler is (mode == "auto")  # type: ignore[call-arg]
    log = tmp_path / "service.log"
    env = service_env(url, DB_PREPARED_STATEMENTS=mode, DB_POOL_MIN="4", DB_POOL_MAX="10")
    with running_service(env, log_path=log) as (base, _):
        result = run_load(base, workers=8, cycles=5)
        backends = pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,))[0][
            0
        ]
    assert result.errors == [], result.errors[:10]
    assert result.ok == 8 * 5 * 9
    assert _ready_event(log)["prepared_statements"] is False
    assert backends <= POOL_SIZE, "the load did not go through PgBouncer's pool"


def test_prepared_statements_on_break_behind_pgbouncer(
    bouncer: tuple[PgInstance, PgBouncer], tmp_path: Path
) -> None:
    """What `auto` guards against: forced on behind the pooler, requests fail."""
    pg, pgb = bouncer
    db = pg.create_database("pgb_on")
    log = tmp_path / "service.log"
    env = service_env(
        # Four client connections over three server ones: each client connection runs
        # every statement well past psycopg's prepare threshold (5) during the load.
        _pooler_url(pgb, db),
        DB_PREPARED_STATEMENTS="on",
        DB_POOL_MIN="4",
        DB_POOL_MAX="4",
    )
    with running_service(env, log_path=log) as (base, _):
        result = run_load(base, workers=8, cycles=5)
    assert _ready_event(log)["prepared_statements"] is True
    assert result.errors, "prepared statements behind PgBouncer 1.18 should have failed"
    assert any("-> 500" in e for e in result.errors), result.errors[:5]
    logged = " ".join(str(e) for e in read_json_log(log, strict=False))
    assert "prepared statement" in logged and (
        "does not exist" in logged or "already exists" in logged
    )
