"""TLS as Neon requires it: a private PostgreSQL with ssl=on and hostssl-only pg_hba."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.pg import (
    PgInstance,
    TlsFiles,
    can_run_servers,
    make_tls_files,
    openssl_bin,
    private_postgres,
)
from tests.reliability.service import serve_until_exit
from tests.support import auth, new_user_id, require, running_service, service_env


@pytest.fixture(scope="module")
def tls_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PgInstance, TlsFiles]]:
    ok, why = can_run_servers()
    require(ok, why)
    require(openssl_bin() is not None, "openssl not installed (scripts/ci/setup-pgbouncer.sh)")
    tls = make_tls_files(tmp_path_factory.mktemp("tls"))
    with private_postgres(tls=tls) as instance:
        yield instance, tls


def test_service_works_over_verify_full(
    tls_pg: tuple[PgInstance, TlsFiles], tmp_path: Path
) -> None:
    pg, tls = tls_pg
    db = pg.create_database("tls_ok")
    url = pg.url(db, sslmode="verify-full", sslrootcert=str(tls.ca_cert))
    with running_service(service_env(url), log_path=tmp_path / "service.log") as (base, _):
        user = new_user_id()
        h = auth(user)
        created = httpx.post(f"{base}/api/{user}/tasks", json={"title": "over TLS"}, headers=h)
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        assert httpx.get(f"{base}/api/{user}/tasks/{task_id}", headers=h).status_code == 200
        assert httpx.patch(f"{base}/api/{user}/tasks/{task_id}/complete", headers=h).json()[
            "completed"
        ]
        assert httpx.get(f"{base}/ready").status_code == 200
        # Every connection of the service really is encrypted (hostssl would refuse others).
        rows = pg.execute(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
            "WHERE a.application_name = 'tasks-api' AND a.datname = %s",
            (db,),
        )
        assert rows and all(ssl for (ssl,) in rows)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("other_ca", "certificate verify failed"),
        ("host_mismatch", "does not match host name"),
        ("plain_text", "no pg_hba.conf entry"),
    ],
)
def test_refuses_to_start_when_the_server_cannot_be_trusted(
    tls_pg: tuple[PgInstance, TlsFiles], tmp_path: Path, case: str, expected: str
) -> None:
    """A wrong certificate is permanent: exit 2 at once with the cause, no 20 s of retries."""
    pg, tls = tls_pg
    db = pg.create_database(f"tls_{case}")
    url = {
        "other_ca": pg.url(db, sslmode="verify-full", sslrootcert=str(tls.other_ca_cert)),
        # The name checked is `host`; `hostaddr` keeps the connection on loopback.
        "host_mismatch": pg.url(
            db,
            host="wrong-host.invalid",
            hostaddr="127.0.0.1",
            sslmode="verify-full",
            sslrootcert=str(tls.ca_cert),
        ),
        "plain_text": pg.url(db, sslmode="disable"),
    }[case]
    code, stderr, elapsed = serve_until_exit(service_env(url, DB_STARTUP_TIMEOUT="20"))
    assert code == 2, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("tasks-api: cannot use the database (NEON_DB_URL/DATABASE_URL):"), last
    assert expected in last
    assert "Traceback" not in stderr
    assert elapsed < 15, f"took {elapsed:.1f}s: it retried a permanent error"
