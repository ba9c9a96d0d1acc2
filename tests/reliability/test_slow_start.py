"""Start-up before the database: Neon computes take seconds to wake, containers race."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.reliability.pg import can_run_servers, port_open, private_postgres
from tests.reliability.service import log_events, service_env, spawn_service, stop_process
from tests.support import ROOT, auth, free_port, new_user_id, require, wait_http


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
            waits = [e for e in log_events(log) if e.get("event") == "database_waiting"]
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
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", "1"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tasks-api: database not reachable after 3s:"), last
    assert "refused" in last.lower(), last
    assert "Traceback" not in done.stderr
    assert 3.0 <= elapsed < 30, elapsed
