"""A database that stops answering: PgBouncer `PAUSE` (queries queue, nothing answers).

This is what a stalled compute or a network that drops packets looks like from the service.
Contract, "Database faults": every request that touches the database gets 500 +
Retry-After within DB_POOL_TIMEOUT + DB_STATEMENT_TIMEOUT, `/ready` 503 within its 2 s, and
a write whose request was answered with an error is never applied later (here: after
`RESUME`, when PgBouncer would hand any query still queued to the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from repositories.pool import build_pool
from tests.reliability.pg import (
    PgBouncer,
    PgInstance,
    can_run_servers,
    pgbouncer_bin,
    private_postgres,
)
from tests.support import auth, new_user_id, read_json_log, require, running_service, service_env

POOL_TIMEOUT = 1.0
STATEMENT_TIMEOUT = 1.5
BOUND = POOL_TIMEOUT + STATEMENT_TIMEOUT
READY_BOUND = min(2.0, POOL_TIMEOUT)
# Process scheduling on a busy 2-core CI machine; the bounds above are the contract.
SLACK = 1.0
DB_DETAIL = "Database unavailable, retry shortly"
SETTLE = 1.5  # after RESUME: long enough for a queued query to reach the server and commit


@pytest.fixture(scope="module")
def paused_setup() -> Iterator[tuple[PgInstance, PgBouncer]]:
    ok, why = can_run_servers()
    require(ok, why)
    require(pgbouncer_bin() is not None, "pgbouncer not installed (scripts/ci/setup-pgbouncer.sh)")
    with private_postgres() as pg:
        pgb = PgBouncer(backend_port=pg.port, pool_size=3)
        try:
            pgb.start()
            yield pg, pgb
        finally:
            pgb.stop()


def _row(pg: PgInstance, db: str, task_id: int) -> tuple[Any, ...] | None:
    rows = pg.execute("SELECT title, completed FROM tasks WHERE id = %s", (task_id,), dbname=db)
    return tuple(rows[0]) if rows else None


def test_every_method_answers_in_time_while_paused_and_no_write_lands_after(
    paused_setup: tuple[PgInstance, PgBouncer], tmp_path: Path
) -> None:
    pg, pgb = paused_setup
    db = pg.create_database("paused")
    env = service_env(
        f"postgresql://postgres@127.0.0.1:{pgb.port}/{db}",
        # One connection: the warm-up request leaves it freshly used, so the request under
        # PAUSE skips the checkout check and its statement really is queued in PgBouncer.
        DB_POOL_MIN="1",
        DB_POOL_MAX="1",
        DB_POOL_TIMEOUT=str(POOL_TIMEOUT),
        DB_STATEMENT_TIMEOUT=str(STATEMENT_TIMEOUT),
    )
    user = new_user_id()
    h = auth(user)
    tasks = f"/api/{user}/tasks"
    log = tmp_path / "service.log"
    with (
        running_service(env, log_path=log) as (base, proc),
        httpx.Client(base_url=base, timeout=BOUND + SLACK + 0.5) as client,
    ):
        created = client.post(tasks, json={"title": "original"}, headers=h)
        assert created.status_code == 201
        task_id = created.json()["id"]
        item = f"{tasks}/{task_id}"
        original = _row(pg, db, task_id)

        def titles() -> list[str]:
            return [r[0] for r in pg.execute("SELECT title FROM tasks", dbname=db)]

        cases: list[tuple[str, Callable[[], httpx.Response], float, Callable[[], bool]]] = [
            ("GET", lambda: client.get(item, headers=h), BOUND, lambda: True),
            ("GET list", lambda: client.get(tasks, headers=h), BOUND, lambda: True),
            (
                "POST",
                lambda: client.post(tasks, json={"title": "paused post"}, headers=h),
                BOUND,
                lambda: "paused post" not in titles(),
            ),
            (
                "PUT",
                lambda: client.put(item, json={"title": "paused put"}, headers=h),
                BOUND,
                lambda: _row(pg, db, task_id) == original,
            ),
            (
                "PATCH toggle",
                lambda: client.patch(f"{item}/complete", headers=h),
                BOUND,
                lambda: _row(pg, db, task_id) == original,
            ),
            (
                "PATCH set",
                lambda: client.patch(f"{item}/complete", json={"completed": True}, headers=h),
                BOUND,
                lambda: _row(pg, db, task_id) == original,
            ),
            (
                "DELETE",
                lambda: client.delete(item, headers=h),
                BOUND,
                lambda: _row(pg, db, task_id) == original,
            ),
            ("/ready", lambda: client.get("/ready"), READY_BOUND, lambda: True),
        ]
        problems: list[str] = []
        for name, call, bound, unchanged in cases:
            warm = client.get(item, headers=h)  # leaves the connection freshly used
            if warm.status_code != 200:
                problems.append(f"before {name}: {warm.status_code} {warm.text[:100]}")
            pgb.admin(f"PAUSE {db}")
            response: httpx.Response | None = None
            try:
                started = time.monotonic()
                # The client gives up a little after the bound, like a real caller would.
                response = call()
            except httpx.TimeoutException:
                pass
            finally:
                took = time.monotonic() - started
                pgb.admin(f"RESUME {db}")
            expected = 503 if name == "/ready" else 500
            if response is None or took > bound + SLACK:
                problems.append(f"{name}: no answer within {bound + SLACK:g}s")
            elif response.status_code != expected or not response.headers.get("retry-after"):
                problems.append(f"{name}: {response.status_code} {response.text[:100]}")
            elif expected == 500 and response.json()["detail"] != DB_DETAIL:
                problems.append(f"{name}: {response.text[:100]}")
            time.sleep(SETTLE)
            if not unchanged():
                problems.append(f"{name}: a write whose request failed was applied later")
            if response is None:
                # Let the abandoned request finish before the next case's warm-up.
                time.sleep(2.0)
        assert problems == [], "\n".join(problems)

        # A connection idle past the bypass window is checked; the check has a deadline too.
        assert client.get(item, headers=h).status_code == 200
        time.sleep(1.2)
        pgb.admin(f"PAUSE {db}")
        try:
            started = time.monotonic()
            stale = client.get(item, headers=h)
            took = time.monotonic() - started
        finally:
            pgb.admin(f"RESUME {db}")
        assert stale.status_code == 500, stale.text
        assert took <= BOUND + SLACK, f"answered after {took:.2f}s"

        # Resumed: the service serves again, with no restart.
        after = client.post(tasks, json={"title": "after resume"}, headers=h)
        assert after.status_code == 201, after.text
        assert client.get("/ready").status_code == 200
        assert proc.poll() is None
    events = [e.get("event") for e in read_json_log(log, strict=False)]
    assert "unhandled_error" not in events


def test_pool_exhaustion_answers_within_the_pool_deadline(tmp_path: Path) -> None:
    """DB_POOL_MAX=2, DB_POOL_TIMEOUT=1, 24 clients listing 2,000 tasks: every answer is a
    200 or the contract's 500 + Retry-After, and none comes later than the deadline."""
    ok, why = can_run_servers()
    require(ok, why)
    with private_postgres() as pg:
        db = pg.create_database("exhaust")
        env = service_env(
            pg.url(db),
            DB_POOL_MIN="2",
            DB_POOL_MAX="2",
            DB_POOL_TIMEOUT=str(POOL_TIMEOUT),
            DB_STATEMENT_TIMEOUT=str(STATEMENT_TIMEOUT),
        )
        user = new_user_id()
        with running_service(env, log_path=tmp_path / "service.log") as (base, _):
            pg.execute("INSERT INTO users (id) VALUES (%s)", (user,), dbname=db)
            pg.execute(
                "INSERT INTO tasks (user_id, title) "
                "SELECT %s, 'task ' || g FROM generate_series(1, 2000) g",
                (user,),
                dbname=db,
            )
            h = auth(user)

            def lists(_: int) -> list[tuple[int, float, str | None]]:
                out = []
                with httpx.Client(base_url=base, timeout=30.0) as client:
                    for _ in range(4):
                        started = time.monotonic()
                        r = client.get(f"/api/{user}/tasks", headers=h)
                        out.append(
                            (
                                r.status_code,
                                time.monotonic() - started,
                                r.headers.get("retry-after"),
                            )
                        )
                return out

            with ThreadPoolExecutor(24) as pool:
                results = [x for chunk in pool.map(lists, range(24)) for x in chunk]
    statuses = {s for s, _, _ in results}
    assert statuses <= {200, 500}, statuses
    assert all(ra for s, _, ra in results if s == 500)
    # The service's own measure of each request (its access log), so that a busy CI machine
    # starving the test's client threads of CPU does not count against the service.
    served = [
        float(e["duration_ms"]) / 1000
        for e in read_json_log(tmp_path / "service.log", strict=False)
        if e.get("event") == "request" and e.get("route") == "/api/{user_id}/tasks"
    ]
    assert len(served) == len(results), (len(served), len(results))
    print(f"statuses {sorted(statuses)}, slowest served {max(served):.2f}s")
    assert max(served) <= BOUND + SLACK, f"a request took {max(served):.2f}s in the service"
    # And as the clients saw it, with room for their own scheduling.
    assert max(t for _, t, _ in results) <= BOUND + 4 * SLACK


