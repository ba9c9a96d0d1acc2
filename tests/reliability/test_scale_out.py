"""Two instances start at the same moment on one empty database, then share the users."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

from repositories.migrations import discover
from tests.reliability.pg import PgInstance
from tests.reliability.service import spawn_service
from tests.support import (
    auth,
    free_port,
    new_user_id,
    read_json_log,
    service_env,
    stop_process,
    wait_http,
    wait_until,
)


def _waiting_on_locks(pg: PgInstance, db: str) -> int:
    return int(
        pg.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            (db,),
        )[0][0]
    )


def test_two_instances_race_on_an_empty_database_and_agree(
    private_pg: PgInstance, tmp_path: Path
) -> None:
    db = private_pg.create_database("scale_out")
    url = private_pg.url(db)
    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = []
    # A barrier that does not depend on the protection under test: an uncommitted
    # CREATE TABLE of the bookkeeping table, on which both instances' migrations block
    # (with the advisory lock, one on the table and one on the lock; without it, both on
    # the table). Rolled back, the database is empty again and both go at the same instant.
    barrier = psycopg.connect(private_pg.admin_url(db))
    try:
        barrier.execute("CREATE TABLE schema_migrations (version integer)")
        for port, log in zip(ports, logs, strict=True):
            procs.append(spawn_service(service_env(url), port=port, log_path=log))
        wait_until(
            lambda: _waiting_on_locks(private_pg, db) >= 2,
            timeout=60,
            what="both instances migrating",
        )
        barrier.rollback()
        barrier.close()
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base, proc in zip(bases, procs, strict=True):
            wait_http(f"{base}/ready", timeout=60, proc=proc)
        _check_consistency(bases)
        ready = [httpx.get(f"{b}/ready").json() for b in bases]
    finally:
        barrier.close()
        for proc in procs:
            stop_process(proc)

    migrations = discover()
    assert ready[0] == ready[1] == {"status": "ready", "schema_version": migrations[-1].version}
    applied = private_pg.execute(
        "SELECT version FROM schema_migrations ORDER BY version", dbname=db
    )
    assert [v for (v,) in applied] == [m.version for m in migrations]
    events = [e for log in logs for e in read_json_log(log, strict=False)]
    # Exactly one instance applied each migration, and neither ran into the other.
    assert sorted(e["version"] for e in events if e.get("event") == "migration_applied") == [
        m.version for m in migrations
    ]
    assert not [e for e in events if e.get("event") == "database_waiting"], [
        e for e in events if e.get("event") == "database_waiting"
    ]


def _check_consistency(bases: list[str]) -> None:
    a, b = (httpx.Client(base_url=base, timeout=20.0) for base in bases)
    try:
        for _ in range(3):
            user = new_user_id()
            h = auth(user)
            path = f"/api/{user}/tasks"
            ids = []
            for n, client in zip(range(6), itertools.cycle((a, b))):
                r = client.post(path, json={"title": f"task {n}"}, headers=h)
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            list_a, list_b = a.get(path, headers=h).json(), b.get(path, headers=h).json()
            assert list_a == list_b and [t["id"] for t in list_a] == ids

            first = ids[0]
            toggled = a.patch(f"{path}/{first}/complete", headers=h).json()
            assert b.get(f"{path}/{first}", headers=h).json() == toggled
            put = b.put(f"{path}/{first}", json={"title": "renamed"}, headers=h).json()
            assert a.get(f"{path}/{first}", headers=h).json() == put

            # Concurrent toggles through both instances: none is lost (even count -> back).
            toggle = f"{path}/{ids[1]}/complete"
            clients = [a, b] * 6
            with ThreadPoolExecutor(6) as pool:
                codes = list(
                    pool.map(
                        lambda c, url=toggle, h=h: c.patch(url, headers=h).status_code, clients
                    )
                )
            assert codes == [200] * len(clients)
            assert a.get(f"{path}/{ids[1]}", headers=h).json()["completed"] is False
            assert b.get(f"{path}/{ids[1]}", headers=h).json()["completed"] is False

            assert b.delete(f"{path}/{ids[2]}", headers=h).status_code == 204
            assert a.get(f"{path}/{ids[2]}", headers=h).status_code == 404
            assert a.delete(f"{path}/{ids[2]}", headers=h).status_code == 404
            assert a.get(path, headers=h).json() == b.get(path, headers=h).json()
    finally:
        a.close()
        b.close()
