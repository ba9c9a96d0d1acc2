"""Contract, "Conditional requests and safe retries": ETag and If-None-Match (304), If-Match
(412), Idempotency-Key (replay, 409, 422), CORS and OpenAPI for them. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from repositories.queries import LIST_STATEMENTS
from tests.support import SECRET, auth, new_user_id, running_service

STRONG_TAG = re.compile(r'"[\x21\x23-\x7e]+"')


def _base(owner: str) -> str:
    return f"/api/{owner}/tasks"


async def _create(client: httpx.AsyncClient, owner: str, **fields: Any) -> httpx.Response:
    response = await client.post(
        _base(owner), json={"title": "task", **fields}, headers=auth(owner)
    )
    assert response.status_code == 201, response.text
    return response


async def _list(
    client: httpx.AsyncClient, owner: str, query: str = "", **headers: str
) -> httpx.Response:
    return await client.get(_base(owner) + query, headers={**auth(owner), **headers})


async def _list_tag(client: httpx.AsyncClient, owner: str, query: str = "") -> str:
    response = await _list(client, owner, query)
    assert response.status_code == 200
    return response.headers["etag"]


async def _task(
    client: httpx.AsyncClient, owner: str, task_id: object, **headers: str
) -> httpx.Response:
    return await client.get(f"{_base(owner)}/{task_id}", headers={**auth(owner), **headers})


# --- ETag and If-None-Match ------------------------------------------------------------------


async def test_every_200_task_and_list_and_every_write_carries_a_strong_etag(
    client: httpx.AsyncClient, user_id: str
) -> None:
    created = await _create(client, user_id)
    task_id = created.json()["id"]
    responses = [
        created,
        await _task(client, user_id, task_id),
        await _list(client, user_id),
        await _list(client, user_id, "?limit=5"),
        await client.put(
            f"{_base(user_id)}/{task_id}", json={"title": "t2"}, headers=auth(user_id)
        ),
        await client.patch(f"{_base(user_id)}/{task_id}/complete", headers=auth(user_id)),
        await client.patch(
            f"{_base(user_id)}/{task_id}/complete",
            json={"completed": False},
            headers=auth(user_id),
        ),
    ]
    for response in responses:
        assert response.status_code in (200, 201), response.text
        assert STRONG_TAG.fullmatch(response.headers["etag"]), response.headers["etag"]
    # Each write answers with the task's new tag, the one a GET then gives.
    assert responses[4].headers["etag"] != responses[1].headers["etag"]
    last = responses[-1].headers["etag"]
    assert (await _task(client, user_id, task_id)).headers["etag"] == last


async def test_if_none_match_with_the_current_tag_is_304_with_the_tag_and_no_body(
    client: httpx.AsyncClient, user_id: str
) -> None:
    task_id = (await _create(client, user_id)).json()["id"]
    for url in (f"{_base(user_id)}/{task_id}", _base(user_id), _base(user_id) + "?limit=1"):
        first = await client.get(url, headers=auth(user_id))
        tag = first.headers["etag"]
        for sent in (tag, f'"other", {tag}', f"W/{tag}"):  # a list; weak comparison (§13.1.2)
            again = await client.get(url, headers={**auth(user_id), "If-None-Match": sent})
            assert again.status_code == 304, (url, sent, again.text)
            assert again.headers["etag"] == tag
            assert again.content == b""
            assert "content-type" not in again.headers
        stale = await client.get(url, headers={**auth(user_id), "If-None-Match": '"0-x"'})
        assert stale.status_code == 200 and stale.content == first.content


async def test_list_tag_changes_with_every_change_to_the_users_tasks(
    client: httpx.AsyncClient, user_id: str
) -> None:
    empty = await _list_tag(client, user_id)
    a = (await _create(client, user_id, title="a")).json()["id"]
    tags = [empty, await _list_tag(client, user_id)]
    b = (await _create(client, user_id, title="b")).json()["id"]
    tags.append(await _list_tag(client, user_id))
    url = f"{_base(user_id)}/{a}"
    for method, path, body in (
        ("PATCH", f"{url}/complete", None),  # toggle
        ("PATCH", f"{url}/complete", {"completed": False}),  # set to another value
        ("PUT", url, {"title": "a2"}),
        ("PUT", url, {"description": "d"}),
        ("DELETE", f"{_base(user_id)}/{b}", None),
    ):
        response = await client.request(method, path, json=body, headers=auth(user_id))
        assert response.status_code in (200, 204), response.text
        tags.append(await _list_tag(client, user_id))
    assert len(set(tags)) == len(tags), tags
    # The previous tag is no longer current: a poll with it gets the new list.
    polled = await _list(client, user_id, **{"If-None-Match": tags[-2]})
    assert polled.status_code == 200 and [t["title"] for t in polled.json()] == ["a2"]


async def test_a_write_that_changes_nothing_keeps_every_tag(
    client: httpx.AsyncClient, user_id: str
) -> None:
    created = (await _create(client, user_id, title="same", description="d")).json()
    url = f"{_base(user_id)}/{created['id']}"
    task_tag = (await _task(client, user_id, created["id"])).headers["etag"]
    list_tag = await _list_tag(client, user_id)
    for method, path, body in (
        ("PUT", url, {"title": "same"}),
        ("PUT", url, {"title": "  same  ", "description": "d"}),  # the same after trimming
        ("PUT", url, {}),
        ("PATCH", f"{url}/complete", {"completed": False}),  # its current value
    ):
        response = await client.request(method, path, json=body, headers=auth(user_id))
        assert response.status_code == 200, response.text
        assert response.headers["etag"] == task_tag, (method, body)
        assert response.json()["updated_at"] == created["updated_at"]
    assert (await _task(client, user_id, created["id"])).headers["etag"] == task_tag
    assert await _list_tag(client, user_id) == list_tag
    polled = await _list(client, user_id, **{"If-None-Match": list_tag})
    assert polled.status_code == 304


async def test_another_users_writes_never_change_the_list_tag(
    client: httpx.AsyncClient, user_id: str
) -> None:
    await _create(client, user_id)
    mine = await _list_tag(client, user_id)
    other = new_user_id()
    theirs = (await _create(client, other)).json()["id"]
    await client.put(f"{_base(other)}/{theirs}", json={"title": "x"}, headers=auth(other))
    await client.patch(f"{_base(other)}/{theirs}/complete", headers=auth(other))
    await client.delete(f"{_base(other)}/{theirs}", headers=auth(other))
    assert (await _list(client, user_id, **{"If-None-Match": mine})).status_code == 304


async def test_list_tags_differ_between_representations(
    client: httpx.AsyncClient, user_id: str
) -> None:
    for title in ("b", "a", "c"):
        await _create(client, user_id, title=title)
    queries = [
        "",
        "?status=pending",
        "?status=completed",
        "?sort=title",
        "?order=desc",
        "?limit=2",
        "?limit=3",
        "?limit=2&offset=1",
        "?offset=1",
    ]
    tags = {q: await _list_tag(client, user_id, q) for q in queries}
    assert len(set(tags.values())) == len(queries), tags
    # A tag of one representation is not current for another, though the version is the same.
    response = await _list(client, user_id, "?sort=title", **{"If-None-Match": tags[""]})
    assert response.status_code == 200
    assert [t["title"] for t in response.json()] == ["a", "b", "c"]
    assert response.headers["etag"] == tags["?sort=title"]


async def test_a_task_tag_is_not_current_for_another_task(
    client: httpx.AsyncClient, user_id: str
) -> None:
    first = await _create(client, user_id)
    second = (await _create(client, user_id)).json()["id"]
    response = await _task(client, user_id, second, **{"If-None-Match": first.headers["etag"]})
    assert response.status_code == 200


async def test_unchanged_poll_reads_no_task(database_url: str, client: httpx.AsyncClient) -> None:
    """The 304 path costs a primary-key lookup of `users`: the scans of `tasks` are never
    executed when the client's version is current (EXPLAIN ANALYZE of every list variant)."""
    owner = new_user_id()
    for _ in range(3):
        await _create(client, owner)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT tasks_version FROM users WHERE id = %s", (owner,))
        row = await cur.fetchone()
        assert row is not None
        version = row[0]
        for variant, statement in LIST_STATEMENTS.items():
            for known, executed in (([version], False), ([version - 1], True)):
                params = {"user_id": owner, "known": known, "limit": 2, "offset": 0}
                cur = await conn.execute(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + statement,  # type: ignore[operator]
                    params,
                )
                plan = (await cur.fetchone())[0][0]["Plan"]  # type: ignore[index]
                loops = [n.get("Actual Loops", 0) for n in _task_scans(plan)]
                assert loops, (variant, plan)
                assert any(loops) is executed, (variant, known, loops)


