"""The capacity comparison's arithmetic and the helpers it shares with the test suites.

The comparison itself runs in CI as scripts/ci/check-capacity.sh (a 2-second smoke); these
pin what its numbers mean, without timing anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from loadtest.capacity import Measurement, WrkResult, cpu_seconds, postmaster_pid, table
from loadtest.services import create_database, database_name, drop_database


def measurement(
    system: str, requests: int, cpu: float, errors: int = 0, db_cpu: float | None = None
) -> Measurement:
    return Measurement(
        system=system,
        endpoint="list",
        connections=10,
        wrk=WrkResult(requests=requests, seconds=10.0, errors=errors, p50_ms=5.0, p99_ms=9.0),
        cpu_seconds=cpu,
        xact_before=0,
        xact_per_request=1.0,
        db_cpu_seconds=db_cpu,
    )


def test_ratios_are_service_over_ceiling() -> None:
    # service: 400 req/s at 2 ms CPU each; ceiling: 800 req/s at 1 ms.
    rows = table([measurement("service", 4000, 8.0), measurement("ceiling", 8000, 8.0)], 1, 10)
    assert "| list | 10 | service | 400 (400..400) | 2.00 (2.00..2.00) | - |" in rows
    assert "| list | 10 | ceiling | 800 (800..800) | 1.00 (1.00..1.00) | - |" in rows
    assert "| list | 10 | 0.50 | 2.00 |" in rows


def test_postgresql_cpu_is_per_request_too() -> None:
    # 4000 requests and 2 s of the server's CPU: 0.50 ms each.
    rows = table([measurement("service", 4000, 8.0, db_cpu=2.0)], 1, 10)
    assert (
        "| list | 10 | service | 400 (400..400) | 2.00 (2.00..2.00) | 0.50 (0.50..0.50) |" in rows
    )


def test_the_postmaster_of_the_local_server_is_found(pg_server_url: str) -> None:
    """The test server runs on this machine: its postmaster is a live process whose children
    include the backend serving this connection."""
    pid = postmaster_pid(pg_server_url)
    assert pid is not None
    with psycopg.connect(pg_server_url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        stat = Path(f"/proc/{row[0]}/stat").read_text()
    assert int(stat[stat.rindex(")") + 2 :].split()[1]) == pid  # the backend's parent


def test_medians_with_spread_over_runs() -> None:
    runs = [measurement("service", n, 1.0) for n in (1000, 3000, 2000)]
    assert "| list | 10 | service | 200 (100..300) |" in table(runs, 3, 10)


def test_a_measurement_with_any_error_is_invalid() -> None:
    assert measurement("service", 100, 0.1).valid
    assert not measurement("service", 100, 0.1, errors=1).valid
    assert not measurement("service", 0, 0.0).valid


def test_cpu_seconds_count_the_children_too() -> None:
    busy = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    before = cpu_seconds(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", busy + "\ntime.sleep(5)"])
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds(os.getpid()) - before < 0.4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cpu_seconds(os.getpid()) - before >= 0.4
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("prefix", ["plain", 'odd"name', "Mixed Case"])
def test_fresh_databases_take_any_name(pg_server_url: str, prefix: str) -> None:
    """Names are quoted as identifiers (psycopg.sql.Identifier), never pasted into SQL."""
    url = create_database(pg_server_url, prefix)
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None and row[0] == database_name(url)
        assert row[0].startswith(prefix + "_")
    finally:
        drop_database(pg_server_url, url)
    with psycopg.connect(pg_server_url) as conn:
        gone = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (database_name(url),)
        ).fetchone()
    assert gone == (0,)
