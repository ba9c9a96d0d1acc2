"""The six endpoints, their success shapes and the contract's rules for each."""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx
import pytest

from tests.support import auth


async def _create(
    client: httpx.AsyncClient, owner: str, body: dict[str, object] | None = None, **fields: object
) -> dict[str, object]:
    response = await client.post(
        f"/api/{owner}/tasks", json={"title": "task", **(body or {}), **fields}, headers=auth(owner)
    )
    assert response.status_code == 201, response.text
    task: dict[str, object] = response.json()
    return task


def _ts(value: object) -> datetime:
    assert isinstance(value, str)
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    return parsed


async def test_create_returns_201_task_with_defaults_timestamps_and_location(
    client: httpx.AsyncClient, user_id: str
) -> None:
    response = await client.post(
        f"/api/{user_id}/tasks",
        json={"title": "  Write report  ", "description": "quarterly"},
        headers=auth(user_id),
    )
    assert response.status_code == 201
    task = response.json()
    assert set(task) == {
        "id",
        "user_id",
        "title",
        "description",
        "completed",
        "created_at",
        "updated_at",
    }
    assert isinstance(task["id"], int) and task["id"] > 0
    assert task["user_id"] == user_id
    assert task["title"] == "Write report"  # stripped
    assert task["description"] == "quarterly"
    assert task["completed"] is False
    assert _ts(task["created_at"]) == _ts(task["updated_at"])
    assert response.headers["location"] == f"/api/{user_id}/tasks/{task['id']}"


async def test_create_without_description_gives_null(
    client: httpx.AsyncClient, user_id: str
) -> None:
    task = await _create(client, user_id)
    assert task["description"] is None


async def test_body_cannot_set_id_owner_completed_or_timestamps(
    client: httpx.AsyncClient, user_id: str
) -> None:
    task = await _create(
        client,
        user_id,
        {
            "id": 999999,
            "user_id": "intruder",
            "completed": True,
            "created_at": "2000-01-01T00:00:00Z",
            "updated_at": "2000-01-01T00:00:00Z",
            "color": "red",
        },
    )
    assert task["id"] != 999999
    assert task["user_id"] == user_id
    assert task["completed"] is False
    assert _ts(task["created_at"]).year > 2000
    assert "color" not in task
    put = await client.put(
        f"/api/{user_id}/tasks/{task['id']}",
        json={
            "completed": True,
            "user_id": "intruder",
            "id": 1,
            "created_at": "2000-01-01T00:00:00Z",
        },
        headers=auth(user_id),
    )
    assert put.status_code == 200
    assert put.json() == task  # nothing it may change was in the body: nothing changed


async def test_list_is_empty_array_for_a_new_user(client: httpx.AsyncClient, user_id: str) -> None:
    response = await client.get(f"/api/{user_id}/tasks", headers=auth(user_id))
    assert response.status_code == 200
    assert response.json() == []
    assert "x-total-count" not in response.headers


async def test_users_see_only_their_own_tasks(client: httpx.AsyncClient, user_id: str) -> None:
    other = user_id + "-b"
    mine = await _create(client, user_id, title="mine")
    theirs = await _create(client, other, title="theirs")
    listed = (await client.get(f"/api/{user_id}/tasks", headers=auth(user_id))).json()
    assert [t["id"] for t in listed] == [mine["id"]]
    listed_other = (await client.get(f"/api/{other}/tasks", headers=auth(other))).json()
    assert [t["id"] for t in listed_other] == [theirs["id"]]


async def test_another_users_task_is_404_on_every_task_endpoint(
    client: httpx.AsyncClient, user_id: str
) -> None:
    victim = user_id + "-victim"
    task = await _create(client, victim, title="private")
    h = auth(user_id)
    base = f"/api/{user_id}/tasks/{task['id']}"
    for method, path, body in [
        ("GET", base, None),
        ("PUT", base, {"title": "hacked"}),
        ("PATCH", base + "/complete", None),
        ("PATCH", base + "/complete", {"completed": True}),
        ("DELETE", base, None),
    ]:
        response = await client.request(method, path, headers=h, json=body)
        assert response.status_code == 404, (method, path)
        assert response.json() == {"status_code": 404, "detail": "Task not found"}
    # ... and the victim's task is untouched.
    got = await client.get(f"/api/{victim}/tasks/{task['id']}", headers=auth(victim))
    assert got.json() == task


