"""Real `tasks-api serve` processes on loopback for the HTTP edge suites."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support import SECRET, running_service


def serve_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "NEON_DB_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "4",
        "DB_POOL_TIMEOUT": "3",
        "DB_STARTUP_TIMEOUT": "30",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def service(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server with the default HTTP limits, except a 2 s keep-alive timeout."""
    log = tmp_path_factory.mktemp("http-edges") / "serve.log"
    env = serve_env(database_url, HTTP_KEEP_ALIVE_TIMEOUT_SECONDS="2")
    with running_service(env, log_path=log) as (base, _proc):
        yield base


def host_port(base: str) -> tuple[str, int]:
    host, _, port = base.removeprefix("http://").partition(":")
    return host, int(port)


def read_until_closed(sock: socket.socket, *, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or `timeout` passes (False)."""
    sock.settimeout(0.5)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


@contextlib.contextmanager
def connection(base: str) -> Iterator[socket.socket]:
    sock = socket.create_connection(host_port(base), timeout=5)
    try:
        yield sock
    finally:
        sock.close()


def raw_request(
    base: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, read to the server's close: what was really sent
    back (status, headers with lower-case names, the exact body bytes)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_port(base)[0]}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    with connection(base) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data, closed = read_until_closed(sock, timeout=10)
    assert closed, f"{method} {path}: the server kept the connection open"
    return parse_response(data)


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP/1.1 response: (status, headers with lower-case names, the bytes after the
    head)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, rest


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (all of this service's), read from
    `reader`: a client light enough that 200 of them at once measure the server, not httpx."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body
