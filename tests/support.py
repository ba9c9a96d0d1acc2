"""Helpers shared by the test suites: tokens, databases, REQUIRE_ALL-aware skips, servers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import psycopg
import pytest

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


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointed at another database (works for URLs and pgserver URIs)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def create_database(server_url: str, prefix: str = "tasks_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return with_database(server_url, name)


def drop_database(server_url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str, *, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def wait_until(
    probe: Callable[[], Any], *, timeout: float, interval: float = 0.25, what: str = "condition"
) -> Any:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def stop_process(proc: subprocess.Popen[Any], *, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_service(
    env: dict[str, str],
    *,
    args: tuple[str, ...] = (),
    port: int | None = None,
    log_path: Path | None = None,
    ready_path: str = "/ready",
    timeout: float = 60.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`tasks-api serve` as a user runs it, on loopback; stopped (SIGTERM, then kill) after."""
    port = port or free_port()
    full_env = {**os.environ, "LOG_FORMAT": "json", **env}
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        cwd=ROOT,
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + ready_path, timeout=timeout, proc=proc)
        yield base, proc
    finally:
        stop_process(proc)
        if log_path:
            out.close()  # type: ignore[union-attr]