async def test_missing_task_and_foreign_task_are_indistinguishable(
    client: httpx.AsyncClient, user_id: str
) -> None:
    foreign = await _create(client, user_id + "-x")
    h = auth(user_id)
    a = await client.get(f"/api/{user_id}/tasks/{foreign['id']}", headers=h)
    b = await client.get(f"/api/{user_id}/tasks/9223372036854775807", headers=h)
    assert (a.status_code, a.json()) == (b.status_code, b.json())


@pytest.mark.parametrize(
    "raw",
    ["abc", "0", "-1", "1.5", "1e3", "9" * 25, "9223372036854775808", "%20", "0x10", "01", "+1"],
)
async def test_task_id_that_is_not_a_positive_64_bit_integer_is_404(
    client: httpx.AsyncClient, user_id: str, raw: str
) -> None:
    h = auth(user_id)
    for method, suffix, body in [
        ("GET", "", None),
        ("PUT", "", {"title": "x"}),
        ("PATCH", "/complete", None),
        ("DELETE", "", None),
    ]:
        response = await client.request(
            method, f"/api/{user_id}/tasks/{raw}{suffix}", headers=h, json=body
        )
        assert response.status_code == 404, (method, raw, response.text)
        assert response.json()["detail"] == "Task not found"


async def test_largest_64_bit_id_is_a_plain_404(client: httpx.AsyncClient, user_id: str) -> None:
    response = await client.get(f"/api/{user_id}/tasks/9223372036854775807", headers=auth(user_id))
    assert response.status_code == 404


