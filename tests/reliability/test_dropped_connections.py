"""Neon suspends an idle compute and drops every connection: the pool must not hand out
a dead one. Writes are not retried by the repository, so only the pool's check saves them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

from tests.reliability.pg import PgInstance
from tests.support import auth, new_user_id, running_service, service_env, wait_until

ROUNDS = 3


def _service_backends(pg: PgInstance, db: str) -> int:
    return int(
        pg.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'tasks-api' AND datname = %s",
            (db,),
        )[0][0]
    )


def _terminate_all(pg: PgInstance, db: str) -> int:
    killed = pg.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'tasks-api' AND datname = %s",
        (db,),
    )
    wait_until(lambda: _service_backends(pg, db) == 0, timeout=10, what="backends gone")
    return len(killed)


def test_requests_after_every_connection_was_terminated_succeed(
    private_pg: PgInstance, tmp_path: Path
) -> None:
    db = private_pg.create_database("dropped")
    env = service_env(private_pg.url(db), DB_POOL_MIN="4", DB_POOL_MAX="8")
    user = new_user_id()
    h = auth(user)
    with (
        running_service(env, log_path=tmp_path / "service.log") as (base, proc),
        httpx.Client(base_url=base, timeout=15.0) as client,
    ):
        tasks = f"/api/{user}/tasks"
        first = client.post(tasks, json={"title": "before"}, headers=h)
        assert first.status_code == 201
        task_id = first.json()["id"]
        for round_ in range(ROUNDS):
            # Open several pool connections, so several dead ones wait in the pool.
            with ThreadPoolExecutor(8) as pool:
                codes = list(
                    pool.map(lambda _: client.get(tasks, headers=h).status_code, range(16))
                )
            assert set(codes) == {200}
            assert _terminate_all(private_pg, db) >= 2

            # Writes first: they get no retry, so a dead connection would be a 500.
            statuses = [
                client.post(tasks, json={"title": f"after drop {round_}"}, headers=h).status_code,
                client.put(
                    f"{tasks}/{task_id}", json={"title": f"t{round_}"}, headers=h
                ).status_code,
                client.patch(f"{tasks}/{task_id}/complete", headers=h).status_code,
                client.get(f"{tasks}/{task_id}", headers=h).status_code,
                client.get(tasks, headers=h).status_code,
            ]
            assert statuses == [201, 200, 200, 200, 200], f"round {round_}: {statuses}"

            _terminate_all(private_pg, db)
            with ThreadPoolExecutor(8) as pool:
                burst = list(
                    pool.map(
                        lambda i: client.post(tasks, json={"title": f"burst {i}"}, headers=h),
                        range(8),
                    )
                )
            assert [r.status_code for r in burst] == [201] * 8, [r.text for r in burst]
            assert client.get("/ready").status_code == 200
        assert proc.poll() is None


def test_a_read_whose_connection_dies_mid_statement_is_retried(
    private_pg: PgInstance, tmp_path: Path
) -> None:
    """The pool's check cannot help once a statement is running: reads get one more try.

    The read is held in the database by a lock, its backend terminated while it waits: the
    same request then succeeds on a fresh connection. A write in the same spot is not retried
    (it might have committed) and gets the contract's 500 with Retry-After.
    """
    db = private_pg.create_database("mid_statement")
    env = service_env(private_pg.url(db), DB_POOL_MIN="2", DB_POOL_MAX="4")
    user = new_user_id()
    h = auth(user)
    with (
        running_service(env, log_path=tmp_path / "service.log") as (base, _),
        httpx.Client(base_url=base, timeout=20.0) as client,
        ThreadPoolExecutor(1) as background,
    ):
        tasks = f"/api/{user}/tasks"
        assert client.post(tasks, json={"title": "held"}, headers=h).status_code == 201
        for method, expected in (("GET", 200), ("POST", 500)):
            with psycopg.connect(private_pg.admin_url(db)) as locker:
                locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
                body = {"json": {"title": "w"}} if method == "POST" else {}
                pending = background.submit(client.request, method, tasks, headers=h, **body)
                pid = wait_until(
                    lambda: private_pg.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND "
                        "application_name = 'tasks-api' AND wait_event_type = 'Lock'",
                        (db,),
                    ),
                    timeout=10,
                    what="the request waiting in the database",
                )[0][0]
                private_pg.execute("SELECT pg_terminate_backend(%s)", (pid,))
                locker.rollback()
            response = pending.result(timeout=20)
            assert response.status_code == expected, f"{method}: {response.text}"
            if expected == 500:
                assert response.json()["detail"] == "Database unavailable, retry shortly"
                assert response.headers["retry-after"]
