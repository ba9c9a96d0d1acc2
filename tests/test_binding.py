"""api/binding.py: valid requests to the task routes skip FastAPI's dependency solving, and
every request is answered exactly as FastAPI's own handler answers it.

The same requests go to the app and to a twin app built with the binding switched off (FastAPI
solves every request), both on the session's database: statuses, bodies and headers must be
the same, for valid requests and for every kind of invalid one (query values, path ids,
bodies, conditional headers, Idempotency-Key).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import fastapi.routing
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from api.binding import Binding
from tests.conftest import make_settings
from tests.support import auth, new_user_id

# Headers that differ between two answers to the same request by design.
_PER_RESPONSE = {"x-request-id", "date", "location", "content-length"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def unbound_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose task routes always go through FastAPI's handler."""
    from api import body
    from api.app import create_app

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(body.Binding, "of", classmethod(lambda cls, route: None))
        application: FastAPI = create_app(make_settings(database_url))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


def _comparable(response: httpx.Response, normalise: Callable[[Any], Any] = lambda v: v) -> Any:
    ignored = _PER_RESPONSE | ({"etag"} if normalise is _without_identity else set())
    headers = {k: v for k, v in response.headers.items() if k not in ignored}
    try:
        body: Any = normalise(response.json())
    except ValueError:
        body = response.content
    return response.status_code, headers, body


def _without_identity(value: Any) -> Any:
    """A created task without what differs between two creates (id and timestamps; its ETag
    header is not compared either)."""
    if isinstance(value, dict) and "id" in value:
        return {k: v for k, v in value.items() if k not in {"id", "created_at", "updated_at"}}
    return value


async def _seed(client: httpx.AsyncClient, user: str, count: int) -> list[int]:
    ids = []
    for n in range(count):
        title = f"{'BaAc'[n % 4]}task {n}"
        body = {"title": title, "description": None if n % 2 else f"d{n}"}
        created = await client.post(f"/api/{user}/tasks", json=body, headers=auth(user))
        ids.append(created.raise_for_status().json()["id"])
    for task_id in ids[::3]:
        await client.patch(f"/api/{user}/tasks/{task_id}/complete", headers=auth(user))
    return ids


def test_every_task_route_is_bound(app: FastAPI) -> None:
    """All six task routes take the short path for valid requests (none silently lost it,
    e.g. to a new dependency without a `from_request` twin)."""
    routes = [r for r in app.routes if getattr(r, "path", "").startswith("/api/{user_id}/tasks")]
    assert len(routes) == 6
    for route in routes:
        assert Binding.of(route) is not None, route  # type: ignore[arg-type]