def test_a_forced_stop_while_paused_ends_at_once(
    paused_setup: tuple[PgInstance, PgBouncer], tmp_path: Path
) -> None:
    """The signal again while requests wait on a silent database: the process exits within
    about FORCED_CLOSE_SECONDS. The pool's close ends the running statements first; left
    to be cancelled with their tasks at exit, psycopg's cancel handling waited 5 s on the
    paused PgBouncer (red team: 5.5 s)."""
    pg, pgb = paused_setup
    db = pg.create_database("forced")
    env = service_env(
        f"postgresql://postgres@127.0.0.1:{pgb.port}/{db}",
        DB_POOL_MIN="2",
        DB_POOL_MAX="2",
        DB_POOL_TIMEOUT="20",
        DB_STATEMENT_TIMEOUT="20",  # no deadline fires during the test
        SHUTDOWN_DRAIN_SECONDS="5",
    )
    user = new_user_id()
    h = auth(user)
    log = tmp_path / "service.log"
    with running_service(env, log_path=log) as (base, proc):
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(2):  # both connections freshly used: no checkout check
                assert client.get(f"/api/{user}/tasks", headers=h).status_code == 200
        pgb.admin(f"PAUSE {db}")
        try:

            def post(n: int) -> None:
                with contextlib.suppress(httpx.HTTPError), httpx.Client(timeout=15) as c:
                    c.post(f"{base}/api/{user}/tasks", json={"title": f"p{n}"}, headers=h)

            with ThreadPoolExecutor(2) as clients:
                futures = [clients.submit(post, n) for n in range(2)]
                time.sleep(0.8)  # both statements queued in PgBouncer
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
                took = time.monotonic() - started
                for f in futures:
                    f.result(timeout=20)
        finally:
            pgb.admin(f"RESUME {db}")
    assert took < 2.5, f"the forced stop took {took:.2f}s"
    assert "query not terminated after cancellation" not in log.read_text(encoding="utf-8")


