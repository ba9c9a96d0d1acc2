"""Starting and stopping what the load tests and the test suites run: databases and servers.

One module for both: `tests/` imports it (tests/support.py re-exports what the suites use), and
`loadtest/` never imports from `tests/`. Everything here talks to loopback only, stops what it
started by PID (or by the session it started), and bounds every wait with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent


# --- databases --------------------------------------------------------------------------------


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointed at another database (works for URLs and pgserver URIs)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(dbname, safe="")))


def database_name(database_url: str) -> str:
    """The database a URL names (percent-decoded, as libpq reads it)."""
    return unquote(urlsplit(database_url).path.lstrip("/"))


def create_database(server_url: str, prefix: str = "tasks_test") -> str:
    """CREATE DATABASE `<prefix>_<random>` on the server of `server_url`; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(server_url: str, database_url: str) -> None:
    """DROP DATABASE … WITH (FORCE): sessions still connected to it are ended, not waited for."""
    name = database_name(database_url)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str = "loadtest") -> Iterator[str]:
    """A new database on the server, dropped afterwards (also on an exception or Ctrl-C)."""
    url = create_database(server_url, prefix)
    try:
        yield url
    finally:
        drop_database(server_url, url)


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    probe: Callable[[], Any], *, timeout: float, interval: float = 0.25, what: str = "condition"
) -> Any:
    """Call `probe` until it returns something truthy and return that; AssertionError after
    `timeout` seconds (naming `what` and the last value)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def wait_http(
    url: str,
    *,
    timeout: float = 30.0,
    proc: subprocess.Popen[Any] | None = None,
    accept: Callable[[int], bool] = lambda status: status < 500,
) -> None:
    """Poll `url` until its status passes `accept`. RuntimeError if `proc` exits first,
    TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if accept(httpx.get(url, timeout=1.0).status_code):
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def spawn(
    cmd: list[str],
    *,
    env: dict[str, str],
    log: IO[bytes] | int = subprocess.DEVNULL,
    nice: int = 0,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """A child in a session of its own (so `stop_process` can take its workers too), its
    output (stdout and stderr) to `log`; `nice` > 0 lowers its priority."""

    def lower_priority() -> None:
        os.nice(nice)

    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lower_priority if nice else None,
    )


def stop_process(proc: subprocess.Popen[Any], *, timeout: float = 30.0) -> None:
    """SIGTERM, then after `timeout` seconds SIGKILL (to its whole session when `spawn` made
    one, so its workers go too)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) == proc.pid:  # its own session: ours, made by spawn()
                os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


# --- the service --------------------------------------------------------------------------------


def service_env(database_url: str, secret: str, **overrides: str) -> dict[str, str]:
    """The environment of `tasks-api serve` on `database_url`, JSON logs, `overrides` last."""
    return {
        "NEON_DB_URL": database_url,
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": secret,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **overrides,
    }


def serve_command(port: int, *args: str) -> list[str]:
    """`tasks-api serve` on 127.0.0.1:`port`, as a user runs it."""
    return [
        sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        *args,
    ]  # fmt: skip


@contextlib.contextmanager
def running_service(
    env: dict[str, str],
    *,
    args: tuple[str, ...] = (),
    port: int | None = None,
    log_path: Path | None = None,
    ready_path: str = "/ready",
    timeout: float = 60.0,
    command: list[str] | None = None,
    nice: int = 0,
    cwd: Path = ROOT,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`tasks-api serve` (or `command`, which must listen on `port`) on loopback until the
    block ends; yields (base URL, process). Ready means `ready_path` answered below 500 within
    `timeout` seconds; stopped with SIGTERM, then SIGKILL. `cwd`: the checkout it runs from."""
    port = port or free_port()
    full_env = {**os.environ, "LOG_FORMAT": "json", **env}
    out: IO[bytes] | int = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = spawn(command or serve_command(port, *args), env=full_env, log=out, nice=nice, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + ready_path, timeout=timeout, proc=proc)
        yield base, proc
    finally:
        stop_process(proc)
        if not isinstance(out, int):
            out.close()


# --- logs ---------------------------------------------------------------------------------------


def read_json_log(path: Path, *, strict: bool = True) -> list[dict[str, Any]]:
    """The JSON objects of a server's captured output, one a line. `strict`: every non-empty
    line must be one (AssertionError naming the line otherwise); else other lines are skipped."""
    records: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if strict:
                raise AssertionError(f"log line {number + 1} is not JSON: {line!r}") from exc
            continue
        if not isinstance(record, dict):
            if strict:
                raise AssertionError(f"log line {number + 1} is not an object: {line!r}")
            continue
        records.append(record)
    return records


# --- the service as the load tests configure it -------------------------------------------------


@dataclass
class ServerConfig:
    """How to start the service: `tasks-api serve` (cli) or uvicorn directly with a loop/http."""

    server: str = "cli"
    workers: int = 1
    loop: str = "uvloop"
    http: str = "httptools"
    env: dict[str, str] = field(default_factory=dict)
    nice: int = 0  # < 0 shields the service from other work on a shared machine (root only)

    def command(self, port: int) -> list[str]:
        if self.server == "cli":
            return serve_command(port, "--workers", str(self.workers))
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(self.workers),
            "--loop",
            self.loop,
            "--http",
            self.http,
            "--no-access-log",
            "--timeout-keep-alive",
            "5",
        ]


@contextlib.contextmanager
def running_server(
    config: ServerConfig, database_url: str, secret: str, log_path: Path
) -> Iterator[tuple[str, int]]:
    """The service as `config` says, on `database_url`; yields (base URL, PID)."""
    port = free_port()
    env = service_env(database_url, secret, **config.env)
    env.pop("NEON_DB_URL")  # DATABASE_URL alone, as the load tests always passed it
    with running_service(
        env, port=port, command=config.command(port), log_path=log_path, nice=config.nice
    ) as (base, proc):
        yield base, proc.pid
