"""GET /api/{user_id}/tasks: filters, sorts, order, ties, pages and the 422s."""

from __future__ import annotations

import httpx
import pytest

from tests.support import auth


async def _seed(
    client: httpx.AsyncClient, user_id: str, titles: list[str]
) -> list[dict[str, object]]:
    tasks = []
    for title in titles:
        response = await client.post(
            f"/api/{user_id}/tasks", json={"title": title}, headers=auth(user_id)
        )
        assert response.status_code == 201
        tasks.append(response.json())
    return tasks


async def _list(client: httpx.AsyncClient, user_id: str, **params: object) -> httpx.Response:
    return await client.get(f"/api/{user_id}/tasks", params=params, headers=auth(user_id))


def _ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [t["id"] for t in response.json()]


async def test_status_filters_pending_completed_and_all(
    client: httpx.AsyncClient, user_id: str
) -> None:
    tasks = await _seed(client, user_id, ["a", "b", "c", "d"])
    for task in tasks[1::2]:
        await client.patch(f"/api/{user_id}/tasks/{task['id']}/complete", headers=auth(user_id))
    all_ids = [t["id"] for t in tasks]
    done = [t["id"] for t in tasks[1::2]]
    pending = [t["id"] for t in tasks[0::2]]
    assert _ids(await _list(client, user_id, status="pending")) == pending
    assert _ids(await _list(client, user_id, status="completed")) == done
    assert _ids(await _list(client, user_id, status="all")) == all_ids
    assert _ids(await _list(client, user_id)) == all_ids  # default is all
    completed = (await _list(client, user_id, status="completed")).json()
    assert all(t["completed"] for t in completed)


async def test_sort_created_is_ascending_by_default_and_desc_reverses(
    client: httpx.AsyncClient, user_id: str
) -> None:
    tasks = await _seed(client, user_id, ["z", "y", "x"])
    created = [t["id"] for t in tasks]
    assert _ids(await _list(client, user_id, sort="created")) == created
    assert _ids(await _list(client, user_id, sort="created", order="asc")) == created
    assert _ids(await _list(client, user_id, sort="created", order="desc")) == created[::-1]


async def test_sort_title_is_case_insensitive_with_ties_by_id(
    client: httpx.AsyncClient, user_id: str
) -> None:
    tasks = await _seed(client, user_id, ["banana", "Apple", "cherry", "apple", "APPLE", "Banana"])
    by_title = await _list(client, user_id, sort="title")
    titles = [t["title"] for t in by_title.json()]
    assert titles == ["Apple", "apple", "APPLE", "banana", "Banana", "cherry"]
    # Ties (same lower-case title) keep id order, so the result is stable.
    apples = [t["id"] for t in by_title.json()[:3]]
    assert apples == sorted(apples)
    desc = await _list(client, user_id, sort="title", order="desc")
    assert [t["title"] for t in desc.json()] == [
        "cherry",
        "Banana",
        "banana",
        "APPLE",
        "apple",
        "Apple",
    ]
    assert len(tasks) == 6


async def test_sort_created_ties_break_by_id(
    client: httpx.AsyncClient, user_id: str, database_url: str
) -> None:
    import psycopg

    tasks = await _seed(client, user_id, ["1", "2", "3"])
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE tasks SET created_at = '2026-01-01T00:00:00Z' WHERE user_id = %s", (user_id,)
        )
    ids = [t["id"] for t in tasks]
    assert _ids(await _list(client, user_id)) == ids
    assert _ids(await _list(client, user_id, order="desc")) == ids[::-1]


async def test_filters_combine_with_every_sort_and_order(
    client: httpx.AsyncClient, user_id: str
) -> None:
    tasks = await _seed(client, user_id, ["b", "A", "c", "D"])
    await client.patch(f"/api/{user_id}/tasks/{tasks[1]['id']}/complete", headers=auth(user_id))
    for status in ("all", "pending", "completed"):
        for sort in ("created", "title"):
            for order in ("asc", "desc"):
                response = await _list(client, user_id, status=status, sort=sort, order=order)
                got = response.json()
                expected = [
                    t
                    for t in tasks
                    if status == "all" or (t["id"] == tasks[1]["id"]) == (status == "completed")
                ]
                key = (
                    (lambda t: (str(t["title"]).casefold(), t["id"]))
                    if sort == "title"
                    else (lambda t: t["id"])
                )
                expected.sort(key=key, reverse=order == "desc")  # type: ignore[arg-type]
                assert [t["id"] for t in got] == [t["id"] for t in expected], (status, sort, order)


async def test_limit_and_offset_page_with_total_count(
    client: httpx.AsyncClient, user_id: str
) -> None:
    tasks = await _seed(client, user_id, [f"t{n}" for n in range(7)])
    ids = [t["id"] for t in tasks]
    page1 = await _list(client, user_id, limit=3)
    assert _ids(page1) == ids[:3] and page1.headers["x-total-count"] == "7"
    page3 = await _list(client, user_id, limit=3, offset=6)
    assert _ids(page3) == ids[6:] and page3.headers["x-total-count"] == "7"
    beyond = await _list(client, user_id, limit=3, offset=100)
    assert _ids(beyond) == [] and beyond.headers["x-total-count"] == "7"
    pending = await _list(client, user_id, limit=2, status="completed")
    assert _ids(pending) == [] and pending.headers["x-total-count"] == "0"
    desc = await _list(client, user_id, limit=2, order="desc", sort="created")
    assert _ids(desc) == ids[::-1][:2]
    offset_only = await _list(client, user_id, offset=5)
    assert _ids(offset_only) == ids[5:] and "x-total-count" not in offset_only.headers


@pytest.mark.parametrize(
    "params",
    [
        {"status": "invalid"},
        {"status": "PENDING"},
        {"status": ""},
        {"sort": "invalid"},
        {"sort": "updated"},
        {"order": "sideways"},
        {"limit": 0},
        {"limit": 1001},
        {"limit": -1},
        {"limit": "ten"},
        {"limit": 1.5},
        {"offset": -1},
        {"offset": "x"},
        {"offset": "9" * 30},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
async def test_invalid_query_values_are_422(
    client: httpx.AsyncClient, user_id: str, params: dict[str, object]
) -> None:
    response = await _list(client, user_id, **params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["status_code"] == 422 and body["errors"][0]["loc"][0] == "query"


async def test_limit_bounds_1_and_1000_are_accepted(
    client: httpx.AsyncClient, user_id: str
) -> None:
    assert (await _list(client, user_id, limit=1)).status_code == 200
    assert (await _list(client, user_id, limit=1000)).status_code == 200
