"""The spec's acceptance scenarios end to end, in process, on real PostgreSQL."""

from __future__ import annotations

import httpx

from tests.support import auth


async def test_create_then_list_get_update_toggle_delete(
    client: httpx.AsyncClient, user_id: str
) -> None:
    h = auth(user_id)
    created = await client.post(f"/api/{user_id}/tasks", json={"title": "Buy milk"}, headers=h)
    assert created.status_code == 201
    task = created.json()
    assert task["completed"] is False and task["user_id"] == user_id
    assert created.headers["location"] == f"/api/{user_id}/tasks/{task['id']}"

    listed = await client.get(f"/api/{user_id}/tasks", headers=h)
    assert [t["id"] for t in listed.json()] == [task["id"]]

    got = await client.get(f"/api/{user_id}/tasks/{task['id']}", headers=h)
    assert got.json() == task

    put = await client.put(
        f"/api/{user_id}/tasks/{task['id']}", json={"title": "Buy oat milk"}, headers=h
    )
    assert put.status_code == 200 and put.json()["title"] == "Buy oat milk"
    assert put.json()["updated_at"] > task["updated_at"]

    toggled = await client.patch(f"/api/{user_id}/tasks/{task['id']}/complete", headers=h)
    assert toggled.status_code == 200 and toggled.json()["completed"] is True

    deleted = await client.delete(f"/api/{user_id}/tasks/{task['id']}", headers=h)
    assert deleted.status_code == 204 and deleted.content == b""
    again = await client.delete(f"/api/{user_id}/tasks/{task['id']}", headers=h)
    assert again.status_code == 404
