"""/health never touches the database; /ready checks it and the schema, 503 with a reason."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from repositories.migrations import latest_version
from tests.observability.helpers import access_lines
from tests.support import (
    make_token,
    new_user_id,
    read_json_log,
    require,
    running_service,
    service_env,
    wait_until,
)


def test_a_broken_schema_is_a_logged_500_and_ready_says_why(
    empty_database: str, tmp_path: Path
) -> None:
    """Break the running service's database: unexpected errors are logged with the request id
    and the exception while the client sees the contract's message; /ready names the cause."""
    log_path = tmp_path / "service.log"
    user = new_user_id()
    bearer = {"Authorization": f"Bearer {make_token(user)}"}
    with running_service(service_env(empty_database), log_path=log_path) as (base, _):
        ready = httpx.get(f"{base}/ready", timeout=10.0)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "schema_version": latest_version()}

        with psycopg.connect(empty_database, autocommit=True) as conn:
            conn.execute("DROP TABLE tasks")  # a fault no handler knows: unexpected error
        response = httpx.post(
            f"{base}/api/{user}/tasks",
            json={"title": "doomed"},
            headers={**bearer, "X-Request-ID": "log-boom"},
            timeout=10.0,
        )
        assert response.status_code == 500
        assert response.json() == {"status_code": 500, "detail": "Internal server error"}
        assert response.headers["x-request-id"] == "log-boom"
        assert "tasks" not in response.text and "Undefined" not in response.text

        with psycopg.connect(empty_database, autocommit=True) as conn:
            conn.execute("DELETE FROM schema_migrations")
        behind = httpx.get(f"{base}/ready", timeout=10.0)
        assert behind.status_code == 503
        expected = f"Schema version 0, expected {latest_version()}"
        assert behind.json() == {"status_code": 503, "detail": expected}
        with psycopg.connect(empty_database, autocommit=True) as conn:
            conn.execute("DROP TABLE schema_migrations")
        never = httpx.get(f"{base}/ready", timeout=10.0)
        assert never.status_code == 503, never.text
        assert never.json()["detail"] == expected
        assert httpx.get(f"{base}/health", timeout=5.0).json() == {"status": "ok"}

    records = read_json_log(log_path)
    errors = [r for r in records if r.get("level") == "error" and r.get("request_id") == "log-boom"]
    assert len(errors) == 1, errors
    assert errors[0]["event"] == "unhandled_error"
    assert "UndefinedTable" in errors[0]["exception"] and "Traceback" in errors[0]["exception"]
    [access] = [r for r in access_lines(records) if r["request_id"] == "log-boom"]
    assert access["status"] == 500 and access["user_id"] == user
    assert access["route"] == "/api/{user_id}/tasks"


def test_health_stays_up_and_ready_says_why_when_the_database_server_dies(tmp_path: Path) -> None:
    """Our own PostgreSQL (pgserver), stopped under the running service."""
    try:
        import pgserver
    except ImportError:  # pragma: no cover - a dependency of the project
        pgserver = None
    require(pgserver is not None, "the pgserver package is not installed")
    assert pgserver is not None
    log_path = tmp_path / "service.log"
    pgdata = tempfile.mkdtemp(prefix="tasks-api-obs-pg-")
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    stopped = False
    try:
        env = service_env(server.get_uri(), DB_POOL_TIMEOUT="1", DB_CONNECT_TIMEOUT="1")
        with running_service(env, log_path=log_path) as (base, _):
            assert httpx.get(f"{base}/ready", timeout=10.0).status_code == 200
            server.cleanup()  # stop it (and delete its data)
            stopped = True

            started = time.monotonic()
            health = httpx.get(f"{base}/health", timeout=5.0)
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            assert time.monotonic() - started < 1.0

            def not_ready() -> httpx.Response | None:
                response = httpx.get(f"{base}/ready", timeout=10.0)
                return response if response.status_code == 503 else None

            ready = wait_until(not_ready, timeout=15.0, what="/ready 503")
            assert ready.json() == {"status_code": 503, "detail": "Database unavailable"}
            assert ready.headers["retry-after"] == "5"

            user = new_user_id()
            started = time.monotonic()
            api = httpx.get(
                f"{base}/api/{user}/tasks",
                headers={"Authorization": f"Bearer {make_token(user)}", "X-Request-ID": "db-down"},
                timeout=10.0,
            )
            assert time.monotonic() - started < 5.0  # within the pool timeout, never a hang
            assert api.status_code == 500
            assert api.json() == {
                "status_code": 500,
                "detail": "Database unavailable, retry shortly",
            }
            assert api.headers["x-request-id"] == "db-down"
            # /health still answers while every database call fails.
            assert httpx.get(f"{base}/health", timeout=5.0).status_code == 200
    finally:
        if not stopped:
            server.cleanup()

    records = read_json_log(log_path)  # the psycopg lines included: every line is JSON
    [error] = [r for r in records if r.get("event") == "database_unavailable"
               and r.get("request_id") == "db-down"]  # fmt: skip
    assert error["level"] == "error"
    [access] = [r for r in access_lines(records) if r["request_id"] == "db-down"]
    assert access["status"] == 500 and access["user_id"] == user
    driver = [r for r in records if str(r.get("logger", "")).startswith("psycopg")]
    assert driver, "the pool's own warnings come out in the same JSON stream"
    assert all(r["level"] in ("warning", "error") and "timestamp" in r for r in driver)
    health_lines = [r for r in access_lines(records) if r["route"] == "/health"]
    assert len(health_lines) == 2 and all(r["status"] == 200 for r in health_lines)