def _task_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    stack = [plan]
    while stack:
        node = stack.pop()
        if node.get("Relation Name") == "tasks" or str(node.get("Index Name", "")).startswith(
            "ix_tasks"
        ):
            found.append(node)
        stack.extend(node.get("Plans", []))
    return found


# --- If-Match ------------------------------------------------------------------------------


WRITES = [
    ("PUT", "", {"title": "changed"}),
    ("PATCH", "/complete", None),
    ("PATCH", "/complete", {"completed": True}),
    ("DELETE", "", None),
]


@pytest.mark.parametrize(
    ("method", "suffix", "body"), WRITES, ids=["put", "toggle", "set", "delete"]
)
async def test_if_match_with_the_current_tag_applies_the_write(
    client: httpx.AsyncClient, user_id: str, method: str, suffix: str, body: object
) -> None:
    for listed in ("{tag}", '"0-0000000000000000", {tag}', 'W/"x", {tag}'):
        created = await _create(client, user_id)
        task_id = created.json()["id"]
        condition = listed.format(tag=created.headers["etag"])
        response = await client.request(
            method,
            f"{_base(user_id)}/{task_id}{suffix}",
            json=body,
            headers={**auth(user_id), "If-Match": condition},
        )
        assert response.status_code in (200, 204), (condition, response.text)
        after = await _task(client, user_id, task_id)
        if method == "DELETE":
            assert after.status_code == 404
        else:
            assert response.json() == after.json() != created.json()
            assert response.headers["etag"] == after.headers["etag"] != created.headers["etag"]


