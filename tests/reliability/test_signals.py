"""SIGTERM/SIGINT at every phase (issue 17.2), the drain (issue 15) and migrations once per serve.

Real `tasks-api` processes on loopback against the session's PostgreSQL. Exit status rules:
README "Stopping: signals, drain and exit status".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from repositories.migrations import latest_version
from tests.reliability.service import spawn_service
from tests.support import (
    ROOT,
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

PROMPT = 1.0  # seconds: issue 17.2, "SIGTERM and SIGINT stop the process promptly (<= 1 s)"


def _unreachable_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/tasks"  # nothing listens there


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    return [e for e in read_json_log(log, strict=False) if e.get("event") == name]


def _stop_and_time(proc: subprocess.Popen[Any], sig: int, *, pid: int | None = None) -> float:
    started = time.monotonic()
    os.kill(pid or proc.pid, sig)
    proc.wait(timeout=30)
    return time.monotonic() - started


def _cli(args: tuple[str, ...], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_the_database_wait_stops_at_once(tmp_path: Path, sig: int) -> None:
    log = tmp_path / "service.log"
    env = service_env(_unreachable_url(), DB_STARTUP_TIMEOUT="60")
    proc = spawn_service(env, port=free_port(), log_path=log)
    try:
        wait_until(lambda: _events(log, "database_waiting"), timeout=60, what="database wait")
        took = _stop_and_time(proc, sig)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert took <= PROMPT, took
    assert _events(log, "stopped_before_serving")


@contextlib.contextmanager
def _migrations_held(admin_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An uncommitted CREATE TABLE schema_migrations: a migration blocks on it until rollback."""
    with psycopg.connect(admin_url) as barrier:
        barrier.execute("CREATE TABLE schema_migrations (version integer)")
        yield barrier
        barrier.rollback()


def _waiting_on_a_lock(admin_url: str) -> bool:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone()
    return bool(row and row[0] >= 1)


@pytest.mark.parametrize(
    ("command", "status"),
    [(("serve", "--host", "127.0.0.1", "--port", "0"), 0), (("migrate",), 128 + 15)],
    ids=["serve", "migrate"],
)
def test_sigterm_during_migrations_stops_at_once_and_applies_nothing(
    empty_database: str, tmp_path: Path, command: tuple[str, ...], status: int
) -> None:
    log = tmp_path / "cli.log"
    with _migrations_held(empty_database):
        proc = _cli(command, service_env(empty_database), log)
        try:
            wait_until(
                lambda: _waiting_on_a_lock(empty_database), timeout=60, what="migration blocked"
            )
            took = _stop_and_time(proc, signal.SIGTERM)
        finally:
            stop_process(proc)
    # `migrate` stopped half-way must not look done to a Kubernetes Job: 128 + SIGTERM.
    assert proc.returncode == status, log.read_text()[-2000:]
    assert took <= PROMPT, took
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)


