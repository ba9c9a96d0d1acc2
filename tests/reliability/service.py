"""Running `tasks-api serve` against a given database, and reading what it logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support import ROOT, SECRET, stop_process, wait_until

__all__ = ["serve_until_exit", "service_env", "spawn_service", "stop_process"]


def service_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "NEON_DB_URL": database_url,
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "DB_POOL_MIN": "2",
        "DB_POOL_MAX": "10",
        "DB_POOL_TIMEOUT": "3",
        "DB_CONNECT_TIMEOUT": "3",
        "DB_STARTUP_TIMEOUT": "30",
        "DB_PREPARED_STATEMENTS": "auto",
    }
    env.update(overrides)
    return env


def spawn_service(
    env: dict[str, str], *, port: int, log_path: Path, args: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """`tasks-api serve` in the background; the caller stops it (see `stop_process`)."""
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def serve_until_exit(env: dict[str, str]) -> tuple[int, str, float]:
    """Run `tasks-api serve` expecting it to give up at start-up: (status, stderr, seconds)."""
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
    return done.returncode, done.stderr, time.monotonic() - started


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines the service wrote (other lines are skipped)."""
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def wait_for(predicate: Any, *, timeout: float, interval: float = 0.1, what: str = "") -> Any:
    return wait_until(predicate, timeout=timeout, interval=interval, what=what or "condition")