async def test_closing_the_pool_while_a_new_connection_is_set_up_on_a_silent_database(
    paused_setup: tuple[PgInstance, PgBouncer],
) -> None:
    """A pool worker setting up a new connection (`probe_route`) when the pool closes: the
    close ends its statement at once. Cancelled inside psycopg's wait instead, the worker
    waited out psycopg's 5 s cancel, and a plain SIGTERM during an outage took 10 s longer
    (red team)."""
    pg, pgb = paused_setup
    db = pg.create_database("closing")
    pool = build_pool(
        f"postgresql://postgres@127.0.0.1:{pgb.port}/{db}",
        min_size=1,
        max_size=2,
        timeout=20.0,
        connect_timeout=5,
        statement_timeout=20.0,  # no deadline fires during the test
    )
    await pool.open(wait=True, timeout=10)
    held = await pool.getconn()
    pgb.admin(f"PAUSE {db}")
    try:
        waiter = asyncio.ensure_future(pool.getconn())  # the pool grows: a worker connects
        await asyncio.sleep(1.0)  # ...and is inside the new connection's first statement
        started = time.monotonic()
        await pool.putconn(held)
        await pool.close(timeout=10)
        took = time.monotonic() - started
        waiter.cancel()
        with contextlib.suppress(BaseException):
            await waiter
    finally:
        pgb.admin(f"RESUME {db}")
    assert took < 2.0, f"the pool took {took:.2f}s to close"