async def test_put_updates_title_and_moves_updated_at(
    client: httpx.AsyncClient, user_id: str
) -> None:
    task = await _create(client, user_id, title="old", description="keep")
    response = await client.put(
        f"/api/{user_id}/tasks/{task['id']}", json={"title": "new"}, headers=auth(user_id)
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated["title"] == "new" and updated["description"] == "keep"
    assert _ts(updated["updated_at"]) > _ts(task["updated_at"])
    assert updated["created_at"] == task["created_at"]


async def test_put_omitted_field_unchanged_and_null_description_clears(
    client: httpx.AsyncClient, user_id: str
) -> None:
    task = await _create(client, user_id, title="t", description="d")
    path = f"/api/{user_id}/tasks/{task['id']}"
    response = await client.put(path, json={"description": "d2"}, headers=auth(user_id))
    assert response.json()["title"] == "t" and response.json()["description"] == "d2"
    response = await client.put(path, json={"description": None}, headers=auth(user_id))
    assert response.status_code == 200 and response.json()["description"] is None


async def test_put_null_title_is_422(client: httpx.AsyncClient, user_id: str) -> None:
    task = await _create(client, user_id)
    response = await client.put(
        f"/api/{user_id}/tasks/{task['id']}", json={"title": None}, headers=auth(user_id)
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "title"]


async def test_put_empty_body_and_same_data_leave_updated_at_alone(
    client: httpx.AsyncClient, user_id: str
) -> None:
    task = await _create(client, user_id, title="same", description="same d")
    path = f"/api/{user_id}/tasks/{task['id']}"
    for body in (
        {},
        {"title": "same"},
        {"title": "  same  "},
        {"description": "same d"},
        {"title": "same", "description": "same d"},
    ):
        response = await client.put(path, json=body, headers=auth(user_id))
        assert response.status_code == 200, body
        assert response.json() == task, body


async def test_toggle_flips_both_ways_and_moves_updated_at(
    client: httpx.AsyncClient, user_id: str
) -> None:
    task = await _create(client, user_id)
    path = f"/api/{user_id}/tasks/{task['id']}/complete"
    first = await client.patch(path, headers=auth(user_id))
    assert first.status_code == 200 and first.json()["completed"] is True
    assert _ts(first.json()["updated_at"]) > _ts(task["updated_at"])
    second = await client.patch(path, headers=auth(user_id))
    assert second.json()["completed"] is False


async def test_patch_with_completed_body_sets_idempotently(
    client: httpx.AsyncClient, user_id: str
) -> None:
    task = await _create(client, user_id)
    path = f"/api/{user_id}/tasks/{task['id']}/complete"
    first = await client.patch(path, json={"completed": True}, headers=auth(user_id))
    assert first.status_code == 200 and first.json()["completed"] is True
    again = await client.patch(path, json={"completed": True}, headers=auth(user_id))
    assert again.json() == first.json()  # same state: updated_at unchanged
    back = await client.patch(path, json={"completed": False}, headers=auth(user_id))
    assert back.json()["completed"] is False
    assert _ts(back.json()["updated_at"]) > _ts(first.json()["updated_at"])


@pytest.mark.parametrize(
    "body", [{"completed": "yes"}, {"completed": 1}, {"completed": None}, [], {}]
)
async def test_patch_with_a_bad_completed_value_is_422(
    client: httpx.AsyncClient, user_id: str, body: object
) -> None:
    task = await _create(client, user_id)
    response = await client.patch(
        f"/api/{user_id}/tasks/{task['id']}/complete", json=body, headers=auth(user_id)
    )
    assert response.status_code == 422, response.text


async def test_delete_is_204_empty_then_404(client: httpx.AsyncClient, user_id: str) -> None:
    task = await _create(client, user_id)
    path = f"/api/{user_id}/tasks/{task['id']}"
    first = await client.delete(path, headers=auth(user_id))
    assert first.status_code == 204 and first.content == b""
    assert (await client.get(path, headers=auth(user_id))).status_code == 404
    assert (await client.delete(path, headers=auth(user_id))).status_code == 404


async def test_50_concurrent_toggles_end_in_the_right_state(
    client: httpx.AsyncClient, user_id: str
) -> None:
    task = await _create(client, user_id)
    path = f"/api/{user_id}/tasks/{task['id']}/complete"
    responses = await asyncio.gather(
        *(client.patch(path, headers=auth(user_id)) for _ in range(50))
    )
    assert all(r.status_code == 200 for r in responses)
    # Every toggle was applied exactly once: 25 trues and 25 falses were observed, and an
    # even number of flips leaves the task where it started.
    states = [r.json()["completed"] for r in responses]
    assert states.count(True) == 25 and states.count(False) == 25
    final = await client.get(f"/api/{user_id}/tasks/{task['id']}", headers=auth(user_id))
    assert final.json()["completed"] is False


async def test_100_concurrent_creates_by_10_users_each_see_only_their_own(
    client: httpx.AsyncClient, user_id: str
) -> None:
    users = [f"{user_id}-{n}" for n in range(10)]

    async def create(owner: str, n: int) -> httpx.Response:
        return await client.post(
            f"/api/{owner}/tasks", json={"title": f"{owner}#{n}"}, headers=auth(owner)
        )

    responses = await asyncio.gather(*(create(u, n) for u in users for n in range(10)))
    assert [r.status_code for r in responses] == [201] * 100
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 100
    for owner in users:
        listed = (await client.get(f"/api/{owner}/tasks", headers=auth(owner))).json()
        assert len(listed) == 10
        assert {t["user_id"] for t in listed} == {owner}
        assert sorted(t["title"] for t in listed) == sorted(f"{owner}#{n}" for n in range(10))


async def test_single_task_bodies_are_the_bytes_fastapi_rendered(
    client: httpx.AsyncClient, user_id: str
) -> None:
    """The four single-task answers are serialised in one pydantic-core pass
    (api/routes/tasks.py `_task_response`); the bytes must stay those FastAPI's
    `response_model` path gave: the task validated again and `json.dumps` compact, non-ASCII
    kept as UTF-8, `created_at`/`updated_at` in UTC with an offset."""
    import json

    from repositories.models import TaskPublic

    def fastapi_rendering(body: bytes) -> bytes:
        task = TaskPublic.model_validate(json.loads(body))
        content = TaskPublic.model_validate(task.model_dump(by_alias=True)).model_dump(
            mode="json", by_alias=True
        )
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode()

    base = f"/api/{user_id}/tasks"
    title, description = 'Café ☕ \u2028 "quoted" \\ <tag>', "ünïcödé \t tab"
    created = await client.post(
        base, json={"title": title, "description": description}, headers=auth(user_id)
    )
    assert created.status_code == 201
    task_id = created.json()["id"]
    answers = [
        created,
        await client.get(f"{base}/{task_id}", headers=auth(user_id)),
        await client.put(f"{base}/{task_id}", json={"title": "ÅÄÖ"}, headers=auth(user_id)),
        await client.patch(f"{base}/{task_id}/complete", headers=auth(user_id)),
    ]
    for answer in answers:
        assert answer.status_code in (200, 201), answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["content-length"] == str(len(answer.content))
        assert answer.headers["etag"].startswith('"')
        assert answer.content == fastapi_rendering(answer.content)
        assert b"Caf\xc3\xa9" in answer.content or b"\xc3\x85" in answer.content  # raw UTF-8
    assert answers[0].json()["title"] == title and answers[0].json()["description"] == description
    assert answers[1].headers["cache-control"] == "private, no-cache"
    assert answers[0].headers["location"] == f"{base}/{task_id}"


def test_rows_are_validated_into_tasks_and_extra_columns_ignored() -> None:
    """repositories/tasks.py `_task` is the one check of what the database returned (the routes
    serialise tasks as they are, without FastAPI's response_model pass): a row that is not a
    task raises instead of being served."""
    from datetime import UTC

    import pydantic

    from repositories.models import TaskPublic
    from repositories.tasks import _task

    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    row: dict[str, object] = {
        "id": 7, "user_id": "u1", "title": "t", "description": None, "completed": False,
        "created_at": at, "updated_at": at, "version": 3, "list_version": 9,
    }  # fmt: skip
    task = _task(row)
    assert list(task) == list(TaskPublic.model_fields)  # the public fields, in order
    assert task == {k: v for k, v in row.items() if k not in ("version", "list_version")}
    for column, bad in (("title", None), ("completed", "maybe"), ("created_at", "yesterday")):
        with pytest.raises(pydantic.ValidationError):
            _task({**row, column: bad})


def test_task_rows_serialise_as_task_public() -> None:
    """The routes serialise TaskRow dicts (repositories/models.py) where OpenAPI documents
    TaskPublic: the same fields, and the same JSON bytes for the same task, timestamps in
    UTC with an offset whatever their zone (microseconds or none, non-ASCII text)."""
    from datetime import UTC, timedelta, timezone

    from pydantic import TypeAdapter

    from repositories.models import TaskPublic, TaskRow

    assert list(TaskRow.__annotations__) == list(TaskPublic.model_fields)
    rows = TypeAdapter(list[TaskRow])
    models = TypeAdapter(list[TaskPublic])
    tokyo = timezone(timedelta(hours=9))
    tasks = [
        {"id": 1, "user_id": "u", "title": "Café ☕ \u2028", "description": None,
         "completed": True, "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=tokyo),
         "updated_at": datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=UTC)},
        {"id": 2**63 - 1, "user_id": "u/2", "title": '"q" \\', "description": "d\t",
         "completed": False,
         "created_at": datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
         "updated_at": datetime(2026, 6, 1, tzinfo=timezone(timedelta(hours=-7)))},
    ]  # fmt: skip
    as_rows = rows.dump_json(rows.validate_python(tasks))
    assert as_rows == models.dump_json(models.validate_python(tasks))
    assert b'"created_at":"2026-01-01T18:04:05+00:00"' in as_rows


def test_create_parameters_are_every_field_of_new_task() -> None:
    """repositories/tasks.py `_new_task` spells NewTask's fields out (asdict is slow): a field
    added to NewTask must reach the statement too."""
    import dataclasses

    from repositories.tasks import NewTask, _new_task

    new = NewTask("u", "t", "d", name="n", email="e")
    assert _new_task(new) == dataclasses.asdict(new)
