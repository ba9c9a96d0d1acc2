"""The error envelope everywhere, no leaks, request ids, CORS, health, and a flood of bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from tests.support import auth

LEAK = re.compile(
    r"Traceback|File \"|psycopg|sqlalchemy|SELECT |INSERT |UPDATE |DELETE FROM|Exception|Error\b",
)


def _envelope(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, object] = response.json()
    assert body["status_code"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    assert not LEAK.search(response.text), response.text
    assert response.headers.get("x-request-id")
    return body


async def test_unknown_route_is_404_envelope(client: httpx.AsyncClient) -> None:
    body = _envelope(await client.get("/nope"), 404)
    assert body == {"status_code": 404, "detail": "Not Found"}


async def test_wrong_method_is_405_envelope(client: httpx.AsyncClient, user_id: str) -> None:
    response = await client.request("PATCH", f"/api/{user_id}/tasks", headers=auth(user_id))
    assert _envelope(response, 405) == {"status_code": 405, "detail": "Method Not Allowed"}
    # Allow lists every method of the path (all its routes), HEAD wherever GET is.
    assert response.headers["allow"] == "GET, HEAD, POST"
    # 405 comes before 401: a path's methods are a routing fact, public in OpenAPI.
    assert (await client.request("PATCH", f"/api/{user_id}/tasks")).status_code == 405
    response = await client.post("/health")
    _envelope(response, 405)
    assert response.headers["allow"] == "GET, HEAD"


async def test_422_has_detail_string_and_errors_list(
    client: httpx.AsyncClient, user_id: str
) -> None:
    response = await client.post(f"/api/{user_id}/tasks", json={"title": ""}, headers=auth(user_id))
    body = _envelope(response, 422)
    assert body["errors"] == [
        {
            "loc": ["body", "title"],
            "msg": "title must not be empty or only white space",
            "type": "value_error",
        }
    ]
    assert "title" in str(body["detail"])


async def test_422_never_echoes_the_input(client: httpx.AsyncClient, user_id: str) -> None:
    secret_value = "S3CR3T-" + "x" * 300
    response = await client.post(
        f"/api/{user_id}/tasks", json={"title": secret_value}, headers=auth(user_id)
    )
    assert response.status_code == 422
    assert "S3CR3T" not in response.text


async def test_every_response_carries_a_request_id_and_a_sane_one_is_echoed(
    client: httpx.AsyncClient, user_id: str
) -> None:
    for path, headers in (
        ("/health", {}),
        ("/api/x/tasks", {}),
        (f"/api/{user_id}/tasks", auth(user_id)),
    ):
        response = await client.get(path, headers={**headers, "X-Request-ID": "req-123.abc:7"})
        assert response.headers["x-request-id"] == "req-123.abc:7"
    for insane in ("has space", "x" * 200, "<script>", ""):
        response = await client.get("/health", headers={"X-Request-ID": insane})
        generated = response.headers["x-request-id"]
        assert generated != insane and re.fullmatch(r"[0-9a-f]{32}", generated)


async def test_cors_allows_the_frontend_origins_only(
    client: httpx.AsyncClient, user_id: str
) -> None:
    for origin in ("http://localhost:3000", "http://localhost"):
        preflight = await client.options(
            f"/api/{user_id}/tasks",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        response = await client.get(
            f"/api/{user_id}/tasks", headers={**auth(user_id), "Origin": origin}
        )
        assert response.headers["access-control-allow-origin"] == origin
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "x-total-count" in exposed and "location" in exposed
    evil = await client.options(
        f"/api/{user_id}/tasks",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in evil.headers
    # Errors carry CORS headers too, so the browser lets the frontend read them.
    denied = await client.get(f"/api/{user_id}/tasks", headers={"Origin": "http://localhost:3000"})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "http://localhost:3000"


async def test_health_is_ok_without_touching_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_ready_reports_the_schema_version(client: httpx.AsyncClient) -> None:
    from repositories.migrations import latest_version

    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "schema_version": latest_version()}


async def test_probes_on_a_slow_database_share_one_statement(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """Probes that arrive while a readiness statement runs wait for that one: a hammered
    /ready on a slow database holds one pool connection, not one per probe, each kept to
    its own deadline (red team: task requests then got 500 for want of a connection)."""
    waiting_sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE '%FROM schema_migrations%'"
    )
    with (
        psycopg.connect(database_url) as locker,
        psycopg.connect(database_url, autocommit=True) as admin,
    ):
        locker.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        answers = await asyncio.gather(*(client.get("/ready") for _ in range(8)))
        waiting = admin.execute(waiting_sql).fetchone()
        locker.rollback()
    assert [a.status_code for a in answers] == [503] * 8
    assert waiting == (1,), waiting


async def test_unexpected_error_is_a_bare_500_envelope(
    app: FastAPI, client: httpx.AsyncClient, user_id: str
) -> None:
    repository = app.state.tasks
    original = repository.get_task

    async def explode(**_: object) -> None:
        raise RuntimeError("SELECT secret FROM internals; psycopg says no")

    repository.get_task = explode
    try:
        response = await client.get(f"/api/{user_id}/tasks/1", headers=auth(user_id))
    finally:
        repository.get_task = original
    assert _envelope(response, 500) == {"status_code": 500, "detail": "Internal server error"}


@contextlib.asynccontextmanager
async def database_gone(app: FastAPI, *, pool_timeout: float) -> AsyncIterator[None]:
    """Point the app's pool and repository at a server that does not exist, then restore them."""
    from repositories.pool import build_pool
    from repositories.tasks import TaskRepository

    dead = build_pool(
        "postgresql://postgres@127.0.0.1:1/nowhere",
        min_size=0,
        max_size=1,
        timeout=pool_timeout,
        connect_timeout=1,
    )
    await dead.open(wait=False)
    original = app.state.pool, app.state.tasks
    app.state.pool, app.state.tasks = dead, TaskRepository(dead)
    try:
        yield
    finally:
        app.state.pool, app.state.tasks = original
        await dead.close()


