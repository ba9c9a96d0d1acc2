"""Start-up before the database: Neon computes take seconds to wake, containers race."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.reliability.pg import can_run_servers, pg16_bin, port_open, private_postgres
from tests.reliability.service import serve_until_exit, spawn_service
from tests.support import (
    auth,
    free_port,
    new_user_id,
    read_json_log,
    require,
    service_env,
    stop_process,
    wait_http,
    wait_until,
)


def _waits(log: Path) -> list[dict[str, Any]]:
    return [e for e in read_json_log(log, strict=False) if e.get("event") == "database_waiting"]


def test_waits_with_backoff_and_serves_once_the_database_arrives(tmp_path: Path) -> None:
    ok, why = can_run_servers()
    require(ok, why)
    with private_postgres(start=False) as pg:
        log = tmp_path / "service.log"
        port = free_port()
        started = time.monotonic()
        proc = spawn_service(
            service_env(pg.url(), DB_STARTUP_TIMEOUT="30"), port=port, log_path=log
        )
        try:
            time.sleep(4.0)
            assert proc.poll() is None, log.read_text()
            assert not port_open(port), "serving before the database is there"
            waits = _waits(log)
            assert len(waits) >= 2, log.read_text()
            delays = [float(e["retry_in"]) for e in waits]
            assert delays == sorted(delays) and delays[-1] > delays[0], delays  # backoff
            assert "refused" in str(waits[0]["error"]).lower()

            pg.start()
            wait_http(f"http://127.0.0.1:{port}/ready", timeout=30, proc=proc)
            assert time.monotonic() - started < 30 + 5
            user = new_user_id()
            created = httpx.post(
                f"http://127.0.0.1:{port}/api/{user}/tasks",
                json={"title": "late database"},
                headers=auth(user),
                timeout=10,
            )
            assert created.status_code == 201
        finally:
            stop_process(proc)


def test_gives_up_after_the_startup_budget_naming_the_cause(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = service_env(f"postgresql://postgres@127.0.0.1:{port}/tasks", DB_STARTUP_TIMEOUT="3")
    code, stderr, elapsed = serve_until_exit(env)
    assert code == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("tasks-api: database not reachable after 3s:"), last
    assert "refused" in last.lower(), last
    assert "Traceback" not in stderr
    assert 3.0 <= elapsed < 30, elapsed


def test_connection_slots_exhausted_at_start_is_waited_out(tmp_path: Path) -> None:
    """A full server is transient, not a misconfiguration: wait for a slot, don't exit 2.

    PostgreSQL 16+ (what Neon runs) says "remaining connection slots are reserved for roles
    with the SUPERUSER attribute"; the word "role" must not make that look permanent.
    """
    ok, why = can_run_servers()
    require(ok, why)
    bin16 = pg16_bin()
    require(bin16 is not None, "PostgreSQL 16 binaries of the pgserver package not found")
    settings = {"max_connections": "8", "superuser_reserved_connections": "3"}
    with private_postgres(bin_dir=bin16, settings=settings) as pg:
        pg.execute("CREATE ROLE app LOGIN")
        pg.execute("CREATE DATABASE slots OWNER app")
        url = pg.url("slots", user="app")
        held = []
        try:
            while len(held) < 10:
                try:
                    held.append(psycopg.connect(url, connect_timeout=3))
                except psycopg.OperationalError as exc:
                    assert "reserved" in str(exc), exc
                    break
            assert len(held) == 5
            log = tmp_path / "service.log"
            port = free_port()
            env = service_env(url, DB_STARTUP_TIMEOUT="30", DB_POOL_MIN="1", DB_POOL_MAX="2")
            proc = spawn_service(env, port=port, log_path=log)
            try:
                wait_until(
                    lambda: bool(_waits(log)) or proc.poll() is not None,
                    timeout=30,
                    what="the first failed attempt",
                )
                time.sleep(1.0)
                assert proc.poll() is None, log.read_text()[-1500:]
                waits = _waits(log)
                assert "reserved" in str(waits[0]["error"])
                for conn in held:
                    conn.close()
                held.clear()
                wait_http(f"http://127.0.0.1:{port}/ready", timeout=30, proc=proc)
            finally:
                stop_process(proc)
        finally:
            for conn in held:
                conn.close()
