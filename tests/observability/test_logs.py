"""The real server's output: one JSON stream, one access line per request, no secrets."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.observability.helpers import access_lines
from tests.support import make_token, new_user_id, read_json_log, running_service, service_env

ACCESS_FIELDS = {"request_id", "method", "route", "status", "duration_ms"}


def test_one_json_access_line_per_request_and_never_a_token_or_body(
    database_url: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "service.log"
    user = new_user_id()
    token = make_token(user)
    marker = f"BODYMARKER{uuid.uuid4().hex}"
    bad_token = make_token(user, secret="not-the-secret-" + marker)
    bearer = {"Authorization": f"Bearer {token}"}
    sent: dict[str, tuple[str, str, int, str | None]] = {}  # id -> method, route, status, user

    with (
        running_service(service_env(database_url), log_path=log_path) as (base, _),
        httpx.Client(base_url=base, timeout=10.0) as http,
    ):

        def call(
            rid: str,
            method: str,
            url: str,
            route: str,
            status: int,
            who: str | None,
            **kw: Any,
        ) -> httpx.Response:
            headers = {"X-Request-ID": rid, **kw.pop("headers", {})}
            response = http.request(method, url, headers=headers, **kw)
            assert response.status_code == status, (rid, response.text)
            assert response.headers["x-request-id"] == rid
            sent[rid] = (method, route, status, who)
            return response

        tasks = f"/api/{user}/tasks"
        created = call(
            "log-create", "POST", tasks, "/api/{user_id}/tasks", 201, user,
            headers=bearer, json={"title": marker, "description": marker},
        )  # fmt: skip
        task = f"{tasks}/{created.json()['id']}"
        call("log-list", "GET", tasks, "/api/{user_id}/tasks", 200, user, headers=bearer)
        call(
            "log-put", "PUT", task, "/api/{user_id}/tasks/{task_id}", 200, user,
            headers=bearer, json={"title": marker + "2"},
        )  # fmt: skip
        # A token in the query string is ignored by auth, and must not reach the logs either.
        call(
            "log-query-token", "GET", f"{tasks}?token={token}&marker={marker}",
            "/api/{user_id}/tasks", 401, None,
        )  # fmt: skip
        call(
            "log-bad-token", "GET", tasks, "/api/{user_id}/tasks", 401, None,
            headers={"Authorization": f"Bearer {bad_token}"},
        )  # fmt: skip
        call(
            "log-forbidden", "GET", f"/api/{new_user_id()}/tasks", "/api/{user_id}/tasks",
            403, user, headers=bearer,
        )  # fmt: skip
        call(
            "log-invalid", "POST", tasks, "/api/{user_id}/tasks", 422, user,
            headers=bearer, json={"title": "", "description": marker},
        )  # fmt: skip
        call(
            "log-not-json", "POST", tasks, "/api/{user_id}/tasks", 400, user,
            headers=bearer, content=b'{"title": "' + marker.encode() + b'"',
        )  # fmt: skip
        call(
            "log-too-large", "POST", tasks, "/api/{user_id}/tasks", 413, None,
            headers=bearer, content=marker.encode() * 3000,
        )  # fmt: skip
        call("log-bad-id", "GET", f"{tasks}/abc", "/api/{user_id}/tasks/{task_id}", 404, user,
             headers=bearer)  # fmt: skip
        call("log-unrouted", "GET", f"/nowhere/{marker}", "<unmatched>", 404, None)
        call("log-405", "DELETE", "/health", "/health", 405, None)
        call("log-health", "GET", "/health", "/health", 200, None)
        call("log-delete", "DELETE", task, "/api/{user_id}/tasks/{task_id}", 204, user,
             headers=bearer)  # fmt: skip

    text = log_path.read_text(encoding="utf-8")
    records = read_json_log(log_path)  # every line is JSON

    # Never a token (nor its signature), an Authorization header, or a body.
    for secret in (token, token.rsplit(".", 1)[1], bad_token, bad_token.rsplit(".", 1)[1]):
        assert secret not in text
    assert marker not in text
    assert "bearer" not in text.lower()
    assert "authorization" not in text.lower()

    # Exactly one access line per request, with the route template, never the raw path.
    lines = access_lines(records)
    by_id: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        by_id.setdefault(str(line["request_id"]), []).append(line)
    for rid, (method, route, status, who) in sent.items():
        assert len(by_id.get(rid, [])) == 1, (rid, by_id.get(rid))
        line = by_id[rid][0]
        assert line.keys() >= ACCESS_FIELDS, line
        assert (line["method"], line["route"], line["status"]) == (method, route, status), line
        assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
        assert line.get("user_id") == who, line
        assert line["level"] == "info" and "timestamp" in line
    # The readiness probe of running_service is logged too (one line per request, no others).
    assert {str(line["request_id"]) for line in lines} - sent.keys()
    assert all(line["route"] == "/ready" for line in lines if line["request_id"] not in sent)

    # uvicorn's records come through the same JSON stream; its access log is off.
    uvicorn_events = [r["event"] for r in records if r.get("logger") == "uvicorn.error"]
    assert any("Application startup complete" in e for e in uvicorn_events), uvicorn_events
    assert not [r for r in records if r.get("logger") == "uvicorn.access"]
    assert not [r for r in records if "color_message" in r]
    # Refusals say why, bound to the request, without the client seeing more than the contract.
    refusals = {r["request_id"]: r["reason"] for r in records if r.get("event") == "auth_failed"}
    assert refusals["log-query-token"] == "missing_token"
    assert refusals["log-bad-token"] == "bad_signature"
    assert refusals["log-forbidden"] == "user_mismatch"
