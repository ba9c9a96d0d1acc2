"""Contract, "HTTP semantics": under overload a request is refused early with 503 and
`Retry-After`, never answered late with a 500; probes stay answerable; a connection over
HTTP_MAX_CONNECTIONS is refused the same way. Against a real `tasks-api serve`."""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.http_edges.conftest import (
    connection,
    host_port,
    read_response,
    read_until_closed,
    serve_env,
)
from tests.support import auth, new_user_id, running_service

POOL_TIMEOUT = 1.0
MAX_CONNECTIONS = 300


@pytest.fixture(scope="module")
def small_service(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("overload") / "serve.log"
    env = serve_env(
        database_url,
        DB_POOL_MIN="2",
        DB_POOL_MAX="2",
        DB_POOL_TIMEOUT=str(POOL_TIMEOUT),
        HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    with running_service(env, log_path=log) as (base, _proc):
        yield base


def _user_with_many_tasks(database_url: str, count: int) -> str:
    """A user whose last page by title is slow: PostgreSQL sorts all `count` tasks (about
    0.1 s for 20,000) to return one, so the pool, not the client, is the bottleneck."""
    user = new_user_id()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id) VALUES (%s)", (user,))
        conn.execute(
            "INSERT INTO tasks (user_id, title, description)"
            " SELECT %s, md5(n::text), NULL FROM generate_series(1, %s) AS n",
            (user, count),
        )
    return user


async def test_overload_is_refused_early_with_503_and_retry_after(
    small_service: str, database_url: str
) -> None:
    """200 concurrent slow lists with DB_POOL_MAX=2, DB_POOL_TIMEOUT=1: every answer within
    DB_POOL_TIMEOUT + 1 s, each a 200 or a 503 envelope with Retry-After, never a 500."""
    count = 20_000
    user = _user_with_many_tasks(database_url, count)
    slow_list = f"/api/{user}/tasks?sort=title&limit=1&offset={count - 1}"
    request = (
        f"GET {slow_list} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {auth(user)['Authorization']}\r\n\r\n"
    ).encode()
    host, port = host_port(small_service)
    connections = [await asyncio.open_connection(host, port) for _ in range(200)]
    reader, writer = connections[0]
    writer.write(request)
    assert (await read_response(reader))[0] == 200  # warm: the plan is cached, the pool full

    async def one(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, dict[str, str], bytes, float]:
        started = time.monotonic()
        writer.write(request)
        status, headers, body = await read_response(reader)
        return status, headers, body, time.monotonic() - started

    async def probe() -> float:
        await asyncio.sleep(0.3)
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=small_service) as client:
            assert (await client.get("/health")).status_code == 200
        return time.monotonic() - started

    try:
        *answers, probe_seconds = await asyncio.gather(
            *(one(r, w) for r, w in connections), probe()
        )
    finally:
        for _, w in connections:
            w.close()
    statuses = collections.Counter(a[0] for a in answers)
    slowest = {s: max(a[3] for a in answers if a[0] == s) for s in statuses}
    assert set(statuses) <= {200, 503}, statuses
    assert max(slowest.values()) <= POOL_TIMEOUT + 1.0, (slowest, statuses)
    assert statuses[200] and statuses[503], statuses
    for status, headers, body, _ in answers:
        if status == 503:
            assert int(headers["retry-after"]) >= 1
            assert json.loads(body) == {
                "status_code": 503,
                "detail": "Service overloaded, retry shortly",
            }
    assert probe_seconds < 1.0, probe_seconds


def test_a_connection_over_the_limit_is_refused_with_503(small_service: str) -> None:
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):
            held.append(socket.create_connection(host_port(small_service), timeout=5))
        time.sleep(0.5)
        with connection(small_service) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data, closed = read_until_closed(extra, timeout=5)
        assert closed and data.startswith(b"HTTP/1.1 503"), data[:200]
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"retry-after: " in head.lower()
        assert json.loads(body)["status_code"] == 503
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    assert httpx.get(f"{small_service}/health").status_code == 200