async def test_valid_requests_skip_fastapi_solving(
    client: httpx.AsyncClient, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Valid requests never reach `solve_dependencies`; an invalid one does (FastAPI answers
    it), and the answers are right."""
    solved: list[str] = []
    original = fastapi.routing.solve_dependencies

    async def spy(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", spy)
    headers = auth(user_id)
    base = f"/api/{user_id}/tasks"
    created = await client.post(base, json={"title": " t "}, headers=headers)
    assert created.status_code == 201 and created.json()["title"] == "t"
    task = created.json()["id"]
    listed = await client.get(base, params={"status": "pending", "limit": "5"}, headers=headers)
    assert listed.status_code == 200 and listed.headers["x-total-count"] == "1"
    got = await client.get(f"{base}/{task}", headers=headers)
    assert got.status_code == 200 and got.json()["id"] == task
    put = await client.put(f"{base}/{task}", json={"description": "d"}, headers=headers)
    assert put.status_code == 200 and put.json()["description"] == "d"
    toggled = await client.patch(f"{base}/{task}/complete", headers=headers)
    assert toggled.status_code == 200 and toggled.json()["completed"] is True
    etag = toggled.headers["etag"]
    matched = await client.patch(
        f"{base}/{task}/complete", json={"completed": False}, headers={**headers, "If-Match": etag}
    )
    assert matched.status_code == 200 and matched.json()["completed"] is False
    assert (await client.get(f"{base}/{task}/", headers=headers)).status_code == 200
    assert (await client.delete(f"{base}/{task}", headers=headers)).status_code == 204
    assert solved == []

    invalid = await client.get(base, params={"limit": "0"}, headers=headers)
    assert invalid.status_code == 422
    assert solved == [base]


async def test_dependency_overrides_still_apply(
    app: FastAPI, client: httpx.AsyncClient, user_id: str
) -> None:
    """FastAPI's `app.dependency_overrides` (a testing hook) is honoured: while the app has
    any, its task routes are bound by FastAPI, which applies them."""
    from api.deps import tasks_repository
    from repositories.errors import TaskNotFound

    class Empty:
        async def get_task(self, **_: Any) -> Any:
            raise TaskNotFound(1)

    async def empty_repository() -> Any:
        return Empty()

    created = await client.post(f"/api/{user_id}/tasks", json={"title": "t"}, headers=auth(user_id))
    path = f"/api/{user_id}/tasks/{created.json()['id']}"
    app.dependency_overrides[tasks_repository] = empty_repository
    try:
        assert (await client.get(path, headers=auth(user_id))).status_code == 404
    finally:
        app.dependency_overrides.clear()
    assert (await client.get(path, headers=auth(user_id))).status_code == 200


# --- the same answers from both paths --------------------------------------------------------

_QUERY_VALUES: dict[str, list[str]] = {
    "status": ["all", "pending", "completed", "", "ALL", "done", "pending "],
    "sort": ["created", "title", "", "id", "Title"],
    "order": ["asc", "desc", "", "up"],
    "limit": ["1", "2", "1000", "0", "1001", "-1", "", "x", "1.5", "\u0663", " 3", "1e2", "+4"],
    "offset": ["0", "1", "3", "-1", "", "x", str(2**63), str(2**63 - 1), "00"],
    "other": ["1"],
}


def _queries() -> list[list[tuple[str, str]]]:
    """Every value alone, then 150 random combinations (fixed seed), some repeating a name."""
    out: list[list[tuple[str, str]]] = [[]]
    out += [[(name, v)] for name, values in _QUERY_VALUES.items() for v in values]
    rng = random.Random(13)
    names = list(_QUERY_VALUES)
    for _ in range(150):
        chosen = rng.sample(names, rng.randint(1, 4))
        if rng.random() < 0.2:
            chosen.append(rng.choice(chosen))  # a repeated parameter: the last wins
        out.append([(name, rng.choice(_QUERY_VALUES[name])) for name in chosen])
    return out


async def test_list_queries_answer_alike(
    client: httpx.AsyncClient, unbound_client: httpx.AsyncClient
) -> None:
    user = new_user_id()
    await _seed(client, user, 7)
    headers = auth(user)
    for query in _queries():
        params = httpx.QueryParams(query)
        bound = await client.get(f"/api/{user}/tasks", params=params, headers=headers)
        unbound = await unbound_client.get(f"/api/{user}/tasks", params=params, headers=headers)
        assert _comparable(bound) == _comparable(unbound), query


_BODIES: list[Any] = [
    {"title": "new"},
    {"title": "  spaced  ", "description": "keep  "},
    {"title": "x", "description": None},
    {"description": "only"},
    {},
    {"title": None},
    {"title": ""},
    {"title": "   "},
    {"title": "a" * 201},
    {"title": 5},
    {"title": ["t"]},
    {"title": "ok", "description": 7},
    {"title": "ok", "description": "d" * 1001},
    {"title": "bad\x00nul"},
    {"title": "ok", "completed": True, "id": 1, "user_id": "someone"},
    {"completed": True},
    {"completed": False},
    {"completed": "true"},
    {"completed": 1},
    {"completed": None},
    [],
    ["title"],
    "title",
    5,
    True,
    None,
]
_RAW_BODIES: list[bytes] = [b"", b" ", b"{", b'{"title": NaN}', b'{"title": "a", "title": "b"}',
                            b'{"title": 1e400}', b"\xff\xfe", b'{"title": "ok"} x']  # fmt: skip


def _body_kwargs() -> list[dict[str, Any]]:
    return [{"json": b} for b in _BODIES] + [
        {"content": raw, "headers": {"Content-Type": ct}}
        for raw, ct in itertools.product(_RAW_BODIES, ["application/json", "text/plain"])
    ]


async def _both(
    client: httpx.AsyncClient,
    unbound_client: httpx.AsyncClient,
    method: str,
    path: str,
    credentials: dict[str, str],
    normalise: Callable[[Any], Any] = lambda v: v,
    **kwargs: Any,
) -> None:
    extra = kwargs.pop("headers", {})
    merged = [*credentials.items(), *(extra.items() if isinstance(extra, dict) else extra)]
    bound = await client.request(method, path, headers=merged, **kwargs)
    unbound = await unbound_client.request(method, path, headers=merged, **kwargs)
    assert _comparable(bound, normalise) == _comparable(unbound, normalise), (method, path, kwargs)


async def test_bodies_answer_alike(
    client: httpx.AsyncClient, unbound_client: httpx.AsyncClient
) -> None:
    """POST, PUT and PATCH …/complete with every body; a PUT or a set applied by one app and
    then by the other changes nothing the second time, so both answers are the same."""
    user = new_user_id()
    (task,) = await _seed(client, user, 1)
    headers = auth(user)
    base = f"/api/{user}/tasks"
    for kwargs in _body_kwargs():
        await _both(client, unbound_client, "POST", base, headers, _without_identity, **kwargs)
        await _both(client, unbound_client, "PUT", f"{base}/{task}", headers, **kwargs)
        if kwargs != {"json": None} and kwargs.get("content") != b"":  # not a toggle
            await _both(client, unbound_client, "PATCH", f"{base}/{task}/complete", headers,
                        **kwargs)  # fmt: skip


async def test_paths_and_headers_answer_alike(
    client: httpx.AsyncClient, unbound_client: httpx.AsyncClient
) -> None:
    """Task ids of every shape, If-None-Match, If-Match and Idempotency-Key of every kind."""
    user = new_user_id()
    (task,) = await _seed(client, user, 1)
    headers = auth(user)
    base = f"/api/{user}/tasks"
    current = (await client.get(f"{base}/{task}", headers=headers)).headers["etag"]
    odd_ids = ["abc", "0", "-1", "1.5", "0x1", "9" * 25, str(2**63), "\u0661", str(task + 10**6)]
    for task_id in odd_ids:
        for method in ["GET", "PUT", "DELETE"]:
            body = {"json": {"title": "x"}} if method == "PUT" else {}
            await _both(client, unbound_client, method, f"{base}/{task_id}", headers, **body)
        await _both(client, unbound_client, "PATCH", f"{base}/{task_id}/complete", headers)
    tags = [current, "*", f"W/{current}", '"1-0000000000000000"', "garbage", f"{current}, *", ""]
    for tag in tags:
        await _both(client, unbound_client, "GET", f"{base}/{task}", headers,
                    headers={"If-None-Match": tag})  # fmt: skip
        await _both(client, unbound_client, "GET", base, headers, headers={"If-None-Match": tag})
        # Writes that change nothing (the seeded title, completed already), so that the
        # first app's write leaves the tag as the second app's request finds it.
        await _both(client, unbound_client, "PUT", f"{base}/{task}", headers,
                    json={"title": "Btask 0"}, headers={"If-Match": tag})  # fmt: skip
        await _both(client, unbound_client, "PATCH", f"{base}/{task}/complete", headers,
                    json={"completed": True}, headers={"If-Match": tag})  # fmt: skip
    for key in ["k1", '"quoted"', "", " ", "\u00e9".encode("latin-1"), "x" * 256, "a b"]:
        await _both(client, unbound_client, "POST", base, headers, _without_identity,
                    json={"title": "idem"}, headers={"Idempotency-Key": key})  # fmt: skip
    body = json.dumps({"title": "two keys"})
    await _both(client, unbound_client, "POST", base, headers, _without_identity, content=body,
                headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")])  # fmt: skip


@pytest.mark.parametrize(
    ("method", "suffix"), [("POST", ""), ("PUT", "/1"), ("PATCH", "/1/complete")]
)
async def test_a_client_that_leaves_mid_body_gets_fastapis_400_not_an_unhandled_500(
    app: FastAPI, user_id: str, method: str, suffix: str
) -> None:
    """A body cut off by the client's disconnect: FastAPI's handler answers a body it cannot
    read with 400 "There was an error parsing the body"; the route's own read of the body
    (api/body.py `_check_presence`) must too, not let ClientDisconnect become a logged 500
    (an error line with a traceback, and a 5xx in the access line and metrics, that any
    client could produce at will)."""
    headers = [
        (k.lower().encode(), v.encode())
        for k, v in {**auth(user_id), "Content-Type": "application/json"}.items()
    ] + [(b"content-length", b"100"), (b"host", b"testserver")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": f"/api/{user_id}/tasks{suffix}",
        "raw_path": f"/api/{user_id}/tasks{suffix}".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    messages = iter(
        [
            {"type": "http.request", "body": b'{"title"', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert json.loads(body) == {"status_code": 400, "detail": "There was an error parsing the body"}