@pytest.mark.parametrize(
    ("method", "suffix", "body"), WRITES, ids=["put", "toggle", "set", "delete"]
)
async def test_stale_if_match_is_412_and_changes_nothing(
    client: httpx.AsyncClient, user_id: str, method: str, suffix: str, body: object
) -> None:
    created = await _create(client, user_id)
    task_id = created.json()["id"]
    url = f"{_base(user_id)}/{task_id}"
    stale = created.headers["etag"]
    await client.put(url, json={"title": "moved on"}, headers=auth(user_id))
    before = await _task(client, user_id, task_id)
    list_before = await _list_tag(client, user_id)
    other = (await _create(client, user_id)).headers["etag"]
    list_before = await _list_tag(client, user_id)
    for condition in (
        stale,
        f"W/{before.headers['etag']}",  # If-Match compares strongly (RFC 9110 §13.1.1)
        other,  # another task's current tag
        '"garbage"',
        "not a tag",
    ):
        response = await client.request(
            method, url + suffix, json=body, headers={**auth(user_id), "If-Match": condition}
        )
        assert response.status_code == 412, (condition, response.text)
        assert response.json()["status_code"] == 412
        after = await _task(client, user_id, task_id)
        assert after.status_code == 200 and after.content == before.content
        assert after.headers["etag"] == before.headers["etag"]
        assert await _list_tag(client, user_id) == list_before


@pytest.mark.parametrize(
    ("method", "suffix", "body"), WRITES, ids=["put", "toggle", "set", "delete"]
)
async def test_if_match_star_applies_to_an_existing_task_and_a_missing_one_stays_404(
    client: httpx.AsyncClient, user_id: str, method: str, suffix: str, body: object
) -> None:
    created = await _create(client, user_id)
    url = f"{_base(user_id)}/{created.json()['id']}"
    response = await client.request(
        method, url + suffix, json=body, headers={**auth(user_id), "If-Match": "*"}
    )
    assert response.status_code in (200, 204), response.text
    for condition in ("*", created.headers["etag"]):
        missing = await client.request(
            method,
            f"{_base(user_id)}/999999999{suffix}",
            json=body,
            headers={**auth(user_id), "If-Match": condition},
        )
        assert missing.status_code == 404, missing.text
    # Another user's task is missing too, whatever the tag says.
    other = new_user_id()
    theirs = await _create(client, other)
    response = await client.request(
        method,
        f"{_base(user_id)}/{theirs.json()['id']}{suffix}",
        json=body,
        headers={**auth(user_id), "If-Match": theirs.headers["etag"]},
    )
    assert response.status_code == 404


