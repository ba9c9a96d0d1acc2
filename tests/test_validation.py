"""Input rules: lengths in code points, white space, control characters, JSON, body size."""

from __future__ import annotations

import httpx
import pytest

from tests.support import auth


async def _post(client: httpx.AsyncClient, user_id: str, body: object) -> httpx.Response:
    return await client.post(f"/api/{user_id}/tasks", json=body, headers=auth(user_id))


def _assert_422(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["status_code"] == 422
    assert isinstance(body["detail"], str) and body["detail"]
    assert any(err["loc"][-1] == field for err in body["errors"]), body
    for err in body["errors"]:
        assert set(err) == {"loc", "msg", "type"}


@pytest.mark.parametrize(
    "title",
    [
        "a" * 200,
        "😀" * 200,  # 200 code points, 800 UTF-8 bytes
        "漢" * 200,
        "  " + "b" * 200 + "  ",  # stripped to 200
        "x",
        "tab\tinside",
        "line\nbreak",
    ],
    ids=["200 ascii", "200 emoji", "200 cjk", "200 after strip", "1 char", "tab", "newline"],
)
async def test_title_within_limits_is_accepted(
    client: httpx.AsyncClient, user_id: str, title: str
) -> None:
    response = await _post(client, user_id, {"title": title})
    assert response.status_code == 201, response.text
    assert response.json()["title"] == title.strip()


@pytest.mark.parametrize(
    "title",
    [
        "",
        "   ",
        "\t\n ",
        "a" * 201,
        "😀" * 201,
        "漢" * 201,
        "nul\x00byte",
        "bell\x07",
        "esc\x1b[0m",
        "del\x7f",
        "c1\x85inside",
    ],
    ids=[
        "empty",
        "spaces",
        "whitespace",
        "201 ascii",
        "201 emoji",
        "201 cjk",
        "NUL",
        "BEL",
        "ESC",
        "DEL",
        "C1",
    ],
)
async def test_bad_title_is_422(client: httpx.AsyncClient, user_id: str, title: str) -> None:
    _assert_422(await _post(client, user_id, {"title": title}), "title")


@pytest.mark.parametrize("title", [None, 123, True, ["a"], {"a": 1}])
async def test_title_of_the_wrong_type_is_422(
    client: httpx.AsyncClient, user_id: str, title: object
) -> None:
    _assert_422(await _post(client, user_id, {"title": title}), "title")


async def test_missing_title_is_422(client: httpx.AsyncClient, user_id: str) -> None:
    _assert_422(await _post(client, user_id, {"description": "no title"}), "title")


async def test_description_limits_in_code_points(client: httpx.AsyncClient, user_id: str) -> None:
    for ok in ("d" * 1000, "😀" * 1000, "漢" * 1000, "", "multi\nline\ttext"):
        response = await _post(client, user_id, {"title": "t", "description": ok})
        assert response.status_code == 201, response.text
        assert response.json()["description"] == ok
    for bad in ("d" * 1001, "😀" * 1001, "nul\x00", "\x1b"):
        _assert_422(await _post(client, user_id, {"title": "t", "description": bad}), "description")


async def test_put_applies_the_same_rules(client: httpx.AsyncClient, user_id: str) -> None:
    created = await _post(client, user_id, {"title": "t"})
    path = f"/api/{user_id}/tasks/{created.json()['id']}"
    for body, field in (
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "a" * 201}, "title"),
        ({"title": "x\x00"}, "title"),
        ({"description": "d" * 1001}, "description"),
        ({"description": 5}, "description"),
    ):
        _assert_422(await client.put(path, json=body, headers=auth(user_id)), field)


