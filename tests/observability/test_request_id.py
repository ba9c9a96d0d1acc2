"""X-Request-ID: a sane one is kept, anything else replaced, and every response carries it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from observability.middleware import request_id_from
from tests.conftest import make_settings
from tests.support import auth

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "sane",
    ["abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "req_1.2:3", "A" * 128, "trace-00-ab-01"],
)
async def test_a_sane_incoming_id_is_returned_unchanged(
    client: httpx.AsyncClient, sane: str
) -> None:
    response = await client.get("/health", headers={"X-Request-ID": sane})
    assert response.headers["x-request-id"] == sane


@pytest.mark.parametrize(
    "insane",
    [
        b"",
        b"A" * 129,
        b"has space",
        b"<script>alert(1)</script>",
        b'quote"d',
        b"semi;colon",
        b"caf\xc3\xa9",
        b"\xff\xfe",
        b"a/b",
    ],
)
async def test_an_insane_incoming_id_is_replaced(client: httpx.AsyncClient, insane: bytes) -> None:
    response = await client.get("/health", headers=[(b"X-Request-ID", insane)])
    returned = response.headers["x-request-id"]
    assert GENERATED.fullmatch(returned), returned
    assert returned.encode() != insane


def test_the_id_check_bounds_length_and_charset() -> None:
    assert request_id_from([(b"x-request-id", b"ok-1")]) == "ok-1"
    assert GENERATED.fullmatch(request_id_from([]))
    assert GENERATED.fullmatch(request_id_from([(b"x-request-id", b"x" * 10_000)]))


async def test_generated_ids_are_unique(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/health")).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20 and all(GENERATED.fullmatch(i) for i in ids)


async def test_every_error_response_carries_the_id(client: httpx.AsyncClient, user_id: str) -> None:
    tasks = f"/api/{user_id}/tasks"
    cases: list[tuple[int, str, str, dict[str, object]]] = [
        (401, "GET", tasks, {}),
        (403, "GET", "/api/someone-else/tasks", {"headers": auth(user_id)}),
        (404, "GET", "/no/such/route", {}),
        (404, "GET", f"{tasks}/999999999", {"headers": auth(user_id)}),
        (405, "DELETE", "/health", {}),
        (400, "POST", tasks, {"headers": auth(user_id), "content": b"{not json"}),
        (413, "POST", tasks, {"headers": auth(user_id), "content": b"x" * (65 * 1024)}),
        (422, "POST", tasks, {"headers": auth(user_id), "json": {"title": ""}}),
        (422, "GET", f"{tasks}?status=bogus", {"headers": auth(user_id)}),
    ]
    for status, method, url, kwargs in cases:
        rid = f"err-{status}-{method}"
        headers = {"X-Request-ID": rid, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        response = await client.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (url, response.text)
        assert response.headers["x-request-id"] == rid, (status, url)
        assert response.json()["status_code"] == status


async def test_cors_preflight_and_cors_responses_carry_and_expose_the_id(
    client: httpx.AsyncClient, user_id: str
) -> None:
    preflight = await client.options(
        f"/api/{user_id}/tasks",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-request-id",
            "X-Request-ID": "preflight-1",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["x-request-id"] == "preflight-1"
    assert "x-request-id" in preflight.headers["access-control-allow-headers"].lower()
    simple = await client.get(
        f"/api/{user_id}/tasks", headers={"Origin": "http://localhost:3000", **auth(user_id)}
    )
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert GENERATED.fullmatch(simple.headers["x-request-id"])


@pytest_asyncio.fixture(loop_scope="session")
async def failing_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real application with one extra route that fails in a way no handler knows."""
    from api.app import create_app

    app: FastAPI = create_app(make_settings(database_url))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail the client must never see")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def test_an_unexpected_error_is_a_500_envelope_with_the_id(
    failing_client: httpx.AsyncClient,
) -> None:
    from prometheus_client import REGISTRY

    labels = {"handler": "/boom", "method": "GET", "status": "500"}
    before = REGISTRY.get_sample_value("http_requests_total", labels) or 0.0
    response = await failing_client.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    # Counted as a 500 too, by this second app of the process.
    assert REGISTRY.get_sample_value("http_requests_total", labels) == before + 1
    assert response.json() == {"status_code": 500, "detail": "Internal server error"}
    assert response.headers["x-request-id"] == "boom-1"
    assert "internal detail" not in response.text and "RuntimeError" not in response.text
