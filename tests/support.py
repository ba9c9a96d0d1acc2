"""Helpers shared by the test suites: tokens, REQUIRE_ALL-aware skips, the service's environment.

Databases, processes, waits and log reading come from loadtest/services.py, the one module the
test suites and the load tests share (loadtest never imports from tests/)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest

from loadtest import services
from loadtest.services import (
    create_database,
    drop_database,
    free_port,
    read_json_log,
    running_service,
    stop_process,
    wait_http,
    wait_until,
    with_database,
)

__all__ = [
    "REQUIRE_ALL",
    "ROOT",
    "SECRET",
    "auth",
    "create_database",
    "drop_database",
    "free_port",
    "make_token",
    "new_user_id",
    "read_json_log",
    "require",
    "run_python",
    "running_service",
    "service_env",
    "stop_process",
    "wait_http",
    "wait_until",
    "with_database",
]

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-" + "0123456789abcdef" * 4  # 75 bytes: long enough for HS512
REQUIRE_ALL = os.environ.get("REQUIRE_ALL") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip when a real component is missing, except under REQUIRE_ALL=1 (CI), where it fails."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"REQUIRE_ALL=1 but a required component is missing: {reason}")
    pytest.skip(reason)


def make_token(
    sub: Any = "user-1",
    *,
    secret: str = SECRET,
    algorithm: str = "HS256",
    ttl: int = 600,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + ttl, **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


def auth(sub: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(sub, **kwargs)}"}


def new_user_id() -> str:
    return f"user-{uuid.uuid4().hex[:16]}"


def service_env(database_url: str, **overrides: str) -> dict[str, str]:
    """The environment of `tasks-api serve` on `database_url` with the tests' secret, JSON logs,
    the default pool sizes and short timeouts (seconds); `overrides` win."""
    defaults = {
        "DB_POOL_MIN": "2",
        "DB_POOL_MAX": "10",
        "DB_POOL_TIMEOUT": "3",
        "DB_CONNECT_TIMEOUT": "3",
        "DB_STARTUP_TIMEOUT": "30",
        "DB_PREPARED_STATEMENTS": "auto",
    }
    return services.service_env(database_url, SECRET, **(defaults | overrides))


def run_python(
    program: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`program` run by this interpreter in a child process from the project root, with
    `args` as sys.argv[1:] (text output captured, 60 s at most, the exit status unchecked)."""
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