async def test_lone_surrogate_is_422_not_500(client: httpx.AsyncClient, user_id: str) -> None:
    response = await client.post(
        f"/api/{user_id}/tasks",
        content=b'{"title": "bad \\ud800 surrogate"}',
        headers={**auth(user_id), "Content-Type": "application/json"},
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"title": "x",}', b"\xff\xfe", b'{"title": "unterminated', b"nul\x00"]
)
async def test_invalid_json_is_400(client: httpx.AsyncClient, user_id: str, raw: bytes) -> None:
    response = await client.post(
        f"/api/{user_id}/tasks",
        content=raw,
        headers={**auth(user_id), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json() == {"status_code": 400, "detail": "Request body is not valid JSON"}


async def test_invalid_json_is_400_whatever_the_content_type(
    client: httpx.AsyncClient, user_id: str
) -> None:
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = auth(user_id)
        if content_type:
            headers["Content-Type"] = content_type
        response = await client.post(f"/api/{user_id}/tasks", content=b"title=x", headers=headers)
        assert response.status_code == 400, content_type


async def test_valid_json_of_the_wrong_shape_is_422(
    client: httpx.AsyncClient, user_id: str
) -> None:
    for body in ([], "title", 42, [{"title": "x"}]):
        response = await _post(client, user_id, body)
        assert response.status_code == 422, body
    # JSON null (httpx's json=None would send no body at all, which is 400: not JSON)
    response = await client.post(f"/api/{user_id}/tasks", content=b"null", headers=auth(user_id))
    assert response.status_code == 422, response.text


async def test_body_over_64_kib_is_413(client: httpx.AsyncClient, user_id: str) -> None:
    big = {"title": "t", "description": "d" * (64 * 1024)}
    response = await _post(client, user_id, big)
    assert response.status_code == 413
    assert response.json() == {"status_code": 413, "detail": "Request body too large"}


async def test_streamed_body_over_64_kib_without_length_is_413(
    client: httpx.AsyncClient, user_id: str
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"title": "t", "description": "'
        for _ in range(70):
            yield b"d" * 1024
        yield b'"}'

    response = await client.post(
        f"/api/{user_id}/tasks",
        content=chunks(),
        headers={**auth(user_id), "Content-Type": "application/json"},
    )
    assert response.status_code == 413


async def test_body_just_under_64_kib_is_judged_on_its_fields(
    client: httpx.AsyncClient, user_id: str
) -> None:
    body = {"title": "t", "description": "d" * 1000, "padding": "p" * 60_000}
    response = await _post(client, user_id, body)
    assert response.status_code == 201  # unknown fields are ignored, not stored


# Contract, "HTTP semantics": a body must be I-JSON (RFC 7493). Python's json module accepts
# NaN, Infinity and duplicate member names; every body-taking route must refuse them as 400.
NOT_I_JSON = {
    "NaN": b'{"title": "x", "n": NaN}',
    "Infinity": b'{"title": "x", "n": Infinity}',
    "-Infinity": b'{"title": "x", "n": -Infinity}',
    "nested NaN": b'{"title": "x", "n": [1, {"m": NaN}]}',
    "duplicate title": b'{"title": "x", "title": "y"}',
    "duplicate unknown": b'{"title": "x", "a": 1, "a": 2}',
    "nested duplicate": b'{"title": "x", "o": {"k": 1, "k": 1}}',
}


@pytest.mark.parametrize("raw", NOT_I_JSON.values(), ids=NOT_I_JSON.keys())
@pytest.mark.parametrize("route", ["create", "update", "complete"])
async def test_non_i_json_bodies_are_400_on_every_body_route(
    client: httpx.AsyncClient, user_id: str, route: str, raw: bytes
) -> None:
    created = await _post(client, user_id, {"title": "before"})
    task = created.json()
    method, path = {
        "create": ("POST", f"/api/{user_id}/tasks"),
        "update": ("PUT", f"/api/{user_id}/tasks/{task['id']}"),
        "complete": ("PATCH", f"/api/{user_id}/tasks/{task['id']}/complete"),
    }[route]
    if route == "complete":
        raw = raw.replace(b'"title"', b'"completed"').replace(b'"x"', b"true")
        raw = raw.replace(b'"y"', b"false")
    response = await client.request(
        method, path, content=raw, headers={**auth(user_id), "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json() == {"status_code": 400, "detail": "Request body is not valid JSON"}
    after = await client.get(f"/api/{user_id}/tasks", headers=auth(user_id))
    assert after.json() == [task]  # nothing created, nothing changed


# Found by the red team: bodies that are not JSON in ways Python's json module tolerates, and
# the two "no body" look-alikes of PATCH …/complete.
@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "x", "n": 1e400}',  # beyond IEEE 754 double: Python makes it infinity
        b'{"title": "x", "n": -1E+999}',
        '{"title": "x"}'.encode("utf-16"),  # I-JSON is UTF-8 (RFC 7493 §2.1)
        '{"title": "x"}'.encode("utf-16-le"),
        b"",  # an empty body is not JSON
        b"   ",
    ],
    ids=["1e400", "-1E+999", "utf-16 with BOM", "utf-16-le", "empty", "blank"],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_bodies_python_tolerates_but_json_does_not_are_400(
    client: httpx.AsyncClient, user_id: str, method: str, raw: bytes
) -> None:
    task = (await _post(client, user_id, {"title": "before"})).json()
    path = f"/api/{user_id}/tasks" + (f"/{task['id']}" if method == "PUT" else "")
    response = await client.request(
        method, path, content=raw, headers={**auth(user_id), "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json() == {"status_code": 400, "detail": "Request body is not valid JSON"}
    after = await client.get(f"/api/{user_id}/tasks", headers=auth(user_id))
    assert after.json() == [task]


async def test_complete_with_a_json_null_body_is_422_not_a_toggle(
    client: httpx.AsyncClient, user_id: str
) -> None:
    """Only a missing body toggles; `null` is JSON of the wrong shape, so a retried request
    can never flip the task back."""
    task = (await _post(client, user_id, {"title": "t"})).json()
    path = f"/api/{user_id}/tasks/{task['id']}/complete"
    for _ in range(2):
        response = await client.patch(
            path, content=b"null", headers={**auth(user_id), "Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
    got = await client.get(f"/api/{user_id}/tasks/{task['id']}", headers=auth(user_id))
    assert got.json()["completed"] is False
    toggled = await client.patch(path, headers=auth(user_id))  # no body at all: toggles
    assert toggled.status_code == 200 and toggled.json()["completed"] is True
