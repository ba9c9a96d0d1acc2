"""Contract, "HTTP semantics", against a real server: HEAD wherever GET is, 405 with the
path's `Allow`, a trailing slash served as the path without it (never a redirect), and a
refused CORS preflight in the error envelope."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.http_edges.conftest import raw_request
from tests.support import auth, new_user_id

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: Headers that differ between any two responses.
VOLATILE = {"date", "x-request-id"}


def _paths(base: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """A user with one task: (user id, path template -> concrete path, its Allow)."""
    user = new_user_id()
    created = httpx.post(f"{base}/api/{user}/tasks", json={"title": "t"}, headers=auth(user))
    assert created.status_code == 201, created.text
    task = created.json()["id"]
    paths = {
        "/health": "/health",
        "/ready": "/ready",
        "/api/{user_id}/tasks": f"/api/{user}/tasks",
        "/api/{user_id}/tasks/{task_id}": f"/api/{user}/tasks/{task}",
        "/api/{user_id}/tasks/{task_id}/complete": f"/api/{user}/tasks/{task}/complete",
    }
    allow = {
        "/health": "GET, HEAD",
        "/ready": "GET, HEAD",
        "/api/{user_id}/tasks": "GET, HEAD, POST",
        "/api/{user_id}/tasks/{task_id}": "GET, HEAD, PUT, DELETE",
        "/api/{user_id}/tasks/{task_id}/complete": "PATCH",
    }
    return user, paths, allow


def _envelope(
    status: int, headers: dict[str, str], body: bytes, expected: int
) -> dict[str, object]:
    assert status == expected, body
    assert headers["content-type"].startswith("application/json")
    parsed: dict[str, object] = json.loads(body)
    assert parsed["status_code"] == expected and isinstance(parsed["detail"], str)
    return parsed


@pytest.mark.parametrize("authenticated", [True, False], ids=["token", "no-token"])
def test_head_is_get_without_a_body_everywhere_get_is(service: str, authenticated: bool) -> None:
    user, paths, _ = _paths(service)
    headers = auth(user) if authenticated else {}
    for template in ("/health", "/ready", "/api/{user_id}/tasks", "/api/{user_id}/tasks/{task_id}"):
        path = paths[template]
        get_status, get_headers, get_body = raw_request(service, "GET", path, headers)
        assert "server" not in get_headers, get_headers  # the server's name is nobody's business
        head_status, head_headers, head_body = raw_request(service, "HEAD", path, headers)
        assert head_status == get_status, (template, head_status, get_status)
        assert get_body, template
        assert head_body == b"", (template, head_body)
        same = {k: v for k, v in head_headers.items() if k not in VOLATILE}
        assert same == {k: v for k, v in get_headers.items() if k not in VOLATILE}, template
        if template.startswith("/api") and not authenticated:
            assert head_status == 401 and head_headers["www-authenticate"] == "Bearer"


def test_head_docs_is_get_without_a_body(service: str) -> None:
    """/docs is a GET like the others (a red-team find: it was 405)."""
    get_status, _, get_body = raw_request(service, "GET", "/docs", {})
    head_status, _, head_body = raw_request(service, "HEAD", "/docs", {})
    assert get_status == head_status == 200 and get_body and head_body == b""


@pytest.mark.parametrize("authenticated", [True, False], ids=["token", "no-token"])
def test_405_lists_every_method_of_the_path_in_allow(service: str, authenticated: bool) -> None:
    """405 comes before 401: which methods a path has is a routing fact, public in OpenAPI."""
    user, paths, allow = _paths(service)
    headers = auth(user) if authenticated else {}
    for template, path in paths.items():
        refused = [m for m in METHODS if m not in allow[template].split(", ")]
        assert refused, template
        for method in refused:
            status, got, body = raw_request(service, method, path, headers)
            assert (status, got.get("allow")) == (405, allow[template]), (template, method)
            if method == "HEAD":
                assert body == b""
            else:
                parsed = _envelope(status, got, body, 405)
                assert parsed == {"status_code": 405, "detail": "Method Not Allowed"}


def test_trailing_slash_is_the_same_resource_for_every_route_and_method(service: str) -> None:
    user, paths, _ = _paths(service)
    h = auth(user)

    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        body = b'{"title": "slash"}' if method in ("POST", "PUT") else b""
        if method == "DELETE" and "{task_id}" in path_template:
            # Each DELETE gets a task of its own, so both can succeed.
            task = httpx.post(f"{service}/api/{user}/tasks", json={"title": "d"}, headers=h)
            path = path.replace(
                paths["/api/{user_id}/tasks/{task_id}"], f"/api/{user}/tasks/{task.json()['id']}"
            )
        return raw_request(service, method, path, h, body)

    for path_template, path in paths.items():
        for method in METHODS:
            bare = answer(method, path)
            slashed = answer(method, path + "/")
            assert not 300 <= slashed[0] < 400, (path_template, method, slashed)
            assert slashed[0] == bare[0], (path_template, method, bare[0], slashed[0])
            assert bare[0] < 300 or bare[0] in (401, 404, 405), (path_template, method, bare)
            assert slashed[1].get("allow") == bare[1].get("allow")
            if method == "GET":
                assert slashed[2] == bare[2] or path_template == "/ready"
    # Slash variants are no separate operations in OpenAPI, and HEAD is none either.
    spec = httpx.get(f"{service}/openapi.json").json()
    assert not [p for p in spec["paths"] if p.endswith("/")]
    assert not [p for p, ops in spec["paths"].items() if "head" in ops]


def test_a_refused_cors_preflight_is_the_json_envelope(service: str) -> None:
    user = new_user_id()
    path = f"/api/{user}/tasks"
    refused = {
        "origin": {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        "method": {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "TRACE"},
        "headers": {
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-not-allowed",
        },
    }
    for what, headers in refused.items():
        status, got, body = raw_request(service, "OPTIONS", path, headers)
        parsed = _envelope(status, got, body, 400)
        assert what in str(parsed["detail"]), parsed
        assert "access-control-allow-origin" not in got or what != "origin"
        assert got.get("x-request-id")
    # An allowed preflight is answered as before.
    status, got, body = raw_request(
        service,
        "OPTIONS",
        path,
        {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert status == 200 and got["access-control-allow-origin"] == "http://localhost:3000"