async def test_database_unavailable_is_500_with_retry_after(
    app: FastAPI, client: httpx.AsyncClient, user_id: str
) -> None:
    """A pool that cannot get a connection answers within DB_POOL_TIMEOUT, never hangs."""
    async with database_gone(app, pool_timeout=0.5):
        response = await asyncio.wait_for(
            client.get(f"/api/{user_id}/tasks", headers=auth(user_id)), timeout=5
        )
        ready = await asyncio.wait_for(client.get("/ready"), timeout=5)
    body = _envelope(response, 500)
    assert body == {"status_code": 500, "detail": "Database unavailable, retry shortly"}
    assert response.headers["retry-after"].isdigit()
    assert ready.status_code == 503


BAD_REQUESTS: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("GET", "/api/%00/tasks", {}, None),
    ("GET", "/api/%ff%fe/tasks/1", {}, None),
    ("GET", "/api/u/tasks?status=%00", {}, None),
    ("POST", "/api/u/tasks", {"Content-Type": "application/json"}, b"\x00\x01\x02"),
    ("GET", "/api/u/tasks", {"Authorization": "Bearer " + "a" * 10000}, None),
    ("GET", "/api/u/tasks", {"Authorization": "Bearer \u00e9\u00e9"}, None),
    ("GET", "/api/u/tasks", {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"}, None),
    ("GET", "/api/u/tasks", {"Authorization": "Bearer eyJhbGciOlsiSFMyNTYiXX0.e30.x"}, None),
    ("GET", "/api/u/tasks", {"Authorization": "Bearer e30.e30.e30"}, None),
    ("DELETE", "/api/u/tasks/" + "9" * 5000, {}, None),
    ("GET", "/" + "a/" * 2000, {}, None),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), BAD_REQUESTS)
async def test_hostile_requests_never_500(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> None:
    raw_headers = {k: v.encode("latin-1") for k, v in headers.items()}
    response = await client.request(method, path, headers=raw_headers, content=body)
    assert response.status_code < 500, response.text
    json.loads(response.text)


async def test_hostile_requests_with_a_valid_token_never_500(
    client: httpx.AsyncClient, user_id: str
) -> None:
    h = {**auth(user_id), "Content-Type": "application/json"}
    base = f"/api/{user_id}/tasks"
    bodies = [
        b'{"title": "\\u0000"}',
        b'{"title": "' + b"\\ud83d" + b'"}',
        b'{"title": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"title": 1e999}',
        b'{"title": "x", "description": {"$ne": null}}',
        b"[" * 100000,
        b'{"title": "x"}' * 10,
        b'\xef\xbb\xbf{"title": "bom"}',
        b"null",
    ]
    for payload in bodies:
        for method, path in (("POST", base), ("PUT", base + "/1"), ("PATCH", base + "/1/complete")):
            response = await client.request(method, path, headers=h, content=payload)
            assert response.status_code < 500, (method, payload[:40], response.text)
    for query in (
        "status=all&status=pending",
        "sort=title%00",
        "limit=1e3",
        "offset=00000000001",
        "limit=" + "1" * 400,
        "order=desc&order=%ff",
    ):
        response = await client.get(f"{base}?{query}", headers=h)
        assert response.status_code < 500, query


async def test_service_keeps_answering_after_a_flood_of_bad_requests(
    client: httpx.AsyncClient, user_id: str
) -> None:
    async def bad(n: int) -> int:
        kind = n % 4
        if kind == 0:
            r = await client.get(
                f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer junk{n}"}
            )
        elif kind == 1:
            r = await client.post(f"/api/{user_id}/tasks", content=b"{", headers=auth(user_id))
        elif kind == 2:
            r = await client.get(f"/api/{user_id}/tasks/{'x' * n}", headers=auth(user_id))
        else:
            r = await client.get(f"/api/{user_id}/tasks?limit=-{n}", headers=auth(user_id))
        return r.status_code

    codes = await asyncio.gather(*(bad(n) for n in range(400)))
    assert set(codes) <= {400, 401, 404, 422}
    ok = await client.post(
        f"/api/{user_id}/tasks", json={"title": "still here"}, headers=auth(user_id)
    )
    assert ok.status_code == 201


async def test_ready_answers_503_within_its_own_timeout_while_requests_wait_for_the_pool(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A probe is not held for DB_POOL_TIMEOUT: /ready gives up after 2 s at most."""
    import time

    started = time.monotonic()
    async with database_gone(app, pool_timeout=30.0):
        ready = await asyncio.wait_for(client.get("/ready"), timeout=10)
    assert ready.status_code == 503
    assert ready.json()["detail"] == "Database unavailable"
    assert time.monotonic() - started < 4.0


def test_every_repository_error_is_in_the_one_registry() -> None:
    """A new domain error must be mapped in api/errors.py, or it would be a silent 500."""
    from api.errors import DOMAIN_ERRORS
    from repositories.errors import MigrationError, RepositoryError

    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        return found.union(*(subclasses(sub) for sub in found))

    startup_only = {MigrationError}  # raised before the app serves; the CLI reports it
    unmapped = {
        cls.__name__
        for cls in subclasses(RepositoryError) - startup_only
        if not any(base in DOMAIN_ERRORS for base in cls.__mro__)
    }
    assert not unmapped, f"map these in api/errors.py DOMAIN_ERRORS: {sorted(unmapped)}"