@contextlib.contextmanager
def _serving(
    database_url: str, tmp_path: Path, *, workers: int = 1, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    log = tmp_path / "service.log"
    args = ("--workers", str(workers)) if workers > 1 else ()
    proc = spawn_service(service_env(database_url, **env), port=port, log_path=log, args=args)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/ready", timeout=90, proc=proc)
        if workers > 1:  # every worker up, not only the first
            wait_until(
                lambda: len({e["pid"] for e in _events(log, "service_ready")}) >= workers,
                timeout=90,
                what="all workers ready",
            )
        yield base, proc, log
    finally:
        stop_process(proc)


def _pool_backends(database_url: str) -> set[int]:
    """The server pids of every `tasks-api` connection to this database (the session's
    in-process app fixture has some too: compare sets, not counts)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'tasks-api'"
        ).fetchall()
    return {int(row[0]) for row in rows}


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "workers-2"])
def test_sigterm_drains_then_exits_zero(database_url: str, tmp_path: Path, workers: int) -> None:
    drain = 3.0
    others = _pool_backends(database_url)  # e.g. the session's in-process app
    with _serving(database_url, tmp_path, workers=workers, SHUTDOWN_DRAIN_SECONDS=str(drain)) as (
        base,
        proc,
        log,
    ):
        user = new_user_id()
        created: list[int] = []
        with httpx.Client(base_url=base, timeout=10) as client:
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            # /ready says 503 at once, so that a balancer takes the instance out...
            ready = wait_until(
                lambda: client.get("/ready").status_code == 503, timeout=PROMPT, what="503"
            )
            assert ready
            # ...while requests are still served for the whole drain.
            while time.monotonic() - sent < drain - 0.7:
                r = client.post(f"/api/{user}/tasks", json={"title": "x"}, headers=auth(user))
                assert r.status_code == 201, r.text
                created.append(r.json()["id"])
                time.sleep(0.2)
            assert proc.poll() is None, "stopped before the drain was over"
        proc.wait(timeout=30)
        took = time.monotonic() - sent
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert drain <= took <= drain + 10, took
    assert len(created) >= 5
    assert len(_events(log, "drain_finished")) == workers
    assert len(_events(log, "service_stopped")) == workers  # lifespan shutdown: pool closed
    # The process has exited, so its sockets are closed; the server may take a moment to end
    # the backends it sees closed (a race seen under load), never longer than that.
    wait_until(lambda: _pool_backends(database_url) <= others, timeout=5, what="its backends gone")


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "workers-2"])
def test_the_same_signal_again_during_the_drain_stops_at_once(
    database_url: str, tmp_path: Path, workers: int
) -> None:
    with _serving(database_url, tmp_path, workers=workers, SHUTDOWN_DRAIN_SECONDS="60") as (
        base,
        proc,
        log,
    ):
        proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: httpx.get(f"{base}/ready").status_code == 503, timeout=PROMPT, what="503"
        )
        time.sleep(0.6)  # the supervisor polls its signal queue every 0.5 s
        took = _stop_and_time(proc, signal.SIGTERM)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert took <= PROMPT + (1.0 if workers > 1 else 0.0), took
    assert len(_events(log, "shutdown_forced")) == workers


def test_without_a_drain_sigterm_while_serving_stops_at_once(
    database_url: str, tmp_path: Path
) -> None:
    with _serving(database_url, tmp_path, SHUTDOWN_DRAIN_SECONDS="0") as (_, proc, log):
        took = _stop_and_time(proc, signal.SIGTERM)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert took <= PROMPT, took


def test_the_stop_handler_is_installed_before_the_slow_imports() -> None:
    """As PID 1 a signal arriving before a handler exists is dropped: the first import of the
    CLI is the one that installs it (api/early_signals.py)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import api.cli"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    order = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    first = order.index("api.early_signals")
    for heavy in ("uvicorn", "psycopg", "fastapi", "pydantic", "structlog"):
        assert heavy not in order or order.index(heavy) > first, heavy


# --- as PID 1 (a container's init): a signal without a handler is ignored by the kernel ---


def _pid1_service(
    env: dict[str, str], log: Path, *args: str
) -> tuple[subprocess.Popen[bytes], int]:
    """`tasks-api serve` as PID 1 of a new PID namespace; returns (unshare, its child's pid)."""
    require(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
             sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    child = wait_until(
        lambda: children.exists() and children.read_text().split(), timeout=10, what="child"
    )
    pid = int(child[0])
    nspid = next(
        line
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("NSpid:")
    )
    assert nspid.split()[-1] == "1", nspid  # PID 1 inside its namespace
    return proc, pid


def test_as_pid_1_sigterm_during_the_database_wait_stops_at_once(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    env = service_env(_unreachable_url(), DB_STARTUP_TIMEOUT="60")
    proc, pid = _pid1_service(env, log, "--port", str(free_port()))
    try:
        wait_until(lambda: _events(log, "database_waiting"), timeout=60, what="database wait")
        took = _stop_and_time(proc, signal.SIGTERM, pid=pid)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert took <= PROMPT, took


def test_as_pid_1_sigterm_right_after_start_is_not_lost(tmp_path: Path) -> None:
    """Sent while the modules are still importing (seconds on a busy host)."""
    log = tmp_path / "service.log"
    env = service_env(_unreachable_url(), DB_STARTUP_TIMEOUT="60")
    proc, pid = _pid1_service(env, log, "--port", str(free_port()))
    try:
        # Once the early handler is there (bit 15 of SigCgt), and long before the CLI runs.
        def caught() -> bool:
            line = next(
                x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if "SigCgt" in x
            )
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))

        wait_until(caught, timeout=30, interval=0.01, what="a SIGTERM handler")
        # The handler came before the slow imports (pydantic's compiled core, for one).
        loaded_before = "pydantic_core" in Path(f"/proc/{pid}/maps").read_text()
        took = _stop_and_time(proc, signal.SIGTERM, pid=pid)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert took <= 10, took  # the imports finish, then it stops; never the 60 s wait
    assert not _events(log, "database_waiting"), "went on to start after SIGTERM"
    assert not loaded_before, "no handler until the imports were done: a signal then is lost"


def test_as_pid_1_sigterm_while_serving_stops(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    port = free_port()
    env = service_env(database_url, SHUTDOWN_DRAIN_SECONDS="0")
    proc, pid = _pid1_service(env, log, "--port", str(port))
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", timeout=90, proc=proc)
        took = _stop_and_time(proc, signal.SIGTERM, pid=pid)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert took <= PROMPT, took


# --- migrations once per deploy ---


def test_serve_with_workers_migrates_once_not_per_worker(
    empty_database: str, tmp_path: Path
) -> None:
    with _serving(empty_database, tmp_path, workers=2) as (base, _, log):
        assert httpx.get(f"{base}/ready").json()["schema_version"] == latest_version()
        checks = _events(log, "schema_checked")
        workers = {e["pid"] for e in _events(log, "service_ready")}
    assert len(checks) == 1, checks  # the supervisor, before any worker
    assert checks[0]["pid"] not in workers


def test_no_migrate_serves_503_with_the_reason_until_migrate_has_run(
    empty_database: str, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "service.log"
    proc = spawn_service(
        service_env(empty_database, MIGRATE_ON_START="false"),
        port=port,
        log_path=log,
        args=("--workers", "2"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", timeout=90, proc=proc)
        wait_until(
            lambda: len({e["pid"] for e in _events(log, "service_ready")}) >= 2,
            timeout=90,
            what="both workers up",
        )
        ready = httpx.get(f"{base}/ready")
        assert ready.status_code == 503
        assert ready.json()["detail"] == f"Schema version 0, expected {latest_version()}"
        with psycopg.connect(empty_database) as conn:
            assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
        migrate = _cli(("migrate",), service_env(empty_database), tmp_path / "migrate.log")
        assert migrate.wait(timeout=90) == 0, (tmp_path / "migrate.log").read_text()
        wait_until(lambda: httpx.get(f"{base}/ready").status_code == 200, timeout=10, what="ok")
    finally:
        stop_process(proc)


def test_no_migrate_flag_is_the_same_as_the_variable(empty_database: str, tmp_path: Path) -> None:
    port = free_port()
    proc = spawn_service(
        service_env(empty_database), port=port, log_path=tmp_path / "s.log", args=("--no-migrate",)
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=90, proc=proc)
        ready = httpx.get(f"http://127.0.0.1:{port}/ready")
        assert ready.status_code == 503 and "Schema version 0" in ready.json()["detail"]
    finally:
        stop_process(proc)
