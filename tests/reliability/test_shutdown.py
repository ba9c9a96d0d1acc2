"""SIGTERM during writes: in-flight requests finish, the pool closes, exit status 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import psycopg

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

WRITERS = 6


def test_sigterm_during_write_load_loses_no_acknowledged_write(
    private_pg: PgInstance, tmp_path: Path
) -> None:
    db = private_pg.create_database("shutdown")
    log = tmp_path / "service.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = spawn_service(
        service_env(private_pg.url(db), DB_POOL_MAX="10"),
        port=port,
        log_path=log,
        args=("--graceful-timeout", "20"),
    )
    acked: list[int] = []
    other: list[str] = []
    in_flight_at_term: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    term_sent = threading.Event()

    def writer() -> None:
        user = new_user_id()
        with httpx.Client(base_url=base, timeout=30.0) as client:
            for n in range(3000):
                if stop.is_set():
                    return
                sent_before_term = not term_sent.is_set()
                try:
                    r = client.post(
                        f"/api/{user}/tasks", json={"title": f"w{n}"}, headers=auth(user)
                    )
                except httpx.HTTPError as exc:
                    # After SIGTERM the server stops accepting: that is the end of this writer.
                    with lock:
                        other.append(f"{type(exc).__name__} sent_before_term={sent_before_term}")
                    return
                with lock:
                    if r.status_code == 201:
                        acked.append(r.json()["id"])
                        if sent_before_term and term_sent.is_set():
                            in_flight_at_term.append(r.json()["id"])
                    else:
                        other.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    try:
        wait_http(f"{base}/ready", timeout=60, proc=proc)
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 30, timeout=30, what="write load running")
        # Hold the inserts in the database, so that SIGTERM finds requests really in flight.
        with psycopg.connect(private_pg.admin_url(db)) as blocker:
            blocker.execute("LOCK TABLE tasks IN SHARE MODE")
            wait_until(
                lambda: (
                    private_pg.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                        "AND application_name = 'tasks-api' AND wait_event_type = 'Lock'",
                        (db,),
                    )[0][0]
                    >= WRITERS
                ),
                timeout=20,
                what="writers blocked in the database",
            )
            term_sent.set()
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.5)
            assert proc.poll() is None, "exited with requests still in flight"
            blocker.rollback()  # releases the lock: the in-flight inserts complete
        code = proc.wait(timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        stop_process(proc)

    assert code == 0, log.read_text()[-2000:]
    assert len(in_flight_at_term) >= WRITERS, (in_flight_at_term, other)
    assert not [o for o in other if o[:1].isdigit()], other  # no error status, only refusals
    events = [e.get("event") for e in read_json_log(log, strict=False)]
    assert "service_stopped" in events
    # Every acknowledged write is in the database, and the pool's connections are gone.
    ids = sorted(acked)
    stored = private_pg.execute("SELECT count(*) FROM tasks WHERE id = ANY(%s)", (ids,), dbname=db)
    assert stored[0][0] == len(ids)
    wait_until(
        lambda: (
            private_pg.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND application_name = 'tasks-api'",
                (db,),
            )[0][0]
            == 0
        ),
        timeout=5,
        what="the pool's connections closed",
    )
