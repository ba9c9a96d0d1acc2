"""Through PgBouncer 1.18 (Debian's) in transaction mode, on any port, with default settings.

PgBouncer before 1.21 does not track protocol-level prepared statements, and psycopg names
them `_pg3_0`, `_pg3_1`… on every client connection alike. Behind such a pooler a name
executes on whichever server connection the transaction lands on, where it may mean another
statement with the same parameters: a GET ran `delete_task` and rows vanished (issue 10).
The service decides per connection, by what the server reports, whether it talks to
PostgreSQL directly (`repositories/pool.py`); host names and ports play no part, so these
tests use a random port and port 6432 alike.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from repositories.migrations import migrate
from repositories.pool import PREPARE_THRESHOLD, build_pool, probe_route
from tests.reliability.load import run_load
from tests.reliability.pg import (
    PgBouncer,
    PgInstance,
    can_run_servers,
    pgbouncer_bin,
    port_open,
    private_postgres,
)
from tests.reliability.service import serve_until_exit
from tests.support import auth, new_user_id, require, running_service, service_env

POOL_SIZE = 3  # server connections PgBouncer keeps for the service's client connections
MIX_SECONDS = 15.0
KEEP = 20  # tasks that are only ever read
DOOMED = 400  # tasks of the same user that deleters remove meanwhile


@pytest.fixture(scope="module")
def backend() -> Iterator[PgInstance]:
    ok, why = can_run_servers()
    require(ok, why)
    require(pgbouncer_bin() is not None, "pgbouncer not installed (scripts/ci/setup-pgbouncer.sh)")
    with private_postgres() as pg:
        yield pg


def _bouncer(pg: PgInstance, port: int | None = None) -> Iterator[PgBouncer]:
    pgb = PgBouncer(backend_port=pg.port, port=port, pool_size=POOL_SIZE)
    try:
        pgb.start()
        yield pgb
    finally:
        pgb.stop()


@pytest.fixture(scope="module")
def bouncer(backend: PgInstance) -> Iterator[PgBouncer]:
    """On a random port: nothing about the address says "pooler"."""
    yield from _bouncer(backend)


@pytest.fixture
def bouncer_6432(backend: PgInstance) -> Iterator[PgBouncer]:
    require(not port_open(6432), "port 6432 is taken on this machine")
    yield from _bouncer(backend, 6432)


def _url(pgb: PgBouncer, db: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{pgb.port}/{db}"


def _migrated_db(pg: PgInstance, name: str) -> str:
    db = pg.create_database(name)
    asyncio.run(migrate(pg.url(db), connect_timeout=5))
    return db


@dataclass
class Mix:
    keep: dict[int, str]
    doomed: list[int]
    created: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


def _seed(pg: PgInstance, db: str, user: str) -> Mix:
    pg.execute("INSERT INTO users (id) VALUES (%s)", (user,), dbname=db)
    rows = pg.execute(
        "INSERT INTO tasks (user_id, title) SELECT %s, 'keep ' || g FROM generate_series(1, %s) g "
        "RETURNING id, title",
        (user, KEEP),
        dbname=db,
    )
    doomed = pg.execute(
        "INSERT INTO tasks (user_id, title) "
        "SELECT %s, 'doomed ' || g FROM generate_series(1, %s) g RETURNING id",
        (user, DOOMED),
        dbname=db,
    )
    return Mix(keep={r[0]: r[1] for r in rows}, doomed=[r[0] for r in doomed])


def _run_mix(base: str, user: str, mix: Mix, seconds: float) -> None:
    """Readers, deleters, creators and a lister of one user at once, each response checked."""
    h = auth(user)
    tasks = f"/api/{user}/tasks"
    stop = time.monotonic() + seconds

    def loop(role: str) -> None:
        rng = random.Random(role)
        with httpx.Client(base_url=base, timeout=30.0) as client:
            while time.monotonic() < stop:
                try:
                    if role.startswith("reader"):
                        task_id = rng.choice(list(mix.keep))
                        r = client.get(f"{tasks}/{task_id}", headers=h)
                        if r.status_code != 200 or r.json()["title"] != mix.keep[task_id]:
                            mix.fail(f"GET {task_id} -> {r.status_code} {r.text[:120]}")
                    elif role.startswith("deleter"):
                        with mix.lock:
                            if not mix.doomed:
                                return
                            task_id = mix.doomed.pop()
                        r = client.delete(f"{tasks}/{task_id}", headers=h)
                        if r.status_code != 204:
                            mix.fail(f"DELETE {task_id} -> {r.status_code} {r.text[:120]}")
                        else:
                            with mix.lock:
                                mix.deleted.append(task_id)
                    elif role.startswith("creator"):
                        r = client.post(tasks, json={"title": f"new {rng.random()}"}, headers=h)
                        if r.status_code != 201:
                            mix.fail(f"POST -> {r.status_code} {r.text[:120]}")
                        else:
                            with mix.lock:
                                mix.created.append(r.json()["id"])
                    else:
                        r = client.get(tasks, headers=h)
                        seen = {t["id"] for t in r.json()} if r.status_code == 200 else set()
                        if r.status_code != 200 or not set(mix.keep) <= seen:
                            mix.fail(f"list -> {r.status_code}, missing {set(mix.keep) - seen}")
                except httpx.HTTPError as exc:
                    mix.fail(f"{role}: {type(exc).__name__}: {exc}")
                with mix.lock:
                    mix.requests += 1

    roles = ["reader1", "reader2", "reader3", "deleter1", "deleter2", "creator1", "creator2"]
    with ThreadPoolExecutor(len(roles) + 1) as pool:
        list(pool.map(loop, [*roles, "lister"]))


def _check_mix(pg: PgInstance, db: str, user: str, mix: Mix) -> None:
    assert mix.requests > 200, f"only {mix.requests} requests ran"
    assert mix.deleted and mix.created, "the mix did not delete and create"
    assert mix.errors == [], f"{len(mix.errors)} errors, first: {mix.errors[:5]}"
    rows = dict(pg.execute("SELECT id, title FROM tasks WHERE user_id = %s", (user,), dbname=db))
    lost = {i for i in mix.keep if rows.get(i) != mix.keep[i]}
    assert not lost, f"{len(lost)} read-only tasks lost or changed"
    assert all(i in rows for i in mix.created), "a created task is missing"
    assert not any(i in rows for i in mix.deleted), "a deleted task is still there"
    untouched = set(rows) - set(mix.keep) - set(mix.created)
    assert untouched == set(mix.doomed), "tasks nobody deleted are gone, or deleted ones remain"


def _mix_through(pg: PgInstance, pgb: PgBouncer, tmp_path: Path, name: str) -> None:
    db = _migrated_db(pg, name)
    user = new_user_id()
    mix = _seed(pg, db, user)
    # Default settings: DB_PREPARED_STATEMENTS=auto, the default pool.
    env = service_env(_url(pgb, db))
    for key in ("DB_POOL_MIN", "DB_POOL_MAX", "DB_POOL_TIMEOUT", "DB_PREPARED_STATEMENTS"):
        env.pop(key)
    with running_service(env, log_path=tmp_path / "service.log") as (base, _):
        _run_mix(base, user, mix, MIX_SECONDS)
        # Every other endpoint too (PUT, both PATCHes, pages), each response checked.
        crud = run_load(base, workers=4, cycles=3)
    backends = pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,))
    assert backends[0][0] <= POOL_SIZE, "the load did not go through PgBouncer's pool"
    _check_mix(pg, db, user, mix)
    assert crud.errors == [], crud.errors[:5]
    assert crud.ok == 4 * 3 * 9


def test_mixed_load_on_a_random_port_loses_nothing(
    backend: PgInstance, bouncer: PgBouncer, tmp_path: Path
) -> None:
    _mix_through(backend, bouncer, tmp_path, "mix_random")


def test_mixed_load_on_port_6432_loses_nothing(
    backend: PgInstance, bouncer_6432: PgBouncer, tmp_path: Path
) -> None:
    _mix_through(backend, bouncer_6432, tmp_path, "mix_6432")


def test_prepared_statements_on_behind_pgbouncer_refuses_to_start(
    backend: PgInstance, bouncer: PgBouncer
) -> None:
    """`on` cannot be made safe behind a transaction pooler: one line, exit 2."""
    db = _migrated_db(backend, "pgb_on")
    status, stderr, _ = serve_until_exit(
        service_env(_url(bouncer, db), DB_PREPARED_STATEMENTS="on")
    )
    assert status == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "DB_PREPARED_STATEMENTS=on" in lines[0] and "auto" in lines[0], lines[0]


@pytest.mark.parametrize("mode", ["auto", "on"])
async def test_prepares_directly_on_postgresql_and_never_through_pgbouncer(
    backend: PgInstance, bouncer: PgBouncer, mode: str
) -> None:
    """The decision is the server's answer per connection: direct keeps prepared statements
    (and the server-side statement_timeout); through PgBouncer neither is used."""
    db = backend.create_database(f"pgb_probe_{mode}")
    await migrate(backend.url(db), connect_timeout=5)
    routes = {"direct": backend.url(db), "pgbouncer": _url(bouncer, db)}
    seen = {}
    for route, url in routes.items():
        pool = build_pool(
            url,
            min_size=1,
            max_size=1,
            timeout=5.0,
            connect_timeout=5,
            prepared_statements=mode if route == "direct" else "auto",
            statement_timeout=3.0,
        )
        await pool.open(wait=True, timeout=10)
        try:
            for _ in range(PREPARE_THRESHOLD + 1):
                rows = await pool.execute(
                    "SELECT current_setting('statement_timeout'), "
                    "(SELECT count(*) FROM pg_prepared_statements)",
                    {},
                    deadline=time.monotonic() + 10,
                )
            seen[route] = rows[0]
        finally:
            await pool.close()
    assert seen["direct"] == ("3s", 1), seen
    assert seen["pgbouncer"][1] == 0, seen
    assert seen["pgbouncer"][0] != "3s", "a session SET leaked through the pooler"


async def test_pgbouncer_hands_out_a_backend_pid_of_its_own(
    backend: PgInstance, bouncer: PgBouncer
) -> None:
    """The first thing probe_route compares: PgBouncer 1.18's key data is not the server's."""
    for url, direct in ((backend.url(), True), (_url(bouncer, "postgres"), False)):
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            route = await probe_route(conn, within=5.0)
        finally:
            await conn.close()
        assert route.direct is direct, route
        if not direct:
            assert route.reason.startswith("backend pid"), route