async def test_twenty_concurrent_puts_with_one_tag_exactly_one_wins(
    client: httpx.AsyncClient, database_url: str, user_id: str
) -> None:
    """The writers are made to overlap for certain: the task's row is held until every
    statement the pool can run (10) waits on it, so all of them start from the same version."""
    created = await _create(client, user_id)
    task_id = created.json()["id"]
    url = f"{_base(user_id)}/{task_id}"
    tag = created.headers["etag"]
    async with await psycopg.AsyncConnection.connect(database_url) as holder:
        await holder.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
        writers = [
            asyncio.create_task(
                client.put(
                    url, json={"title": f"writer {n}"}, headers={**auth(user_id), "If-Match": tag}
                )
            )
            for n in range(20)
        ]
        for _ in range(200):
            if await _waiting_on_lock(database_url, "UPDATE tasks", at_least=10):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the writers never queued on the task's row")
        await holder.rollback()
    responses = await asyncio.gather(*writers)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 19, statuses
    winner = next(r for r in responses if r.status_code == 200)
    final = await _task(client, user_id, task_id)
    assert final.json()["title"] == winner.json()["title"]
    assert final.headers["etag"] == winner.headers["etag"]


async def test_twenty_concurrent_toggles_with_one_tag_exactly_one_wins(
    client: httpx.AsyncClient, user_id: str
) -> None:
    created = await _create(client, user_id)
    url = f"{_base(user_id)}/{created.json()['id']}/complete"
    tag = created.headers["etag"]
    responses = await asyncio.gather(
        *(client.patch(url, headers={**auth(user_id), "If-Match": tag}) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] + [412] * 19
    assert (await _task(client, user_id, created.json()["id"])).json()["completed"] is True


async def test_without_if_match_the_last_write_wins(
    client: httpx.AsyncClient, user_id: str
) -> None:
    created = await _create(client, user_id)
    url = f"{_base(user_id)}/{created.json()['id']}"
    for title in ("one", "two"):
        assert (
            await client.put(url, json={"title": title}, headers=auth(user_id))
        ).status_code == 200
    assert (await _task(client, user_id, created.json()["id"])).json()["title"] == "two"


# --- Idempotency-Key -----------------------------------------------------------------------


async def _keyed(
    client: httpx.AsyncClient, owner: str, key: str, body: Any = None, **extra: str
) -> httpx.Response:
    return await client.post(
        _base(owner),
        json={"title": "keyed"} if body is None else body,
        headers={**auth(owner), "Idempotency-Key": key, **extra},
    )


async def _titles(client: httpx.AsyncClient, owner: str) -> list[str]:
    return [t["title"] for t in (await _list(client, owner)).json()]


async def test_same_key_and_body_replays_the_first_response_and_creates_nothing(
    client: httpx.AsyncClient, user_id: str
) -> None:
    first = await _keyed(client, user_id, "order-1", {"title": "  Buy milk ", "description": "2"})
    assert first.status_code == 201, first.text
    # The task changes afterwards; the replay is still the response that was given.
    task_url = f"{_base(user_id)}/{first.json()['id']}"
    await client.put(task_url, json={"title": "Buy oat milk"}, headers=auth(user_id))
    list_tag = await _list_tag(client, user_id)
    for body in (
        {"title": "  Buy milk ", "description": "2"},
        {"description": "2", "title": "Buy milk", "color": "ignored"},  # the same request
    ):
        again = await _keyed(client, user_id, "order-1", body)
        assert again.status_code == 201
        assert again.content == first.content
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["etag"] == first.headers["etag"]
    assert await _titles(client, user_id) == ["Buy oat milk"]
    assert await _list_tag(client, user_id) == list_tag  # a replay writes no task


async def test_same_key_with_another_body_is_422(client: httpx.AsyncClient, user_id: str) -> None:
    assert (await _keyed(client, user_id, "k-422", {"title": "a"})).status_code == 201
    for body in ({"title": "b"}, {"title": "a", "description": "x"}):
        response = await _keyed(client, user_id, "k-422", body)
        assert response.status_code == 422, response.text
        payload = response.json()
        assert payload["status_code"] == 422 and "Idempotency-Key" in payload["detail"]
        assert payload["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await _titles(client, user_id) == ["a"]


async def test_keys_belong_to_one_user(client: httpx.AsyncClient, user_id: str) -> None:
    other = new_user_id()
    mine = await _keyed(client, user_id, "shared", {"title": "mine"})
    theirs = await _keyed(client, other, "shared", {"title": "theirs"})
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert await _titles(client, other) == ["theirs"]


async def test_without_the_header_every_post_creates_a_task(
    client: httpx.AsyncClient, user_id: str
) -> None:
    for _ in range(2):
        await _create(client, user_id, title="same")
    assert await _titles(client, user_id) == ["same", "same"]


@pytest.mark.parametrize(
    "key",
    ["", " ", "a b", "x" * 256, "é", "tab\there", '"a b"'],
    ids=["empty", "space", "inner-space", "256", "non-ascii", "tab", "quoted-space"],
)
async def test_a_malformed_key_is_400_and_creates_nothing(
    client: httpx.AsyncClient, user_id: str, key: str
) -> None:
    response = await client.post(
        _base(user_id),
        json={"title": "no"},
        headers=[
            ("Authorization", auth(user_id)["Authorization"]),
            ("Idempotency-Key", key.encode("utf-8")),  # type: ignore[list-item]
        ],
    )
    assert response.status_code == 400, response.text
    assert "Idempotency-Key" in response.json()["detail"]
    assert await _titles(client, user_id) == []


async def test_two_key_fields_are_400(client: httpx.AsyncClient, user_id: str) -> None:
    response = await client.post(
        _base(user_id),
        json={"title": "no"},
        headers=[
            ("Authorization", auth(user_id)["Authorization"]),
            ("Idempotency-Key", "a"),
            ("Idempotency-Key", "b"),
        ],
    )
    assert response.status_code == 400


async def test_key_bounds_and_the_drafts_quoted_form(
    client: httpx.AsyncClient, user_id: str
) -> None:
    for key in ("x", "~" * 255, "!#$%&'()*+,-./:;<=>?@[]^_`{|}"):
        assert (await _keyed(client, user_id, key, {"title": key[:200]})).status_code == 201
    # The draft writes the key as an RFC 8941 string; it names the same key as the bare form.
    bare = await _keyed(client, user_id, "8e03978e-40d5", {"title": "q"})
    quoted = await _keyed(client, user_id, '"8e03978e-40d5"', {"title": "q"})
    assert quoted.status_code == 201 and quoted.content == bare.content


@contextlib.asynccontextmanager
async def _users_row_locked(database_url: str, owner: str) -> AsyncIterator[None]:
    """Hold the user's row, so that a create for that user blocks inside its statement."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (owner,))
        try:
            yield
        finally:
            await conn.rollback()


async def _waiting_on_lock(database_url: str, statement_part: str, *, at_least: int = 1) -> bool:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND position(%s in query) > 0",
            (statement_part,),
        )
        row = await cur.fetchone()
    return bool(row and row[0] >= at_least)


async def test_a_repeat_while_the_first_runs_is_409_then_the_first_is_replayed(
    client: httpx.AsyncClient, database_url: str, user_id: str
) -> None:
    await _create(client, user_id, title="exists")  # the users row to hold
    async with _users_row_locked(database_url, user_id):
        first = asyncio.create_task(_keyed(client, user_id, "slow", {"title": "slow"}))
        for _ in range(200):
            if await _waiting_on_lock(database_url, "pg_try_advisory_xact_lock"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the first request never reached its lock wait")
        # At once: a repeat never waits for the first (without the lock it would, forever).
        repeat = await asyncio.wait_for(_keyed(client, user_id, "slow", {"title": "slow"}), 5)
        assert repeat.status_code == 409, repeat.text
        assert repeat.json()["status_code"] == 409 and repeat.headers["retry-after"]
        assert not first.done()
    created = await asyncio.wait_for(first, 10)
    assert created.status_code == 201
    replay = await _keyed(client, user_id, "slow", {"title": "slow"})
    assert replay.status_code == 201 and replay.content == created.content
    assert await _titles(client, user_id) == ["exists", "slow"]


async def test_twenty_concurrent_identical_keyed_posts_create_one_task(
    client: httpx.AsyncClient, user_id: str
) -> None:
    responses = await asyncio.gather(
        *(_keyed(client, user_id, "burst", {"title": "once"}) for _ in range(20))
    )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}, statuses
    bodies = {r.content for r in responses if r.status_code == 201}
    assert len(bodies) == 1, bodies
    assert await _titles(client, user_id) == ["once"]
    settled = await _keyed(client, user_id, "burst", {"title": "once"})
    assert settled.status_code == 201 and settled.content in bodies


async def test_a_key_is_kept_24_hours_then_expired_keys_are_pruned(
    client: httpx.AsyncClient, database_url: str, user_id: str
) -> None:
    first = await _keyed(client, user_id, "day-old", {"title": "yesterday"})
    other = new_user_id()
    await _keyed(client, other, "abandoned", {"title": "x"})
    await _keyed(client, other, "recent", {"title": "y"})
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '23 hours 59 minutes'"
            " WHERE user_id = %s AND key = 'day-old'",
            (user_id,),
        )
        still = await _keyed(client, user_id, "day-old", {"title": "yesterday"})
        assert still.content == first.content  # within 24 hours: replayed
        await conn.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second'"
            " WHERE (user_id, key) IN ((%s, 'day-old'), (%s, 'abandoned'))",
            (user_id, other),
        )
        # After 24 hours the key is free again: a new task, and the new body is no conflict.
        again = await _keyed(client, user_id, "day-old", {"title": "today"})
        assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
        assert await _titles(client, user_id) == ["yesterday", "today"]
        # That insert pruned the other user's expired key, and only that one.
        cur = await conn.execute(
            "SELECT key FROM idempotency_keys WHERE user_id = %s ORDER BY key", (other,)
        )
        assert [r[0] for r in await cur.fetchall()] == ["recent"]


async def test_a_failed_request_stores_no_key(client: httpx.AsyncClient, user_id: str) -> None:
    invalid = await _keyed(client, user_id, "retry-me", {"title": ""})
    assert invalid.status_code == 422
    valid = await _keyed(client, user_id, "retry-me", {"title": "fixed"})
    assert valid.status_code == 201


# --- CORS and OpenAPI ----------------------------------------------------------------------


async def test_cors_allows_the_three_headers_and_exposes_etag(
    client: httpx.AsyncClient, user_id: str
) -> None:
    origin = "http://localhost:3000"
    for method, wanted in (
        ("GET", "if-none-match"),
        ("PUT", "if-match"),
        ("POST", "idempotency-key"),
    ):
        preflight = await client.options(
            _base(user_id),
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": f"authorization,{wanted}",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert wanted in preflight.headers["access-control-allow-headers"].lower()
    response = await _list(client, user_id, Origin=origin)
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "etag" in {h.strip() for h in exposed.split(",")}


async def test_openapi_documents_the_headers_and_the_conditional_answers(app: FastAPI) -> None:
    spec = app.openapi()
    paths = spec["paths"]
    base, one = "/api/{user_id}/tasks", "/api/{user_id}/tasks/{task_id}"
    expected = {
        (base, "get"): ("If-None-Match", {"200", "304"}),
        (one, "get"): ("If-None-Match", {"200", "304"}),
        (base, "post"): ("Idempotency-Key", {"201", "400", "409", "422"}),
        (one, "put"): ("If-Match", {"200", "412"}),
        (f"{one}/complete", "patch"): ("If-Match", {"200", "412"}),
        (one, "delete"): ("If-Match", {"412"}),
    }
    for (path, method), (header, codes) in expected.items():
        operation = paths[path][method]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert header in headers, (path, method, headers)
        assert codes <= set(operation["responses"]), (path, method)
        for code in codes & {"200", "201", "304"}:
            assert "ETag" in operation["responses"][code]["headers"], (path, method, code)
    assert json.dumps(spec)  # serialisable as served


def test_a_replay_survives_a_restart_of_the_service(database_url: str) -> None:
    """Keys live in PostgreSQL: `tasks-api serve` is stopped and started again in between."""
    owner = new_user_id()
    env = {"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET, "DB_POOL_MIN": "1"}
    headers = {**auth(owner), "Idempotency-Key": "across-restarts"}
    body = {"title": "survives"}
    with running_service(env) as (base, _proc):
        first = httpx.post(f"{base}{_base(owner)}", json=body, headers=headers, timeout=10)
    assert first.status_code == 201
    with running_service(env) as (base, _proc):
        again = httpx.post(f"{base}{_base(owner)}", json=body, headers=headers, timeout=10)
        listed = httpx.get(f"{base}{_base(owner)}", headers=auth(owner), timeout=10).json()
    assert again.status_code == 201 and again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert [t["title"] for t in listed] == ["survives"]
